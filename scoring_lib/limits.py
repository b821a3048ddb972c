"""Limiters: how many requests may be in flight, and how fast they may start, for the whole run.

The client asks its event loop's gate before every attempt (`acquire`) and reports how the attempt
went (`release` with an `Attempt`: kind, status, latency, Retry-After). Behind the gates of all
event-loop threads of a process sits one `RunLimiter` (thread-safe), which decides:

- the concurrency limit: `fixed` (the number given) or `adaptive` (slow start, then a gradient on
  latency, Little's law: capacity ~ in-flight x baseline / latency, plus a small headroom; a
  multiplicative cut on 429/503/504/timeouts; never below the floor, never above the ceiling);
- the rate (`--rate-limit`): one aiolimiter leaky bucket per event loop, each with its share of the
  rate, so the buckets together never exceed it; a Retry-After on 429/503 pauses every gate;
- failing fast: before the first success at most `probe` attempts go out; the run stops (`Stop`,
  fatal) only on a unanimous verdict: at least `trip` attempts failed with one cause more requests will
  not change (`Failure.fatal_if_unanimous`: refused, DNS, 401/403/404, wrong shape, a redirect) and
  that cause is at least `UNANIMOUS` of every attempt that finished before any success. Transient
  failures (5xx, 429, resets, timeouts, an unparseable body) never stop it early. Later, a streak of
  failed attempts longer than the retry budget stops the run too (not fatal: the remaining lines
  become error rows at once).

A Ray worker holds its own RunLimiter with its share of the rate, ceiling and probe (`share`), so no
remote call sits between a request and its slot. Only a Retry-After crosses workers: the limiter tells
`on_pause` (set by the Ray worker) when a Retry-After of its own extends its pause by a quarter or more,
the worker passes that on to the run's other workers, and each applies it with `pause_from_peer`: the
whole run waits, as in one process, about a millisecond later.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from .failures import Failure, FailureKind

HISTORY_POINTS = 1000
# Fail fast only on a (nearly) unanimous verdict: the fatal cause is at least this share of the attempts
# that finished before any success (7 of 8: one stray reset or 503 does not hide a 401).
UNANIMOUS = 7 / 8
# A pause is passed on to the other processes of the run only when it ends this much later than the one
# already known (a share of its length, at least 2 ms): a 429 storm makes a few reports, not one per 429.
TELL_SHARE, TELL_MIN = 0.25, 0.002
# Latency up to this multiple of the lowest seen is not queueing (client overhead and noise on a busy
# machine add some); above it, the limit is set where latency would come back to it.
TOLERANCE = 1.3


@dataclass(frozen=True)
class LimitSettings:
    """What one RunLimiter enforces. `limit` is the fixed limit, or the ceiling when adaptive."""

    limit: int
    adaptive: bool = False
    floor: int = 1
    initial: int = 20  # adaptive: where slow start begins
    rate: float | None = None  # requests per second, all gates of this limiter together
    probe: int = 16  # attempts allowed before the first success (or the grace period)
    trip: int = 8  # failures of one fatal-if-unanimous cause before any success that may stop the run
    # seconds without a fatal failure after which the probe gate opens anyway: a 401/403/404 must come
    # back within it even on a loaded machine (0.05 s let 162 requests out before a 401 stopped the run);
    # a healthy run pays it once, unscaled
    grace: float = 0.2
    budget: int = 50  # failed attempts in a row that stop the run (at least; 2 x the most in flight if larger)
    stall: float = 5.0  # ... and only once no attempt succeeded for this many seconds
    pause_cap: float = 20.0  # longest run-wide pause a Retry-After may cause
    parts: int = 1  # how many limiters share the run (Ray workers): each probes upwards 1/parts as fast

    def share(self, index: int, parts: int) -> "LimitSettings":
        """This part's share of the limit, floor, rate and probe (a Ray worker of `parts`)."""
        def split(total: int) -> int:
            base, extra = divmod(total, parts)
            return max(1, base + (1 if index < extra else 0))
        return replace(self, limit=split(self.limit), floor=split(self.floor),
                       initial=max(1, math.ceil(self.initial / parts)),
                       rate=None if self.rate is None else self.rate / parts,
                       probe=split(self.probe), trip=max(1, split(self.trip)), budget=split(self.budget),
                       parts=parts * self.parts)


@dataclass(slots=True)
class Attempt:
    """How one request went, as the client reports it: `failure` None is a score."""

    failure: Failure | None = None
    latency: float = 0.0
    cancelled: bool = False  # never answered (the run was cancelled): counted, not judged

    @property
    def label(self) -> str:
        """What the record's attempt_kinds counts: "ok", "cancelled" or the failure's label ("HTTP 503", ...)."""
        if self.cancelled:
            return "cancelled"
        return "ok" if self.failure is None else self.failure.label

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.cancelled


class Stop(Exception):
    """The run stops sending: `fatal` when no request ever succeeded and more will not help;
    `failure` is the cause (for a spent budget, the most common failure of the streak)."""

    def __init__(self, message: str, failure: Failure, fatal: bool) -> None:
        super().__init__(message)
        self.failure = failure
        self.fatal = fatal

    @property
    def kind(self) -> str:
        return self.failure.label


class _Ticket:
    __slots__ = ("sent", "in_flight")

    def __init__(self, sent: float, in_flight: int) -> None:
        self.sent = sent
        self.in_flight = in_flight


class RunLimiter:
    """One per process and run, shared by every event-loop thread; all state under one lock."""

    def __init__(self, settings: LimitSettings) -> None:
        s = settings
        self.settings = s
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.started_at = time.time()  # wall clock of t0, so histories of several processes line up
        self.limit = float(min(s.limit, max(s.floor, s.initial)) if s.adaptive else s.limit)
        self.in_flight = 0  # slots taken (sending, or about to send)
        self._peak = 0
        self._last_success = self.t0
        self.started = 0
        self.released = 0
        self.successes = 0
        self.kinds: Counter = Counter()
        self.fatal: Counter = Counter()  # before any success: fatal-if-unanimous failures by label
        self._examples: dict[str, Failure] = {}  # a failure of each label seen, for Stop's cause
        self.streak = 0
        self.streak_kinds: Counter = Counter()
        self.stopped: Stop | None = None
        self.pause_until = 0.0
        self.pauses = 0
        self.peer_pauses = 0  # pauses other processes of the run passed on (pause_from_peer) that extended ours
        # Called (outside the lock) with the wall-clock end of a pause this limiter's own Retry-After began
        # or extended enough to tell the run's other processes (a Ray worker sets it; kept by reset()).
        self.on_pause: Callable[[float], None] | None = None
        self._opened = False
        self._first_start: float | None = None
        self._gates: list[LoopGate] = []
        self.history: list[list[float]] = [[0.0, self.limit]]
        # adaptive state
        self._slow_start = True
        self._baseline = math.inf
        self._last_cut = -math.inf
        self._win_ok: list[tuple[float, int]] = []
        self._win_drops = 0
        self._recent: deque[bool] = deque(maxlen=16)
        self._last_window: tuple[float, float] | None = None
        self._win_count = 0
        self._win_target = max(3, int(self.limit))
        self._win_start = self.t0

    def reset(self) -> None:
        """Start another run on the same gates (a Ray worker kept between runs): forget what the last
        run learned (its limit, failures, stop), keep the event loops' gates."""
        with self._lock:
            gates = list(self._gates)
        on_pause = self.on_pause
        self.__init__(self.settings)
        self._gates = gates
        self.on_pause = on_pause

    def open_gate(self) -> None:
        """The service answered already (a Ray run's first contact, made by the driver while its workers
        booted): no probing, the first requests go out at once."""
        with self._lock:
            self._opened = True

    # -- gates -------------------------------------------------------------------------------------
    def gate(self, rate_share: float | None = None) -> "LoopGate":
        """The gate for the calling event loop, with `rate_share` requests per second of the rate."""
        g = LoopGate(self, rate_share)
        with self._lock:
            self._gates.append(g)
        return g

    def gate_rates(self, loops: int) -> list[float | None]:
        """Each loop's share of the rate (None when unlimited)."""
        rate = self.settings.rate
        return [None if rate is None else rate / loops for _ in range(loops)]

    # -- under the lock -----------------------------------------------------------------------------
    def _slots(self) -> int:
        """Requests in flight the limit allows now. A share of the run's limit (a Ray worker's) is rounded
        at random, up with the odds of its fraction, so the run's total is right on average: rounded down,
        4 workers at 1.7 held 4 requests in flight, not 7, and a rate-limited run took 1.2x N/rate instead
        of 0.95x; rounded up, it drew 30% 429s instead of 24% (bench case l, Ray without --threads)."""
        if self.settings.parts > 1:
            whole = int(self.limit)
            return max(1, whole + (random.random() < self.limit - whole))
        return max(1, int(self.limit))

    def _budget(self) -> int:
        # Twice the most ever in flight: a burst of requests sent together may all fail together.
        return max(self.settings.budget, 2 * self._peak)

    def _gated(self, now: float) -> bool:
        if self._opened:
            return False
        s = self.settings
        if self.successes or self.released >= s.probe or (
                self._first_start is not None and now - self._first_start >= s.grace and not self.fatal):
            self._opened = True
            return False
        return True

    def _try_take(self, now: float) -> bool | float:
        """True when a slot was taken; else seconds to wait at most before trying again (inf = until woken)."""
        if self.stopped is not None:
            raise self.stopped
        if self._gated(now):
            if self._first_start is None:
                self._first_start = now
            if self.started >= self.settings.probe:
                return max(0.01, self._first_start + self.settings.grace - now)
        if self.in_flight >= self._slots():
            return math.inf
        self.in_flight += 1
        self.started += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight
        return True

    def _wake(self, prefer: "LoopGate | None") -> list[tuple["LoopGate", asyncio.Future]]:
        """Waiters to wake for the slots now free (all of them once stopped)."""
        free = math.inf if self.stopped is not None else self._slots() - self.in_flight
        if free <= 0 or not any(g.waiters for g in self._gates):
            return []  # the usual case: nobody waits (a fixed limit runs as many workers as slots)
        out = []
        gates = ([prefer] if prefer is not None else []) + [g for g in self._gates if g is not prefer]
        for g in gates:
            while free > 0 and g.waiters:
                fut = g.waiters.popleft()
                if not fut.done():  # a waiter that timed out or was cancelled takes no slot
                    out.append((g, fut))
                    free -= 1
        return out

    def _record(self, now: float) -> None:
        t = round(now - self.t0, 3)
        last = self.history[-1]
        if int(last[1]) == int(self.limit):
            return
        if t - last[0] < 0.02 and len(self.history) > 1:
            last[1] = round(self.limit, 1)
        else:
            self.history.append([t, round(self.limit, 1)])
        if len(self.history) > HISTORY_POINTS:
            self.history = self.history[::2] + ([self.history[-1]] if len(self.history) % 2 == 0 else [])

    def _finished(self) -> int:
        return sum(self.kinds.values()) - self.kinds.get("cancelled", 0)

    def _unanimous(self) -> str | None:
        """Before any success: the fatal cause (nearly) every finished attempt failed with, once `trip` did."""
        if not self.fatal:
            return None
        label, got = self.fatal.most_common(1)[0]
        return label if got >= self.settings.trip and got >= UNANIMOUS * self._finished() else None

    def _stop(self, kind: str, fatal: bool) -> None:
        if fatal:
            # Plain counts: how many requests finished (every one failed), how many of them with this cause,
            # how many were sent in all (some were still out when the run stopped).
            finished = self._finished()
            got = self.fatal[kind]
            which = (f"every request that finished ({got} of {finished}; " if got == finished
                     else f"{got} of the {finished} requests that finished (")
            msg = f"service unusable: {kind} on {which}{self.started} sent, none succeeded), so the run stopped early"
        else:
            top = ", ".join(f"{c} {k}" for k, c in self.streak_kinds.most_common(3))
            msg = f"retry budget spent: {self.streak} attempts in a row failed ({top})"
        self.stopped = Stop(msg, self._examples[kind], fatal)

    def _adapt(self, ticket: _Ticket, a: Attempt, now: float) -> None:
        s = self.settings
        if a.ok:
            self._win_ok.append((a.latency, ticket.in_flight))
            if self._slow_start:
                # Grow by one per success (doubling per round trip) only while replies show no queueing;
                # leave slow start as soon as most recent replies do (not a window later: growth is fast).
                queued = a.latency > TOLERANCE * self._baseline
                self._recent.append(queued)
                if not queued:
                    self.limit = min(s.limit, self.limit + 1)
                elif sum(self._recent) * 2 > len(self._recent) >= 8:
                    self._slow_start = False
                    target = statistics.median(n * TOLERANCE * self._baseline / max(lat, 1e-6)
                                               for lat, n in self._win_ok[-len(self._recent):])
                    self.limit = max(s.floor, min(s.limit, self.limit, max(target, self.limit / 2)))
        elif a.failure is not None and a.failure.overload and ticket.sent > self._last_cut:
            self._win_drops += 1
        self._win_count += 1
        rtt = self._baseline if self._baseline < math.inf else 0.05
        # A window is about one round trip: as many completions as the limit when it began.
        if self._win_count < self._win_target and now - self._win_start < 4 * rtt:
            return
        ok, drops = self._win_ok, self._win_drops
        self._win_ok, self._win_drops, self._win_count, self._win_start = [], 0, 0, now
        self._win_target = max(3, int(self.limit))
        if drops:
            f = drops / (drops + len(ok))
            self.limit = max(s.floor, self.limit * min(0.9, max(0.75, 1 - f)))
            self._slow_start = False
            self._last_cut = now
            return
        if len(ok) < 3:
            return
        median = statistics.median(lat for lat, _ in ok)
        self._baseline = min(self._baseline, median)
        if self._baseline <= 0:
            return
        n_median = statistics.median(n for _, n in ok)
        last, self._last_window = self._last_window, (n_median, median)
        if median > TOLERANCE * self._baseline and last and n_median < 0.95 * last[0] and median >= 0.97 * last[1]:
            # Fewer in flight did not bring latency down: not our queueing but a slower machine or network.
            # Let the baseline follow it instead of cutting the limit towards the floor.
            self._baseline = min(median, 1.1 * self._baseline)
        elif median > TOLERANCE * self._baseline:
            # Queueing: the in-flight count at which latency would be TOLERANCE x the baseline (Little's law).
            self._slow_start = False
            target = statistics.median(n * TOLERANCE * self._baseline / max(lat, 1e-6) for lat, n in ok)
            self.limit = max(s.floor, min(s.limit, self.limit, max(target, 0.7 * self.limit)))
        elif not self._slow_start and n_median >= 0.8 * self.limit:
            # No queueing while the limit is in use: probe upwards by a small step.
            # Together the run's limiters step up as one would (sqrt of the whole limit / 2).
            self.limit = min(s.limit, self.limit + max(1.0, math.sqrt(self.limit * s.parts) / 2) / s.parts)

    def hold_for(self, a: Attempt) -> float:
        """Adaptive: how long a refused attempt keeps its slot. A 503/429 comes back at once; freeing its
        slot at once would let the next request spin into the same refusal many times per round trip."""
        f = a.failure
        if not self.settings.adaptive or f is None or not f.overload or f.kind is FailureKind.TIMEOUT:
            return 0.0
        return min(2.0, self._baseline if self._baseline < math.inf else 0.1)

    def _release(self, ticket: _Ticket, a: Attempt, now: float, free: bool = True) -> float | None:
        """Count the attempt and adapt; returns the end (monotonic) of a pause to tell on_pause, if any."""
        if free:
            self.in_flight -= 1
        self.released += 1
        label = a.label
        self.kinds[label] += 1
        f = a.failure
        if a.cancelled:
            return None
        if f is None:
            self.successes += 1
            self._last_success = now
            self.streak = 0
            self.streak_kinds.clear()
        else:
            self._examples[label] = f
            self.streak += 1
            self.streak_kinds[label] += 1
            if not self.successes and f.fatal_if_unanimous:
                self.fatal[label] += 1
            if self.stopped is None and not self.successes and (cause := self._unanimous()) is not None:
                self._stop(cause, fatal=True)
            if (self.stopped is None and self.streak >= self._budget()
                    and now - self._last_success >= self.settings.stall):
                self._stop(self.streak_kinds.most_common(1)[0][0], fatal=False)
        tell = None
        if f is not None and f.retry_after and f.kind is FailureKind.THROTTLED:
            until = now + min(f.retry_after, self.settings.pause_cap)
            if until > self.pause_until:
                known = max(self.pause_until, now)
                self.pause_until = until
                self.pauses += 1
                if self.on_pause is not None and until - known >= max(TELL_MIN, TELL_SHARE * (until - now)):
                    tell = until
        if self.settings.adaptive:
            self._adapt(ticket, a, now)
            self._record(now)
        return tell

    def pause_from_peer(self, until_wall: float) -> None:
        """Apply a pause another process of the run was told by a Retry-After (`until_wall`: wall clock,
        as its on_pause gave it; converted to this process's monotonic clock, capped as our own are)."""
        now = time.monotonic()
        until = now + min(until_wall - time.time(), self.settings.pause_cap)
        with self._lock:
            if until > self.pause_until:
                self.pause_until = until
                self.peer_pauses += 1

    # -- reading --------------------------------------------------------------------------------------
    def current_limit(self) -> int:
        """The limit as a whole number of requests (a share's rounded up): what the pool queues work for."""
        return max(1, math.ceil(self.limit - 1e-9) if self.settings.parts > 1 else int(self.limit))

    def stats(self) -> dict:
        """For the run record: the limit over time (adaptive), attempts by kind, 429/503 counts."""
        with self._lock:
            return {
                "mode": "adaptive" if self.settings.adaptive else "fixed",
                "ceiling" if self.settings.adaptive else "limit": self.settings.limit,
                "rate_limit": self.settings.rate,
                "final_limit": round(self.limit, 1),
                "started_at": self.started_at,
                "limit_history": [list(p) for p in self.history] if self.settings.adaptive else [],
                "attempts": sum(self.kinds.values()),
                "attempt_kinds": dict(self.kinds),
                "http_429": self.kinds.get("HTTP 429", 0),
                "http_503": self.kinds.get("HTTP 503", 0),
                "retry_after_pauses": self.pauses,
                "retry_after_pauses_from_peers": self.peer_pauses,
                "stopped": str(self.stopped) if self.stopped else None,
            }


class LoopGate:
    """The limiter as one event loop sees it: waiters of this loop, and this loop's rate bucket."""

    def __init__(self, run: RunLimiter, rate: float | None) -> None:
        self.run = run
        self.loop = asyncio.get_running_loop()
        self.waiters: deque[asyncio.Future] = deque()
        self.bucket = None
        if rate:
            from aiolimiter import AsyncLimiter

            # A small bucket (0.1 s of this share, at least one request) so bursts stay small.
            burst = max(1.0, rate * 0.1)
            self.bucket = AsyncLimiter(burst, burst / rate)

    async def acquire(self) -> _Ticket:
        """Wait for a slot, any run-wide pause and a rate token; raise Stop once the run stopped."""
        run = self.run
        while True:
            with run._lock:
                now = time.monotonic()
                got = run._try_take(now)
                if got is True and self.bucket is None and run.pause_until <= now:
                    return _Ticket(now, run.in_flight)  # no pause, no rate: nothing to wait for
                if got is not True:
                    fut = self.loop.create_future()
                    self.waiters.append(fut)
            if got is True:
                break
            try:
                # A finite wait even when only a release can free a slot: a missed wake-up costs 1 s, not the run.
                # (asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a cancellation.)
                await asyncio.wait((fut,), timeout=min(got, 1.0))
            finally:
                if not fut.done():  # not woken: it may still be queued
                    fut.cancel()
                    with run._lock:
                        if fut in self.waiters:
                            self.waiters.remove(fut)
        try:
            while (wait := run.pause_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if self.bucket is not None:
                await self.bucket.acquire()
        except BaseException:
            self.release(_Ticket(time.monotonic(), 0), Attempt(cancelled=True))
            raise
        with run._lock:
            if run.stopped is not None:
                run.in_flight -= 1
                self._wake_all(run._wake(self))
                raise run.stopped
            return _Ticket(time.monotonic(), run.in_flight)

    def release(self, ticket: _Ticket, attempt: Attempt) -> None:
        run = self.run
        with run._lock:
            hold = run.hold_for(attempt) if run.stopped is None else 0.0
            tell = run._release(ticket, attempt, time.monotonic(), free=hold <= 0)
            wake = run._wake(self)
        self._wake_all(wake)
        if tell is not None and run.on_pause is not None:
            run.on_pause(time.time() + (tell - time.monotonic()))
        if hold > 0:
            self.loop.call_later(hold, self._free_slot)

    def _free_slot(self) -> None:
        run = self.run
        with run._lock:
            run.in_flight -= 1
            wake = run._wake(self)
        self._wake_all(wake)

    def _wake_all(self, wake: list) -> None:
        for gate, fut in wake:
            if gate is self:
                if not fut.done():
                    fut.set_result(None)
            else:
                try:
                    gate.loop.call_soon_threadsafe(_resolve, fut)
                except RuntimeError:  # that loop has closed
                    pass


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def merge_stats(parts: list[dict]) -> dict:
    """One limits record from several processes' (Ray workers'): counts summed, limits summed over time."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    out = dict(parts[0])
    kinds: Counter = Counter()
    for p in parts:
        kinds.update(p.get("attempt_kinds") or {})
    out["attempt_kinds"] = dict(kinds)
    for key in ("attempts", "http_429", "http_503", "retry_after_pauses", "retry_after_pauses_from_peers",
                "final_limit"):
        out[key] = round(sum(p.get(key) or 0 for p in parts), 1)
    for key in ("ceiling", "limit", "rate_limit"):
        if key in out:
            out[key] = sum(p.get(key) or 0 for p in parts) or None
    out["stopped"] = next((p["stopped"] for p in parts if p.get("stopped")), None)
    base = min(p.get("started_at") or 0.0 for p in parts)
    hists = [[[round(t + (p.get("started_at") or base) - base, 3), v] for t, v in p.get("limit_history") or []]
             for p in parts]
    out["started_at"] = base
    times = sorted({t for h in hists for t, _ in h})
    merged = []
    for t in times:
        total = 0.0
        for hist in hists:
            value = 0.0
            for ht, hv in hist:
                if ht > t:
                    break
                value = hv
            total += value
        merged.append([t, round(total, 1)])
    out["limit_history"] = merged[-HISTORY_POINTS:]
    out["processes"] = len(parts)
    return out


def settings_for(config) -> LimitSettings:
    """The limits a RunConfig asks for (one process's; Ray workers take a `share`)."""
    return LimitSettings(limit=config.concurrency_ceiling, adaptive=config.adaptive, rate=config.rate_limit,
                         pause_cap=config.client.backoff_cap)
