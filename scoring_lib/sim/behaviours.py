"""The simulated service's behaviours (the zoo): how a real service refuses, queues, slows and fails.

Each piece holds its own state for one running service; durations are real seconds (the caller has
already multiplied simulated seconds by the time scale). `reset()` on the service starts them over, as
a new run would see a freshly started service.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import deque

WARMUP_FACTOR = 5.0  # latency multiple while the service warms up
RETRY_AFTER_MODES = ("exact", "whole", "none")
# Flaky-but-alive: a line's failed attempts cycle through these causes, from a start its text picks.
FLAKY_CAUSES = ("503", "429", "reset", "not json", "500")


def retry_after(wait: float, mode: str, time_scale: float) -> dict[str, str]:
    """The Retry-After header for a refusal whose cause ends in `wait` real seconds: exact (fractional
    seconds), whole (rounded up to whole simulated seconds, as most public APIs answer), or none."""
    if mode == "none":
        return {}
    if mode == "whole":
        wait = max(1, math.ceil(wait / time_scale - 1e-9)) * time_scale
    return {"Retry-After": f"{wait:.3f}".rstrip("0").rstrip(".") or "0"}


class TokenBucket:
    """`rate` tokens per real second, at most `burst` kept; a refused request learns how long to wait."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else real seconds until one is due."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class QuotaWindow:
    """At most `quota` requests per fixed window of `window` real seconds (counted from the service's
    start); a refused request learns the seconds left until the window ends."""

    def __init__(self, quota: int, window: float) -> None:
        self.quota = quota
        self.window = window
        self.origin = time.monotonic()
        self.index = 0
        self.used = 0

    def take(self) -> float:
        now = time.monotonic()
        index = int((now - self.origin) // self.window)
        if index != self.index:
            self.index, self.used = index, 0
        if self.used < self.quota:
            self.used += 1
            return 0.0
        return max(1e-3, self.origin + (index + 1) * self.window - now)


class Slots:
    """Requests served at once (`capacity`), the rest wait in FIFO order in a queue of `queue_limit`
    places (None = unbounded; a proxy in front of replicas holds a bounded one), and the capacity
    halves once `halve_after` requests were admitted (0 = never): a service that loses replicas."""

    def __init__(self, capacity: int, queue_limit: int | None, halve_after: int = 0) -> None:
        self.capacity = capacity
        self.queue_limit = queue_limit
        self.halve_after = halve_after
        self.serving = 0
        self.admitted = 0
        self.waiters: deque[asyncio.Future] = deque()

    def full(self) -> bool:
        """No slot free and no place left in the queue: the request is refused at once."""
        if self.serving < self.capacity and not self.waiters:
            return False
        return self.queue_limit is not None and len(self.waiters) >= self.queue_limit

    def busy(self) -> bool:
        return self.serving >= self.capacity or bool(self.waiters)

    async def acquire(self) -> None:
        if self.serving < self.capacity and not self.waiters:
            self._admit_one()
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # admitted, then cancelled: give the slot on
            elif fut in self.waiters:
                self.waiters.remove(fut)
            raise

    def release(self) -> None:
        self.serving -= 1
        while self.waiters and self.serving < self.capacity:
            fut = self.waiters.popleft()
            if not fut.done():
                self._admit_one()
                fut.set_result(None)

    def _admit_one(self) -> None:
        self.serving += 1
        self.admitted += 1
        if self.halve_after and self.admitted == self.halve_after:
            self.capacity = max(1, self.capacity // 2)


class Warmup:
    """Latency is WARMUP_FACTOR times longer for `seconds` real seconds from the first request."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.first: float | None = None

    def factor(self) -> float:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        return WARMUP_FACTOR if now - self.first < self.seconds else 1.0


class Flaky:
    """Each line's first `attempts` requests fail, each with a cause from FLAKY_CAUSES (a mix: the
    line's text picks where in the cycle it starts), then every request for it succeeds."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.seen: dict[str, int] = {}

    def cause(self, text: str) -> str | None:
        """The failure this request gets, or None when it is served."""
        n = self.seen.get(text, 0)
        if n >= self.attempts:
            return None
        self.seen[text] = n + 1
        start = hashlib.sha256(text.encode("utf-8")).digest()[0]
        return FLAKY_CAUSES[(start + n) % len(FLAKY_CAUSES)]
