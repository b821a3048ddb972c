"""The simulated scoring service's HTTP application: slow, deterministic, capacity-limited, and as
faulty or as strict as its ServerConfig says (the zoo in behaviours.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import socket
import struct
from dataclasses import asdict, dataclass

from aiohttp import web

from ..config import ServerConfig
from .behaviours import Flaky, QuotaWindow, Slots, TokenBucket, Warmup, retry_after

BATCH_KEYS = ("data", "items", "lines")
MAX_REQUEST_BYTES = 8 << 20
SLOW_BODY_BYTES = 64  # a slow body: this many bytes, one a second


def deterministic_score(text: str) -> float:
    """A stable score in [0, 1) from the text alone (sha256, never Python's salted hash)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return round(int.from_bytes(digest[:8], "big") / 2**64, 9)


@dataclass
class ServiceStats:
    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    serving: int = 0
    peak_serving: int = 0
    ok: int = 0
    rate_limited: int = 0
    injected_errors: int = 0
    resets: int = 0
    slow_bodies: int = 0
    rejected: int = 0
    shed: int = 0
    quota_limited: int = 0
    flaky_failures: int = 0


class ScoringService:
    """The aiohttp application and its counters; one instance per running service."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServiceStats()
        self._rng = random.Random(config.seed)
        self._slots: Slots | None = None
        self._new_behaviours()

    def _new_behaviours(self) -> None:
        cfg, ts = self.config, self.config.time_scale
        self._bucket = (TokenBucket(cfg.rate_limit / ts, cfg.rate_burst or cfg.rate_limit)
                        if cfg.rate_limit > 0 else None)
        self._quota = QuotaWindow(cfg.quota, cfg.quota_window * ts) if cfg.quota > 0 else None
        self._warmup = Warmup(cfg.warmup * ts) if cfg.warmup > 0 else None
        self._flaky = Flaky(cfg.flaky) if cfg.flaky > 0 else None

    def reset_stats(self) -> None:
        """Counters start over, and so do the behaviours (quota window, warm-up, halving, flaky lines):
        what a new run against a freshly started service would see. Requests in flight keep their slots."""
        in_flight, serving = self.stats.in_flight, self.stats.serving
        self.stats = ServiceStats(in_flight=in_flight, peak_in_flight=in_flight, serving=serving, peak_serving=serving)
        self._new_behaviours()
        if self._slots is not None and self.config.capacity > 0:
            self._slots.capacity, self._slots.admitted = self.config.capacity, 0

    def sample_latency(self) -> float:
        """Real seconds one request takes to serve (mean = latency * time_scale)."""
        mean = self.config.latency * self.config.time_scale
        if self._warmup is not None:
            mean *= self._warmup.factor()
        if mean <= 0:
            return 0.0
        dist = self.config.latency_dist
        if dist == "exp":
            return self._rng.expovariate(1 / mean)
        if dist == "lognormal":
            sigma = 0.5
            return self._rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)
        return mean

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/score", self.handle_score)
        app.router.add_post("/", self.handle_score)
        app.router.add_get("/stats", self.handle_stats)
        app.router.add_post("/stats/reset", self.handle_reset)
        app.on_startup.append(self._on_startup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        cfg = self.config
        if cfg.capacity > 0:
            queue = 0 if cfg.shed else (cfg.queue_limit or None)
            self._slots = Slots(cfg.capacity, queue, cfg.halve_after)

    async def handle_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))

    async def handle_reset(self, _request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(asdict(self.stats))

    def _reject(self, status: int, message: str, headers: dict | None = None) -> web.Response:
        self.stats.rejected += status not in (429, 503)
        return web.json_response({"error": message}, status=status, headers=headers)

    async def handle_score(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            text = await self._text(request)
            if isinstance(text, web.Response):
                return text
            return await self._score(request, text)
        finally:
            stats.in_flight -= 1

    async def _text(self, request: web.Request) -> str | web.Response:
        """The line to score, or the 4xx answer to a request that does not carry one."""
        cfg = self.config
        if cfg.require_api_key is not None:
            if request.headers.get("Authorization") != f"Bearer {cfg.require_api_key}":
                return self._reject(401, "missing or wrong API key")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return self._reject(400, "body is not JSON")
        except RecursionError:
            return self._reject(400, "body is nested too deeply")
        if not isinstance(body, dict):
            return self._reject(400, "body must be a JSON object")
        if any(isinstance(body.get(k), list) for k in BATCH_KEYS):
            return self._reject(422, "batch requests are not supported: send one line per request")
        text = body.get(cfg.request_field)
        if not isinstance(text, str):
            return self._reject(400, f"field {cfg.request_field!r} must be a string")
        return text

    def _throttled(self) -> web.Response | None:
        """A 429 from the token bucket or the quota window, or None when the request may go on."""
        cfg = self.config
        if self._bucket is not None and (wait := self._bucket.take()) > 0:
            self.stats.rate_limited += 1
            return self._reject(429, "rate limit exceeded", retry_after(wait, cfg.retry_after, cfg.time_scale))
        if self._quota is not None and (wait := self._quota.take()) > 0:
            self.stats.quota_limited += 1
            return self._reject(429, "quota exhausted for this window",
                                retry_after(wait, cfg.retry_after, cfg.time_scale))
        return None

    async def _score(self, request: web.Request, text: str) -> web.StreamResponse:
        cfg = self.config
        if (refused := self._throttled()) is not None:
            return refused
        if cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
            self.stats.injected_errors += 1
            return self._reject(503, "transient failure (simulated)")
        if cfg.reset_rate > 0 and self._rng.random() < cfg.reset_rate:
            self.stats.resets += 1
            return _reset(request)
        if cfg.slow_body_rate > 0 and self._rng.random() < cfg.slow_body_rate:
            self.stats.slow_bodies += 1
            return await self._slow_body(request, text)
        if self._flaky is not None and (cause := self._flaky.cause(text)) is not None:
            self.stats.flaky_failures += 1
            return _flaky_failure(request, cause)
        slots = self._slots
        if slots is None:
            return await self._serve(text)
        if slots.full():
            self.stats.shed += 1
            wait = cfg.shed_retry_after * cfg.time_scale
            return self._reject(503, "over capacity (load shed)", retry_after(wait, "exact", 1.0) if wait > 0 else None)
        await slots.acquire()
        try:
            return await self._serve(text)
        finally:
            slots.release()

    async def _serve(self, text: str) -> web.Response:
        stats = self.stats
        stats.serving += 1
        stats.peak_serving = max(stats.peak_serving, stats.serving)
        try:
            delay = self.sample_latency()
            if delay > 0:
                await asyncio.sleep(delay)
            stats.ok += 1
            return web.json_response({self.config.score_field: deterministic_score(text)})
        finally:
            stats.serving -= 1

    async def _slow_body(self, request: web.Request, text: str) -> web.StreamResponse:
        """Headers at once, then the (correct) body one byte a second, padded to SLOW_BODY_BYTES."""
        body = json.dumps({self.config.score_field: deterministic_score(text)}).encode().ljust(SLOW_BODY_BYTES)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        try:
            for i in range(len(body)):
                await resp.write(body[i:i + 1])
                await asyncio.sleep(1.0)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):  # the client gave up: what a slow body is for
            pass
        return resp


def _flaky_failure(request: web.Request, cause: str) -> web.Response:
    """One of a flaky service's failures: a bare 503, 429 or 500, a reset, or a 200 that is not JSON."""
    if cause == "reset":
        return _reset(request)
    if cause == "not json":
        return web.Response(status=200, text="<html>upstream hiccup</html>", content_type="text/html")
    return web.json_response({"error": "transient failure (flaky)"}, status=int(cause))


def _reset(request: web.Request) -> web.Response:
    """Abort the connection with a TCP RST (SO_LINGER 0) instead of answering."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=503)  # never sent: the connection is gone
