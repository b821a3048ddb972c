"""The one HTTP client both engines use: a session per event loop, retries, backoff, Retry-After.

Every retry and parsing rule of the contract lives here and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

from .config import ClientConfig

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(slots=True)
class Outcome:
    """What became of one text: a score or an error, after how many requests, and when."""

    score: float | None
    error: str | None
    attempts: int
    started: float  # wall clock (time.time) when scoring this text began
    finished: float
    latency: float  # seconds the last request was on the wire (from its headers being sent)
    sent: float = 0.0  # wall clock when the last request's headers went out (after any wait for a connection)

    @property
    def ok(self) -> bool:
        return self.error is None


async def _mark_sent(_session, ctx, _params) -> None:
    ctx.trace_request_ctx["sent"] = time.time()


def _outcome(score: float | None, error: str | None, attempts: int, started: float, sent: float) -> Outcome:
    now = time.time()
    return Outcome(score, error, attempts, started, now, now - sent, sent)


class _Retryable(Exception):
    """A failed attempt that the contract says to try again, with an optional server hint."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Permanent(Exception):
    """A failed attempt that ends the line at once (other 4xx)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header in either form (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_score(body: bytes, score_field: str) -> float:
    """The numeric score from a 200 body, or _Retryable when the body is not what the contract says."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Retryable("malformed response: body is not JSON") from None
    if not isinstance(data, dict):
        raise _Retryable("malformed response: body is not a JSON object")
    score = data.get(score_field)
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise _Retryable(f"malformed response: no numeric {score_field!r} field")
    return float(score)


class ScoringClient:
    """One aiohttp session, sized for `concurrency` requests at once, on the current event loop."""

    def __init__(self, config: ClientConfig, concurrency: int, rng: random.Random | None = None,
                 api_key: str | None = None) -> None:
        self.config = config
        self.concurrency = concurrency
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json"}
        key = api_key or config.api_key()
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    async def __aenter__(self) -> "ScoringClient":
        cfg = self.config
        connector = aiohttp.TCPConnector(limit=cfg.pool_size(self.concurrency), limit_per_host=0)
        # Waiting for a pooled connection is not the service's fault, so it does not count
        # toward the per-request timeout (aiohttp's `connect` would include it).
        timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=cfg.timeout, sock_read=cfg.timeout)
        # When a request really leaves (not when it starts waiting for a pooled connection) is what
        # the in-flight timeline and latency percentiles need. Only a pool smaller than the concurrency
        # makes requests wait; otherwise a request leaves when it starts, and tracing (some 5% of the
        # CPU per line at zero latency) is left out.
        traces = []
        if 0 < cfg.pool_size(self.concurrency) < self.concurrency:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_mark_sent)
            traces.append(trace)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers,
                                              trace_configs=traces)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def backoff(self, retry: int, retry_after: float | None) -> float:
        """Delay before retry number `retry` (0-based): Retry-After if given, else full jitter; both capped."""
        cap = self.config.backoff_cap
        if retry_after is not None:
            return min(cap, retry_after)
        return self._rng.uniform(0, min(cap, self.config.backoff_base * (2**retry)))

    async def score(self, text: str) -> Outcome:
        """Score one text, retrying as the contract says; never raises for service failures."""
        cfg = self.config
        started = time.time()
        mark: dict = {}
        last_error = "no attempt made"
        for attempt in range(cfg.max_retries + 1):
            mark = {"sent": time.time()}
            try:
                score = await self._attempt(text, mark)
                return _outcome(score, None, attempt + 1, started, mark["sent"])
            except _Permanent as exc:
                return _outcome(None, str(exc), attempt + 1, started, mark["sent"])
            except _Retryable as exc:
                last_error, hint = str(exc), exc.retry_after
            except asyncio.TimeoutError:
                last_error, hint = f"timeout after {cfg.timeout:g}s", None
            except aiohttp.ClientError as exc:
                last_error, hint = f"{type(exc).__name__}: {exc}".rstrip(": "), None
            if attempt < cfg.max_retries:
                await asyncio.sleep(self.backoff(attempt, hint))
        attempts = cfg.max_retries + 1
        return _outcome(None, f"{last_error} (gave up after {attempts} attempts)", attempts, started, mark["sent"])

    async def _attempt(self, text: str, mark: dict) -> float:
        assert self._session is not None, "use ScoringClient as an async context manager"
        cfg = self.config
        payload = json.dumps({cfg.request_field: text}).encode("utf-8")
        async with self._session.post(cfg.url, data=payload, trace_request_ctx=mark) as resp:
            if 200 <= resp.status < 300:
                return parse_score(await self._read_capped(resp), cfg.score_field)
            if resp.status in RETRY_STATUSES:
                hint = None
                if resp.status in RETRY_AFTER_STATUSES:
                    hint = parse_retry_after(resp.headers.get("Retry-After"))
                raise _Retryable(f"HTTP {resp.status}", hint)
            detail = (await resp.content.read(200)).decode("utf-8", "replace").strip().replace("\n", " ")
            raise _Permanent(f"HTTP {resp.status}" + (f": {detail}" if detail else ""))

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self.config.max_body_bytes
        if resp.content_length is not None:
            if resp.content_length > cap:
                raise _Retryable(f"malformed response: body of {resp.content_length} bytes exceeds {cap}")
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(65536):
            size += len(chunk)
            if size > cap:
                raise _Retryable(f"malformed response: body exceeds {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
