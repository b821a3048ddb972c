"""The closed set of ways one request can fail, as types: what limits, fail-fast, the ramp, rows and the
summary read (never an error message).

Every attempt that does not end with a score ends as one `Failure`: a `FailureKind`, the HTTP status
when there was one, the server's Retry-After, a redirect's Location, and the text a row shows. What a
failure means for the run (retry it, count it towards a unanimous verdict, shrink the adaptive limit)
is a property of its kind, so a new kind has to say so once, here.

Modelled on encode/httpx `_exceptions.py`: transport errors (refused, DNS, timeout, reset) apart from
replies (an HTTP status, a body that does not parse, a body of the wrong shape).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from .redact import key_variable

if TYPE_CHECKING:
    from .settings import ClientConfig

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # other 4xx/5xx end the line at once
RETRY_AFTER_STATUSES = frozenset({429, 503})  # where a Retry-After is read
FATAL_STATUSES = frozenset({401, 403, 404})  # no amount of retrying changes these
# aiohttp >= 3.10 names these; older ones raise their bases (an empty tuple matches nothing)
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})
_DNS_ERROR = getattr(aiohttp, "ClientConnectorDNSError", ())
_RESET_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                 getattr(aiohttp, "ClientConnectionResetError", aiohttp.ServerDisconnectedError))


class FailureKind(enum.Enum):
    """How an attempt failed. The value is the label rows and records count (HTTP-like kinds add the status)."""

    REFUSED = "connection refused"
    DNS = "DNS failure"
    TIMEOUT = "timeout"
    RESET = "connection reset"  # reset, server disconnected, a broken body
    CONNECTION = "connection error"  # any other transport failure (unreachable network, TLS, ...)
    HTTP = "HTTP"  # a status outside 2xx that is neither throttling nor overload
    THROTTLED = "throttled"  # 429, or 503 with a Retry-After
    OVERLOADED = "overloaded"  # 503/504 without a Retry-After
    UNPARSEABLE = "malformed reply"  # a 2xx body that is not JSON, not finite, or too large
    WRONG_SHAPE = "wrong shape"  # a 2xx JSON body without a number at the score path
    REDIRECT = "redirect"  # a 3xx (never followed)
    INTERNAL = "internal error"  # an unexpected exception in our own code

    @property
    def has_status(self) -> bool:
        return self in (FailureKind.HTTP, FailureKind.THROTTLED, FailureKind.OVERLOADED, FailureKind.REDIRECT)


_TRANSIENT = frozenset({FailureKind.REFUSED, FailureKind.DNS, FailureKind.TIMEOUT, FailureKind.RESET,
                        FailureKind.CONNECTION, FailureKind.THROTTLED, FailureKind.OVERLOADED,
                        FailureKind.UNPARSEABLE, FailureKind.WRONG_SHAPE})
_UNANIMOUS = frozenset({FailureKind.REFUSED, FailureKind.DNS, FailureKind.WRONG_SHAPE, FailureKind.REDIRECT})
_OVERLOAD = frozenset({FailureKind.THROTTLED, FailureKind.OVERLOADED, FailureKind.TIMEOUT})


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt: its kind, the HTTP status, the server's Retry-After (seconds), a redirect's
    Location, and the text a row shows (already masked of secrets)."""

    kind: FailureKind
    status: int | None = None
    retry_after: float | None = None
    location: str | None = None
    message: str = ""

    @property
    def label(self) -> str:
        """A short, stable, countable name: `HTTP 503`, `timeout`, `wrong shape`, ... (records' attempt_kinds)."""
        if self.kind.has_status and self.status is not None:
            return f"HTTP {self.status}"
        return self.kind.value

    @property
    def retryable(self) -> bool:
        """The contract retries it (with backoff) while retries are left."""
        if self.kind is FailureKind.HTTP:
            return self.status in RETRY_STATUSES
        return self.kind in _TRANSIENT

    @property
    def fatal_if_unanimous(self) -> bool:
        """More requests cannot change it: when (nearly) every request before the first success fails
        this way, the service is unusable as configured."""
        if self.kind is FailureKind.HTTP:
            return self.status in FATAL_STATUSES
        return self.kind in _UNANIMOUS

    @property
    def overload(self) -> bool:
        """The service says it has too much to do: the adaptive limit shrinks."""
        return self.kind in _OVERLOAD

    @property
    def refused_key(self) -> bool:
        """The service refused the API key (401/403)."""
        return self.kind is FailureKind.HTTP and self.status in (401, 403)


def http_failure(status: int, retry_after: float | None = None, message: str | None = None,
                 location: str | None = None) -> Failure:
    """The failure a reply with this (non-2xx) status is: throttled, overloaded, a redirect or plain HTTP."""
    if 300 <= status < 400:
        kind = FailureKind.REDIRECT
    elif status == 429 or (status == 503 and retry_after is not None):
        kind = FailureKind.THROTTLED
    elif status in (503, 504):
        kind = FailureKind.OVERLOADED
    else:
        kind = FailureKind.HTTP
    if status not in RETRY_AFTER_STATUSES:
        retry_after = None
    return Failure(kind, status, retry_after, location, message if message is not None else f"HTTP {status}")


class FailedAttempt(Exception):
    """Raised inside the client for an attempt that ended as `failure` (never leaves the client)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def internal_failure(exc: BaseException, limit: int = 300) -> Failure:
    """An unexpected exception as an INTERNAL failure: its type and message on one line, never a traceback."""
    text = " ".join(f"internal error: {type(exc).__name__}: {exc}".rstrip(": ").split())
    return Failure(FailureKind.INTERNAL, message=text[:limit])


def failure_of(exc: BaseException, timeout: float | None = None) -> Failure:
    """The Failure an exception raised during one attempt stands for (typed, never from its text)."""
    if isinstance(exc, FailedAttempt):
        return exc.failure
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's connect/read timeouts are TimeoutErrors too
        text = f"timeout after {timeout:g}s" if timeout is not None else "timeout"
        return Failure(FailureKind.TIMEOUT, message=text)
    if not isinstance(exc, aiohttp.ClientError):
        return internal_failure(exc)
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(exc, _DNS_ERROR) or isinstance(cause, socket.gaierror):
            return Failure(FailureKind.DNS, message=text)
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return Failure(FailureKind.REFUSED, message=text)
        return Failure(FailureKind.CONNECTION, message=text)
    if isinstance(exc, _RESET_ERRORS):
        return Failure(FailureKind.RESET, message=text)
    if isinstance(exc, aiohttp.ClientOSError):
        reset = isinstance(exc.__cause__, ConnectionResetError) or exc.errno in _RESET_ERRNOS
        return Failure(FailureKind.RESET if reset else FailureKind.CONNECTION, message=text)
    return Failure(FailureKind.CONNECTION, message=text)


def key_hint(failure: Failure | None, client: "ClientConfig") -> str:
    """What to check when the service refused the key (never the key itself), or, for a reply of the
    wrong shape, what one reply said (the path looked for and the start of the body)."""
    if failure is not None and failure.kind is FailureKind.WRONG_SHAPE and failure.message:
        return f"; one reply: {failure.message} (see --score-field)"
    if failure is None or not failure.refused_key:
        return ""
    sent = "a key from" if client.api_key() else "no key: nothing in"
    return f"; the service refused the API key (this run sent {sent} {key_variable(client.api_key_env)}; see --api-key-env)"
