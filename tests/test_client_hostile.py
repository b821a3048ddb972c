"""The client against raw servers that misbehave on purpose (tests/hostile.py): no hang, finite
scores only, nothing of the key in what comes back."""

import asyncio
import time

import pytest

from scoring_lib.client import ScoringClient, parse_score
from scoring_lib.failures import FailedAttempt
from scoring_lib.config import ClientConfig

from hostile import HostileServer, echo, reply, score, slow_body, slow_chunked, slow_headers, hang, reset


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
