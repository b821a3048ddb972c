"""The client against raw servers that misbehave on purpose (tests/hostile.py): no hang, finite
scores only, nothing of the key in what comes back."""

import asyncio
import threading
import time

import psutil
import pytest

from scoring_lib.client import ScoringClient, parse_score
from scoring_lib.failures import FailedAttempt, FailureKind
from scoring_lib.config import ClientConfig

from hostile import (HostileServer, echo, encoded, good, gzip_bomb, hang, redirect, reply, reset, score, slow_body,
                     slow_chunked, slow_headers)


def config(url, **kw):
    return ClientConfig(url=url, **({"backoff_base": 0.0, "backoff_cap": 0.1, "timeout": 1.0, "max_retries": 1} | kw))


async def score_once(url, text="hello", **kw):
    async with ScoringClient(config(url, **kw), concurrency=4) as client:
        return await client.score(text)


@pytest.mark.parametrize("action", [slow_body(0.2), slow_chunked(0.2), slow_headers(0.2), hang()],
                         ids=["slow-body", "slow-chunked", "slow-headers", "silent"])
async def test_timeout_bounds_the_whole_request_not_each_read(action):
    # Each byte comes well within the timeout, so a per-read timeout never fires; the whole
    # request must still end at the deadline, for every try.
    with HostileServer(lambda req: action) as srv:
        t0 = time.monotonic()
        out = await score_once(srv.url, timeout=1.0, max_retries=1)
        took = time.monotonic() - t0
    assert not out.ok and out.attempts == 2
    assert "timeout after 1s" in out.error
    # Two tries of a 1 s deadline; without the deadline each would take minutes (generous margin for a busy machine).
    assert took < 10, f"two tries of a 1 s deadline took {took:.1f} s"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400])
async def test_non_finite_scores_are_malformed_then_an_error(value):
    with HostileServer(lambda req: score(value)) as srv:
        out = await score_once(srv.url)
        assert len(srv.requests) == 2, "a malformed reply is retried"
    assert not out.ok and out.score is None and ("finite" in out.error or "not JSON" in out.error)


async def test_a_non_finite_reply_followed_by_a_good_one_succeeds():
    with HostileServer(lambda req: score("NaN") if req.index == 0 else score(0.25)) as srv:
        out = await score_once(srv.url)
    assert out.ok and out.score == 0.25 and out.attempts == 2


def test_parse_score_accepts_finite_numbers_only():
    assert parse_score(b'{"score": 1e308}', "score") == 1e308
    assert parse_score(b'{"score": -3}', "score") == -3.0
    for body in (b'{"score": NaN}', b'{"score": Infinity}', b'{"score": 1e999}', b'[' * 100000 + b']' * 100000):
        with pytest.raises(FailedAttempt):
            parse_score(body, "score")


async def test_the_key_echoed_by_the_service_is_masked(monkeypatch):
    monkeypatch.setenv("SCORING_API_KEY", "sk-live-SECRET42")
    with HostileServer(lambda req: echo(401)) as srv:
        out = await score_once(srv.url)
        assert srv.requests[0].headers["authorization"] == "Bearer sk-live-SECRET42"
    assert not out.ok and out.attempts == 1 and "HTTP 401" in out.error
    assert "SECRET42" not in out.error and "***" in out.error


async def test_bearer_and_authorization_text_is_masked_even_without_a_key(monkeypatch):
    monkeypatch.delenv("SCORING_API_KEY", raising=False)
    body = 'denied: Authorization: Basic dXNlcjpwdw== and Bearer tok.en-123 were wrong'
    with HostileServer(lambda req: reply(403, body)) as srv:
        out = await score_once(srv.url)
    assert "dXNlcjpwdw" not in out.error and "tok.en-123" not in out.error
    assert "HTTP 403" in out.error


async def test_reset_connections_are_retried_then_an_error():
    with HostileServer(lambda req: reset()) as srv:
        out = await score_once(srv.url)
        assert len(srv.requests) == 2
    assert not out.ok and out.attempts == 2


async def test_pool_wait_does_not_count_toward_the_deadline():
    # One connection, three requests each taking 0.6 s: the third waits 1.2 s for the connection,
    # longer than the 1 s deadline, and must still succeed.
    async def slowish(c):
        await asyncio.sleep(0.6)
        await score(0.5)(c)
    with HostileServer(lambda req: slowish) as srv:
        async with ScoringClient(config(srv.url, connector_limit=1, max_retries=0), concurrency=3) as client:
            outs = await asyncio.gather(*(client.score(str(i)) for i in range(3)))
    assert all(o.ok for o in outs), [o.error for o in outs]


async def test_a_key_straddling_the_200_character_cut_is_masked_not_cut(monkeypatch):
    key = "sk-live-0123456789abcdef"
    monkeypatch.setenv("SCORING_API_KEY", key)
    body = "x" * 190 + " " + key + " trailing"
    with HostileServer(lambda req: reply(400, body)) as srv:
        out = await score_once(srv.url)
    assert "sk-live" not in out.error and "***" in out.error


# -- issue 17, class 4: bytes are capped after decoding ------------------------------------------------
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_a_compressed_reply_is_decoded(encoding):
    with HostileServer(lambda req: encoded(b'{"score": 0.75}', encoding)) as srv:
        out = await score_once(srv.url)
        assert srv.requests[0].headers["accept-encoding"] == "gzip, deflate"
    assert out.ok and out.score == 0.75


def peak_rss_while(coro_fn) -> tuple[object, int]:
    """Run `coro_fn()` while a thread samples this process's RSS; (its result, peak growth in bytes)."""
    me = psutil.Process()
    base = me.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            done.wait(0.002)
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        result = asyncio.run(coro_fn())
    finally:
        done.set()
        watcher.join()
    return result, peak[0] - base


def test_a_gzip_bomb_is_cut_at_the_cap_with_bounded_memory():
    bomb = gzip_bomb(400)  # about 400 KB on the wire, 400 MiB inflated; the cap is 1 MiB
    with HostileServer(lambda req: bomb) as srv:
        out, grew = peak_rss_while(lambda: score_once(srv.url, max_retries=1))
    assert not out.ok and out.failure.kind is FailureKind.UNPARSEABLE and out.attempts == 2
    assert "exceeds" in out.error and "after decoding" in out.error
    assert grew < 100 * 2**20, f"RSS grew by {grew / 2**20:.0f} MiB"


@pytest.mark.parametrize("action", [lambda: reply(200, b"\x1f\x8b\x08garbage", {"Content-Encoding": "gzip"}),
                                    lambda: reply(200, b'{"score": 1}', {"Content-Encoding": "br"})],
                         ids=["broken-gzip", "unasked-brotli"])
async def test_a_body_that_cannot_be_decoded_is_malformed(action):
    with HostileServer(lambda req: action()) as srv:
        out = await score_once(srv.url)
    assert not out.ok and out.failure.kind is FailureKind.UNPARSEABLE and out.attempts == 2


# -- issue 17, class 8: redirects are never followed ----------------------------------------------------
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_an_error_naming_the_location_and_never_followed(status):
    with HostileServer(lambda req: good()) as other:
        with HostileServer(lambda req: redirect(status, other.url)) as srv:
            out = await score_once(srv.url, max_retries=3)
            assert len(srv.requests) == 1
        assert other.requests == []  # nothing reached the other host, not even a body-less GET
    assert not out.ok and out.attempts == 1 and out.failure.kind is FailureKind.REDIRECT
    assert out.failure.location == other.url and other.url in out.error and f"HTTP {status}" in out.error


# -- the body read whole only when its size is known and within the cap (replies.readable_whole) ---------
class _Reply:
    def __init__(self, headers: dict, length: int | None) -> None:
        self.headers, self.content_length = headers, length


@pytest.mark.parametrize("headers, length, whole", [
    ({}, 20, True), ({"Content-Encoding": " Identity "}, 20, True), ({"Content-Encoding": ""}, 20, True),
    ({}, None, False),  # chunked or read to the close: its size is not known
    ({"Content-Encoding": "gzip"}, 20, False), ({"Content-Encoding": "br"}, 20, False),  # read_body decides
    ({}, 64, True)], ids=["plain", "identity", "empty-encoding", "no-length", "gzip", "unsupported", "at-cap"])
def test_which_bodies_are_read_whole(headers, length, whole):
    from scoring_lib.replies import readable_whole
    assert readable_whole(_Reply(headers, length), 64) is whole


def test_a_length_over_the_cap_is_malformed_before_anything_is_read():
    from scoring_lib.replies import readable_whole
    with pytest.raises(FailedAttempt) as err:
        readable_whole(_Reply({}, 65), 64)
    assert err.value.failure.kind is FailureKind.UNPARSEABLE and "body of 65 bytes exceeds 64" in err.value.failure.message


async def test_a_plain_reply_over_the_cap_is_malformed_and_one_within_it_scores():
    big = b'{"score": 0.25, "pad": "' + b"x" * 2000 + b'"}'
    with HostileServer(lambda req: reply(200, big)) as srv:
        over = await score_once(srv.url, max_body_bytes=1000, max_retries=0)
        within = await score_once(srv.url, max_body_bytes=len(big), max_retries=0)
    assert not over.ok and over.failure.kind is FailureKind.UNPARSEABLE and f"body of {len(big)} bytes" in over.error
    assert within.ok and within.score == 0.25
