"""The one HTTP client both engines use: a session per event loop, retries, backoff, Retry-After.

Every retry rule of the contract lives here and nowhere else; what a reply says (body, score,
Retry-After) is read in replies.py. Every attempt ends with a score or a typed Failure.
Redirects are never followed: a 3xx is a REDIRECT failure naming its Location.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import socket
import struct
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from .config import ClientConfig
from .failures import (RETRY_AFTER_STATUSES, FailedAttempt, Failure, FailureKind, failure_of, http_failure,
                       internal_failure)
from .limits import Attempt, Stop
from .redact import redact
from .replies import ACCEPT_ENCODING, parse_retry_after, parse_score, read_body, readable_whole
from .replies import WRONG_SHAPE, body_sample, extract_score  # noqa: F401 - re-exported: callers read them here

_UNCANCEL = hasattr(asyncio.Task, "uncancel")  # Python 3.11+: a task counts the cancellations asked of it

ERROR_SAMPLE_BYTES = 4096  # of an error body, read to show its start in the row
_encode_string = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str (ensure_ascii)
_NO_ATTEMPT = Failure(FailureKind.INTERNAL, message="no attempt made")  # frozen: one for every line, not one each


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
    retry_after: float | None = None  # the server's Retry-After on the last failed attempt, if any
    failure: Failure | None = None  # how the last attempt failed (None: scored)
    fatal: bool = False  # the run's limiter stopped it: no request succeeded and more would not help

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def cause(self) -> str | None:
        """How the last attempt failed, as a countable label ("HTTP 503", "timeout", ...)."""
        return None if self.failure is None else self.failure.label


async def _mark_sent(_session, ctx, _params) -> None:
    ctx.trace_request_ctx["sent"] = time.time()


# The deadline of one request covers connect, headers and body, but not the wait for a pooled
# connection: that wait is the client's own limit, not the service's slowness.
async def _pause_deadline(_session, ctx, _params) -> None:
    if (deadline := ctx.trace_request_ctx.get("deadline")) is not None:
        deadline.pause()


async def _restart_deadline(_session, ctx, _params) -> None:
    if (deadline := ctx.trace_request_ctx.get("deadline")) is not None:
        deadline.restart()


class Deadlines:
    """The per-request deadlines of one event loop, without a timer per request.

    Each request runs inside a `_Deadline` (a plain context manager: no timer, no coroutine of its own);
    a watcher task looks every `tick` seconds (a twentieth of the timeout, between 5 ms and 0.5 s) for
    requests past their deadline and expires them: the request's task is cancelled and the cancellation
    leaves the request as TimeoutError, by asyncio.timeout's rule. A request ends at most one tick after
    its deadline. A timer per request (call_at on the loop's heap, then cancelled) costs more CPU per line
    at zero latency, and so does an asyncio.timeout per request (two coroutines and a state machine)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(0.5, max(0.005, timeout / 20))
        self._live: dict = {}  # asyncio.Timeout -> loop time of its deadline (inf while paused)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: asyncio.Task | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._watcher = self._loop.create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None

    def request(self) -> "_Deadline":
        return _Deadline(self)

    async def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            for d in [d for d, when in self._live.items() if when <= now]:
                del self._live[d]
                d.expire()


class _Deadline:
    """One request's deadline (a context manager, entered in the request's task): started on entry,
    paused while the request waits for a pooled connection, forgotten on exit. Expired, it cancels the
    task, and that cancellation leaves the block as TimeoutError, as asyncio.timeout's does: only when
    no other cancellation was asked of the task meanwhile (Python 3.11+; on 3.10, as async_timeout's)."""

    __slots__ = ("_owner", "_task", "_cancelling", "_expired")

    def __init__(self, owner: Deadlines) -> None:
        self._owner = owner
        self._expired = False

    def __enter__(self) -> "_Deadline":
        task = asyncio.current_task(self._owner._loop)  # the loop given: no get_running_loop (a getpid call) per request
        if task is None:
            raise RuntimeError("a request deadline is entered inside a task")
        self._task = task
        self._cancelling = task.cancelling() if _UNCANCEL else 0
        self.restart()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._owner._live.pop(self, None)
        if self._expired:
            outside = _UNCANCEL and self._task.uncancel() > self._cancelling  # a cancellation not ours
            if exc_type is asyncio.CancelledError and not outside:
                raise asyncio.TimeoutError from exc

    def expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def pause(self) -> None:
        if not self._expired:
            self._owner._live[self] = math.inf

    def restart(self) -> None:
        if not self._expired:  # expired once is enough: its task is already being cancelled
            owner = self._owner
            owner._live[self] = owner._loop.time() + owner.timeout  # type: ignore[union-attr]


_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux only
_TCPI_RTT = 68  # offset of tcpi_rtt (microseconds, u32) in Linux's struct tcp_info


def kernel_round_trip(transport: object) -> float | None:
    """The kernel's round-trip estimate of a TCP connection in seconds (Linux's tcpi_rtt: right after the
    connect, the SYN's round trip), or None where the system does not tell."""
    if _TCP_INFO is None or transport is None:
        return None
    try:
        info = transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
        rtt = struct.unpack_from("I", info, _TCPI_RTT)[0]
    except (OSError, AttributeError, TypeError, ValueError, struct.error):
        return None
    return rtt / 1e6 if rtt else None


class _TimedConnector(aiohttp.TCPConnector):
    """A TCPConnector that tells `on_connect` the round trip of each new connection: the kernel's estimate
    where it gives one, else how long the connect took (TLS included; that also counts any moment the
    event loop was busy elsewhere, as it is when a thousand workers start). The probe gate's scaled grace
    follows it (limits.LoopGate.connected). Per connection, not per request: a TraceConfig would cost
    some CPU on every request."""

    on_connect = None  # Callable[[float], None] | None

    async def _create_connection(self, *args, **kwargs):
        t0 = time.perf_counter()
        proto = await super()._create_connection(*args, **kwargs)
        if self.on_connect is not None:
            rtt = kernel_round_trip(getattr(proto, "transport", None))
            self.on_connect(time.perf_counter() - t0 if rtt is None else rtt)
        return proto


def _outcome(score: float | None, error: str | None, attempts: int, started: float, sent: float,
             failure: Failure | None = None) -> Outcome:
    now = time.time()
    return Outcome(score, error, attempts, started, now, now - sent, sent, failure=failure)


class ScoringClient:
    """One aiohttp session, sized for `concurrency` requests at once, on the current event loop."""

    def __init__(self, config: ClientConfig, concurrency: int, rng: random.Random | None = None,
                 api_key: str | None = None, limiter=None) -> None:
        self.config = config
        self.limiter = limiter  # a limits.LoopGate: asked before every attempt, told how it went
        self.concurrency = concurrency
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._deadlines = Deadlines(config.timeout)
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": ACCEPT_ENCODING}
        self._body_prefix = ("{" + json.dumps(config.request_field) + ": ").encode("ascii")
        key = api_key or config.api_key()
        self._secrets = (key,) if key else ()
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    async def __aenter__(self) -> "ScoringClient":
        cfg = self.config
        connector = _TimedConnector(limit=cfg.pool_size(self.concurrency), limit_per_host=0)
        if self.limiter is not None and hasattr(self.limiter, "connected"):
            connector.on_connect = self.limiter.connected
        # Waiting for a pooled connection is not the service's fault, so it does not count
        # toward the per-request timeout (aiohttp's `connect` would include it). No sock_read either: the
        # request's own deadline (_attempt) already bounds the body, and aiohttp re-arms a sock_read timer
        # on every chunk received (some 6% of the CPU per line at zero latency).
        timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=cfg.timeout, sock_read=None)
        # When a request really leaves (not when it starts waiting for a pooled connection) is what
        # the in-flight timeline and latency percentiles need; the per-request deadline pauses while a
        # request waits for a pooled connection. Only a pool smaller than the concurrency makes requests
        # wait; otherwise a request leaves when it starts, and tracing (some 5% of the CPU per line at
        # zero latency) is left out.
        traces = []
        if 0 < cfg.pool_size(self.concurrency) < self.concurrency:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_mark_sent)
            trace.on_connection_queued_start.append(_pause_deadline)
            trace.on_connection_queued_end.append(_restart_deadline)
            traces.append(trace)
        # auto_decompress off: replies.read_body decodes, counting bytes after decoding against the cap.
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers,
                                              trace_configs=traces, auto_decompress=False)
        self._deadlines.start()
        return self

    async def warm(self, n: int) -> int:
        """Open up to `n` connections (never more than the pool holds) and leave them idle in the pool, so
        the first requests find them open: nothing is sent on them. A connection that cannot be opened is
        left to the first request that needs it (which then fails, or not, as the contract says). Returns
        the connections open in the pool after it."""
        if self._session is None or n <= 0:
            return 0
        connector = self._session.connector
        assert connector is not None
        if connector.limit:
            n = min(n, connector.limit)
        # A request as the session makes them, for its connection key: the connections opened are the
        # ones its requests take from the pool.
        request = aiohttp.ClientRequest("POST", URL(self.config.url), loop=asyncio.get_running_loop())
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeout)
        opened = [conn for conn in await asyncio.gather(*(connector.connect(request, [], timeout) for _ in range(n)),
                                                        return_exceptions=True) if not isinstance(conn, BaseException)]
        for conn in opened:
            conn.release()  # back to the pool, open and idle
        return len(opened)

    async def __aexit__(self, *exc: object) -> None:
        await self._deadlines.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def internal_outcome(self, exc: Exception, started: float, attempts: int = 0) -> Outcome:
        """The outcome of a line whose scoring raised unexpectedly: an INTERNAL error row, one line of
        text (the exception's type and message, masked and cut, never a traceback), with the requests
        that went out for it (the record's attempt counts must agree with the rows)."""
        failure = _masked(internal_failure(exc, limit=1 << 20), self._secrets)  # masked whole, then cut
        failure = dataclasses.replace(failure, message=failure.message[:300])
        return _outcome(None, failure.message, attempts, started, started, failure)

    def backoff(self, retry: int, retry_after: float | None, base: float | None = None) -> float:
        """Delay before retry number `retry` (0-based): Retry-After if given, else full jitter from a first
        ceiling of the backoff base (or `base`, the limiter's, when lower), doubling; both capped."""
        cap = self.config.backoff_cap
        if retry_after is not None:
            return min(cap, retry_after)
        first = self.config.backoff_base if base is None else min(base, self.config.backoff_base)
        return self._rng.uniform(0, min(cap, first * (2**retry)))

    async def score(self, text: str) -> Outcome:
        """Score one text, retrying as the contract says; never raises for service failures. Anything
        else that escapes (a bug of ours) becomes this line's INTERNAL row, counting the requests sent."""
        cfg = self.config
        started = time.time()
        mark: dict = {"sent": started, "attempt": 0}
        failure = _NO_ATTEMPT
        attempts = 0
        try:
            for attempt in range(cfg.max_retries + 1):
                mark.clear()
                mark["sent"], mark["attempt"] = time.time(), attempt
                try:
                    score = await self._reported_attempt(text, mark)
                    return _outcome(score, None, attempt + 1, started, mark["sent"])
                except Stop as exc:
                    out = _outcome(None, str(exc), attempt, started, mark["sent"], exc.failure)
                    out.fatal = exc.fatal
                    return out
                except FailedAttempt as exc:
                    failure, attempts = exc.failure, attempt + 1
                if not failure.retryable:
                    return _outcome(None, failure.message, attempts, started, mark["sent"], failure)
                if attempt < cfg.max_retries:
                    base = getattr(self.limiter, "retry_base", None)
                    await self._back_off(self.backoff(attempt, failure.retry_after, base and base(failure)))
        except Exception as exc:
            return self.internal_outcome(exc, started, mark["attempt"])
        error = redact(f"{failure.message} (gave up after {attempts} attempts)", self._secrets)
        outcome = _outcome(None, error, attempts, started, mark["sent"], failure)
        outcome.retry_after = failure.retry_after
        return outcome

    async def _back_off(self, delay: float) -> None:
        """Wait before a retry; the limiter knows the line waits and is not a request in flight (the
        pool may take other lines meanwhile: a flaky service's lines spend most of their time here)."""
        if self.limiter is None:
            await asyncio.sleep(delay)
            return
        self.limiter.backing_off(1)
        try:
            await asyncio.sleep(delay)
        finally:
            self.limiter.backing_off(-1)

    async def _reported_attempt(self, text: str, mark: dict) -> float:
        """One attempt between the limiter's acquire and release, which learns how it went and its latency.
        Any exception but a cancellation leaves as a FailedAttempt (an unexpected one is INTERNAL).
        The request itself is written here, not in a coroutine of its own: every await of the request
        resumes each coroutine of the chain, and at zero latency a layer more costs CPU per line."""
        assert self._session is not None, "use ScoringClient as an async context manager"
        cfg = self.config
        limiter = self.limiter
        ticket = None if limiter is None else await limiter.acquire()
        mark["sent"] = time.time()
        mark["attempt"] += 1  # it goes out: an exception from here on counts it
        t0 = time.perf_counter()
        try:
            # The bytes json.dumps({field: text}) gives, from the C string encoder alone (a dict through
            # JSONEncoder costs several times more, once per request).
            payload = b"".join((self._body_prefix, _encode_string(text).encode("ascii"), b"}"))
            # --timeout is the whole request (connect, headers, body), not each socket read.
            with self._deadlines.request() as mark["deadline"]:
                async with self._session.post(cfg.url, data=payload, trace_request_ctx=mark,
                                              allow_redirects=False) as resp:
                    if not 200 <= resp.status < 300:
                        raise FailedAttempt(await self._refusal(resp))
                    cap = cfg.max_body_bytes
                    body = await (resp.read() if readable_whole(resp, cap) else read_body(resp, cap))
            score = parse_score(body, cfg.score_field, self._secrets)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            if limiter is not None:
                limiter.release(ticket, Attempt(None, time.perf_counter() - t0, cancelled=True))
            raise
        except BaseException as exc:
            failure = _masked(failure_of(exc, cfg.timeout), self._secrets)
            if limiter is not None:
                limiter.release(ticket, Attempt(failure, time.perf_counter() - t0))
            raise FailedAttempt(failure) from None
        if limiter is not None:
            limiter.release(ticket, Attempt(None, time.perf_counter() - t0))
        return score

    async def _refusal(self, resp: aiohttp.ClientResponse) -> Failure:
        """The failure a non-2xx reply is; one that ends the line shows the start of its body (or where a
        redirect pointed), masked before it is cut to 200 characters so a secret cannot survive cut off."""
        hint = parse_retry_after(resp.headers.get("Retry-After")) if resp.status in RETRY_AFTER_STATUSES else None
        failure = http_failure(resp.status, hint)
        if failure.retryable:
            return failure
        if failure.kind is FailureKind.REDIRECT:
            location = " ".join((redact(resp.headers.get("Location", ""), self._secrets) or "").split())[:200]
            return http_failure(resp.status, message=f"HTTP {resp.status}: redirect to {location or '(no Location)'} "
                                f"not followed", location=location or None)
        try:
            detail = (await read_body(resp, ERROR_SAMPLE_BYTES, cut=True)).decode("utf-8", "replace")
        except FailedAttempt:  # an error body that cannot be decoded: the status says enough
            detail = ""
        detail = " ".join((redact(detail, self._secrets) or "").split())[:200]
        return http_failure(resp.status, hint, f"HTTP {resp.status}" + (f": {detail}" if detail else ""))

def _masked(failure: Failure, secrets: tuple[str, ...]) -> Failure:
    """The failure with its message masked of the key (an exception's text may quote a URL or a header)."""
    message = redact(failure.message, secrets) or ""
    return failure if message == failure.message else dataclasses.replace(failure, message=message)
