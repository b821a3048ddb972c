"""Retry classification and protocol rules, against real loopback servers (no mocks of aiohttp)."""

import asyncio
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web

from scoring_lib.client import ScoringClient, parse_retry_after
from scoring_lib.config import ClientConfig
from scoring_lib.failures import FailureKind


class Script:
    """A server answering from a list of responses, one per request, then 200s; it logs arrivals."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.arrivals: list[float] = []
        self.headers: list[dict] = []
        self.bodies: list = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        self.headers.append(dict(request.headers))
        self.bodies.append(await request.json())
        step = self.responses.pop(0) if self.responses else (200, {"score": 0.5})
        if callable(step):
            return await step(request)
        status, body, *headers = step
        if isinstance(body, (dict, list)):
            return web.json_response(body, status=status, headers=headers[0] if headers else None)
        return web.Response(status=status, text=body, headers=headers[0] if headers else None)


@pytest.fixture
def scripted(aiohttp_server):
    async def start(responses):
        script = Script(responses)
        app = web.Application()
        app.router.add_post("/score", script.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        return script, str(server.make_url("/score"))
    return start


def config(url, **kw):
    return ClientConfig(url=url, **({"backoff_base": 0.0, "backoff_cap": 1.0, "timeout": 2.0} | kw))


async def score_once(url, text="hello", **kw):
    async with ScoringClient(config(url, **kw), concurrency=4) as client:
        return await client.score(text)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(scripted, status):
    script, url = await scripted([(status, "busy")])
    out = await score_once(url)
    assert out.ok and out.score == 0.5 and out.attempts == 2
    assert len(script.arrivals) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_other_client_errors_end_the_line_at_once(scripted, status):
    script, url = await scripted([(status, "no")])
    out = await score_once(url)
    assert not out.ok and out.attempts == 1 and f"HTTP {status}" in out.error
    assert len(script.arrivals) == 1


@pytest.mark.parametrize("body", ["not json", {"other": 1}, {"score": "0.5"}, {"score": True}, [0.5]])
async def test_malformed_200_is_retried(scripted, body):
    script, url = await scripted([(200, body)])
    out = await score_once(url)
    assert out.ok and out.attempts == 2


async def test_oversized_body_is_treated_as_malformed(scripted):
    script, url = await scripted([(200, {"score": 0.1, "pad": "x" * 5000})])
    out = await score_once(url, max_body_bytes=1000)
    assert out.ok and out.attempts == 2


async def test_connection_reset_is_retried(scripted):
    async def reset(request):
        request.transport.close()
        return web.Response()
    script, url = await scripted([reset])
    out = await score_once(url)
    assert out.ok and out.attempts == 2


async def test_timeout_is_retried(scripted):
    async def slow(request):
        await asyncio.sleep(1.0)
        return web.json_response({"score": 0.9})
    script, url = await scripted([slow])
    out = await score_once(url, timeout=0.2)
    assert out.ok and out.score == 0.5 and out.attempts == 2


async def test_gives_up_after_max_retries(scripted):
    script, url = await scripted([(503, "down")] * 10)
    out = await score_once(url, max_retries=2)
    assert not out.ok and out.attempts == 3 and "gave up after 3 attempts" in out.error
    assert len(script.arrivals) == 3


async def test_service_down_is_an_error_after_retries():
    out = await score_once("http://127.0.0.1:9/score", max_retries=1)
    assert not out.ok and out.attempts == 2


async def test_retry_after_seconds_is_honoured(scripted):
    script, url = await scripted([(429, "slow down", {"Retry-After": "0.4"})])
    out = await score_once(url)
    assert out.ok
    assert script.arrivals[1] - script.arrivals[0] >= 0.38


async def test_retry_after_http_date_is_honoured(scripted):
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    script, url = await scripted([(503, "later", {"Retry-After": when})])
    out = await score_once(url, backoff_cap=5.0)
    assert out.ok
    assert script.arrivals[1] - script.arrivals[0] >= 0.9  # HTTP dates have one-second resolution


async def test_retry_after_is_capped_by_backoff_cap(scripted):
    script, url = await scripted([(429, "x", {"Retry-After": "60"})])
    out = await score_once(url, backoff_cap=0.1)
    assert out.ok
    assert script.arrivals[1] - script.arrivals[0] < 2


def test_parse_retry_after_forms():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-1") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=datetime(2015, 10, 21, 7, 27, 50,
                                                                          tzinfo=timezone.utc).timestamp()) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_is_full_jitter_and_capped():
    client = ScoringClient(ClientConfig(url="http://127.0.0.1:1/", backoff_base=1.0, backoff_cap=3.0), 1)
    delays = [client.backoff(5, None) for _ in range(500)]
    assert 0 <= min(delays) < 0.5 and 2.5 < max(delays) <= 3.0
    assert client.backoff(0, 10.0) == 3.0


async def test_request_body_and_bearer_key(scripted, monkeypatch):
    monkeypatch.setenv("SCORING_API_KEY", "k-123")
    script, url = await scripted([])
    out = await score_once(url, "some text", request_field="q")
    assert out.ok
    assert script.bodies == [{"q": "some text"}]
    assert script.headers[0]["Authorization"] == "Bearer k-123"
    assert script.headers[0]["Content-Type"].startswith("application/json")


async def test_no_authorization_header_without_key(scripted, monkeypatch):
    monkeypatch.delenv("SCORING_API_KEY", raising=False)
    script, url = await scripted([])
    await score_once(url)
    assert "Authorization" not in script.headers[0]


async def test_score_field_name_is_configurable(scripted):
    script, url = await scripted([(200, {"value": 0.75})])
    out = await score_once(url, score_field="value")
    assert out.ok and out.score == 0.75


@pytest.mark.parametrize("limit, expected_peak", [(2, 2), (None, 6), (0, 6)])
async def test_connector_limit_caps_requests_in_flight(aiohttp_server, limit, expected_peak):
    state = {"now": 0, "peak": 0}

    async def handle(request):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.1)
        state["now"] -= 1
        return web.json_response({"score": 1})

    app = web.Application()
    app.router.add_post("/score", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with ScoringClient(config(str(server.make_url("/score")), connector_limit=limit), concurrency=6) as c:
        outs = await asyncio.gather(*(c.score(str(i)) for i in range(6)))
    assert all(o.ok for o in outs)
    assert state["peak"] == expected_peak


class RecordingGate:
    """A limiter gate that lets everything through and keeps what the client tells it of each attempt."""

    def __init__(self) -> None:
        self.attempts: list = []

    async def acquire(self):
        return None

    def release(self, ticket, attempt) -> None:
        self.attempts.append(attempt)

    def backing_off(self, lines: int) -> None:
        pass


async def test_every_attempt_reaches_the_limiter_as_a_typed_failure(scripted):
    script, url = await scripted([(503, "busy", {"Retry-After": "0"}), (503, "busy"), (429, "slow"), (500, "oops"),
                                  (200, "<html>not json</html>"), (200, {"result": 1})])
    gate = RecordingGate()
    async with ScoringClient(config(url, max_retries=6), concurrency=1, limiter=gate) as client:
        out = await client.score("hello")
    kinds = [(a.failure.kind, a.failure.status) if a.failure else "ok" for a in gate.attempts]
    assert kinds == [(FailureKind.THROTTLED, 503), (FailureKind.OVERLOADED, 503), (FailureKind.THROTTLED, 429),
                     (FailureKind.HTTP, 500), (FailureKind.UNPARSEABLE, None), (FailureKind.WRONG_SHAPE, None), "ok"]
    assert gate.attempts[0].failure.retry_after == 0.0 and [a.label for a in gate.attempts][:2] == ["HTTP 503"] * 2
    assert out.ok and out.attempts == 7


async def test_a_line_that_fails_keeps_its_last_failure_typed(scripted):
    script, url = await scripted([(404, "no such route")])
    out = await score_once(url)
    assert not out.ok and out.failure.kind is FailureKind.HTTP and out.failure.status == 404
    assert out.failure.fatal_if_unanimous and out.cause == "HTTP 404" and out.error == "HTTP 404: no such route"


async def test_warm_opens_connections_the_first_requests_then_take_and_sends_nothing(scripted):
    script, url = await scripted([])
    opened = []
    async with ScoringClient(config(url), concurrency=6) as client:
        client._session.connector.on_connect = opened.append
        assert await client.warm(6) == 6
        assert len(opened) == 6 and script.arrivals == []  # connections only: no request went out
        outcomes = await asyncio.gather(*(client.score(f"t{i}") for i in range(6)))
    assert all(o.ok for o in outcomes) and len(script.arrivals) == 6
    assert len(opened) == 6  # the six requests went out on the warmed connections


async def test_warm_against_nothing_listening_opens_none_and_raises_nothing(unused_tcp_port):
    async with ScoringClient(config(f"http://127.0.0.1:{unused_tcp_port}/score", connector_limit=3),
                             concurrency=8) as client:
        assert await client.warm(8) == 0
