"""Limiters: how many requests may be in flight, and how fast they may start, for the whole run.

The client asks its event loop's gate before every attempt (`acquire`) and reports how the attempt
went (`release` with an `Attempt`: its Failure, if any, and latency). Behind the gates of all
event-loop threads of a process sits one `RunLimiter` (thread-safe), which composes:

- the concurrency limit (concurrency.py): `fixed`, or `adaptive` for `auto`;
- the rate (rate.py): one pacer per process, shared by every thread, at the lower of `--rate-limit`
  (a hard ceiling) and, for `auto`, a rate that follows throttling (CUBIC, as botocore's adaptive mode);
  the lower of the two limits (concurrency, rate) binds;
- Retry-After: it delays that request's retry (the client) and cuts the run's rate, so no burst follows;
  the whole run pauses only when the service says it is closed: a whole window of attempts in a row
  (at least CLOSED_STREAK, and at least the slots of the run's whole limit: `closed_after`) refused with
  a Retry-After and no success between (a quota spent, a maintenance window), or refusals that point at
  one instant (a quota window: windows.py, whose allowance then paces each window). No slot is taken while a pause lasts, and sending
  then resumes through the pacer, never all at once;
- failing fast and the retry budget (failfast.py).

A fixed limit with no rate (no `auto`, no --rate-limit) has a fast path: while the probe gate is open and
nothing pauses, an attempt takes and releases its slot in one short step that counts exactly what the
general path counts (tests/test_limits_fast.py holds the two to the same state); anything else (the probe
gate, a pause, a quota window, a stop, a failure, a cancellation) goes the general way.

A Ray worker holds its own RunLimiter with its share of the limit, rate and probe (`share`): no remote
call sits between a request and its slot; each worker's rate follows the throttling its own requests
meet (the shares converge as TCP flows sharing a link do). A worker judges "closed" on its own refusals
counted against the run's whole limit (its share x `parts`), not its share: a verdict of the run's, since
only a closed-service pause crosses workers:
`on_pause` (set by the Ray worker) hears of one this limiter began or extended by a quarter or more,
the worker passes it on, and each other worker applies it with `pause_from_peer`.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .concurrency import AdaptiveConcurrency, record
from .failfast import FailFast, Stop
from .failures import Failure, FailureKind
from .limit_settings import LimitSettings, settings_for
from .limit_stats import limiter_record, merge_stats
from .rate import Pacer, RateControl
from .windows import QuotaWindows

__all__ = ["Attempt", "LimitSettings", "LoopGate", "RunLimiter", "Stop", "merge_stats", "settings_for"]
# A pause is passed on to the other processes of the run only when it ends this much later than the one
# already known (a share of its length, at least 2 ms): a 429 storm makes a few reports, not one per 429.
TELL_SHARE, TELL_MIN = 0.25, 0.002
RECHECK = 0.01  # seconds: a send's wait for its turn shorter than twice this is slept at once
RECHECK_MAX = 0.1  # seconds: a longer wait looks again at least this often (a rate that rose takes effect)
CLOSED_STREAK = 8  # refusals with a Retry-After in a row (and at least the run's slots) that say "closed"


def _too_fast(f: Failure) -> bool:
    """A 429: too many requests per unit of time, a rate's to answer (cut the rate)."""
    return f.kind is FailureKind.THROTTLED and f.status == 429


def _too_many(f: Failure) -> bool:
    """A 503/504 (with or without Retry-After) or a timeout: too much in flight at once, the concurrency
    limit's to answer (a shedding service's capacity is a number of requests, not a rate)."""
    return f.kind in (FailureKind.OVERLOADED, FailureKind.TIMEOUT) or (
        f.kind is FailureKind.THROTTLED and f.status != 429)


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


class _Ticket:
    __slots__ = ("sent", "in_flight", "paced", "limit")

    def __init__(self, sent: float, in_flight: int, paced: bool = False, limit: float | None = None) -> None:
        self.sent = sent
        self.in_flight = in_flight
        self.paced = paced  # it waited for the rate
        self.limit = limit  # the adaptive limit it was sent under


class RunLimiter:
    """One per process and run, shared by every event-loop thread; all state under one lock."""

    def __init__(self, settings: LimitSettings) -> None:
        s = settings
        self.settings = s
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.started_at = time.time()  # wall clock of t0, so histories of several processes line up
        self._conc = (AdaptiveConcurrency(s.limit, s.floor, s.initial, s.parts, s.growth, self.t0, s.slow_start)
                      if s.adaptive else None)
        self.rate = RateControl(s.rate, s.adaptive and s.adaptive_rate, self.t0, s.parts)
        self.pacer = Pacer(self.rate.binding)
        self.rate_history: list[list] = [[0.0, None if math.isinf(self.rate.binding) else self.rate.binding]]
        self.in_flight = 0  # slots taken (sending, or about to send)
        self.backing_off = 0  # lines waiting out a retry's backoff: not in flight, they take no slot
        self._peak = 0
        self.started = 0
        self.released = 0
        self.failfast = FailFast(s.probe, s.trip, s.grace, s.budget, s.stall, self.t0)
        self.pause_until = 0.0
        self.pauses = 0  # run-wide pauses this limiter began or extended (the service said it was closed)
        self.peer_pauses = 0  # pauses other processes of the run passed on (pause_from_peer) that extended ours
        self._closed_streak = 0  # attempts in a row refused with a Retry-After
        self.windows = QuotaWindows(self.t0)
        # Called (outside the lock) with the wall-clock end of a pause this limiter began or extended
        # enough to tell the run's other processes (a Ray worker sets it; kept by reset()).
        self.on_pause: Callable[[float], None] | None = None
        self._gates: list[LoopGate] = []
        # The slots of a fixed limit with no rate (none adaptive, no --rate-limit): then no pacer, no
        # limit to adapt and no random rounding apply, and LoopGate takes its fast path whenever the gate
        # is open and nothing pauses (`_take_fast`, `_release_fast`); 0: the general path only.
        self._fixed_slots = (max(1, int(s.limit)) if self._conc is None and not self.rate.adaptive
                             and math.isinf(self.rate.binding) else 0)
        self._timed_until = 0.0  # a waiter sleeps until then for the slot slow start's pacing adds next

    @property
    def limit(self) -> float:
        return self._conc.limit if self._conc is not None else float(self.settings.limit)

    @limit.setter
    def limit(self, value: float) -> None:
        if self._conc is not None:  # a fixed limit stays what it was given
            self._conc.limit = self._conc.target = value

    @property
    def stopped(self) -> Stop | None:
        return self.failfast.stopped

    def reset(self) -> None:
        """Start another run on the same gates (a Ray worker kept between runs): forget what the last
        run learned (its limit, rate, failures, stop), keep the event loops' gates."""
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
            self.failfast.opened = True

    def gate(self) -> "LoopGate":
        """The gate for the calling event loop."""
        g = LoopGate(self)
        with self._lock:
            self._gates.append(g)
        return g

    # -- under the lock -----------------------------------------------------------------------------
    def _slots(self) -> int:
        """Requests in flight the limit allows now. A share of the run's limit (a Ray worker's) is rounded
        at random, up with the odds of its fraction, so the run's total is right on average: rounded down,
        4 workers at 1.7 held 4 requests in flight, not 7, and a rate-limited run took 1.2x N/rate instead
        of 0.95x; rounded up, it drew 30% 429s instead of 24% (bench case l, Ray without --threads)."""
        limit = self.limit
        if self.settings.parts > 1:
            whole = int(limit)
            return max(1, whole + (random.random() < limit - whole))
        return max(1, int(limit))

    def _try_take(self, now: float) -> bool | float:
        """True when a slot was taken; else seconds to wait at most before trying again (inf = until woken)."""
        ff = self.failfast
        if ff.stopped is not None:
            raise ff.stopped
        if ff.gated(now, self.released):
            if ff.first_start is None:
                ff.first_start = now
            if self.started >= self.settings.probe:
                return max(0.01, ff.first_start + ff.grace - now)
        if self.pause_until > now:
            return self.pause_until - now  # a slot taken now would only wait for the pause's end
        if (wait := self.windows.wait(now)) > 0:
            return wait  # this quota window's allowance is spent
        if self._conc is not None:
            self._conc.pace(now)
            self._conc.mark(now)
        if self.in_flight >= self._slots():
            # Only a release frees a slot, or slow start's pacing adds one: one waiter at a time sleeps until
            # then (every waiter timed would wake them all for each slot added).
            wait = self._conc.until_growth(now) if self._conc is not None else math.inf
            if wait < math.inf and now >= self._timed_until:
                self._timed_until = now + wait
                return wait
            return math.inf
        self.windows.on_send(now)
        self.in_flight += 1
        self.started += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight
        return True

    def _take_fast(self, now: float) -> bool:
        """A fixed limit with no rate, its gate open, no pause, no quota window, a slot free: take it as
        `_try_take` and `_send_turn` would (every check they make passes and the pacer, unbounded and
        past every pause, lets the send go at once), without their calls. False: nothing was taken, the
        general path decides."""
        ff = self.failfast
        if (not ff.opened or ff.stopped is not None or self.pause_until > now or self.windows.end is not None
                or self.in_flight >= self._fixed_slots or self.pacer._hold > now):
            return False
        w = self.windows  # windows.on_send
        if not w.sending:
            w.sending, w.start = True, now
        w.sent += 1
        self.in_flight += 1
        self.started += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight
        self.pacer._next += 1  # pacer.take at an unbounded rate, no hold
        return True

    def _release_fast(self, ticket: _Ticket, now: float) -> None:
        """A success under a fixed limit with no rate, the run not stopped: counted as `_release` counts
        it (fail-fast's counts, the rate's answers, the quota windows' served), without the calls that
        have nothing to do then (no adaptive limit or rate, no pause, a rate history that stays unbounded)."""
        self.in_flight -= 1
        self.released += 1
        ff = self.failfast  # failfast.count("ok", None, ...)
        ff.kinds["ok"] += 1
        ff.successes += 1
        ff.last_success = now
        ff.streak = 0
        if ff.streak_kinds:
            ff.streak_kinds.clear()
        self.rate._answers += 1  # rate.on_answer(False, False)
        self._closed_streak = 0
        w = self.windows  # windows.on_success
        w.served += 1
        if w.first is not None and ticket.sent >= w.first:
            w.first = None

    def _send_turn(self, now: float) -> tuple[float, float]:
        """This attempt's turn at the run's rate (after any pause), and the seconds until it, at the rate now."""
        self.pacer.hold_until(self.pause_until)
        turn = self.pacer.take(now)
        return turn, self.pacer.wait(turn, now)

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

    def _nudge(self, now: float) -> list[tuple["LoopGate", asyncio.Future]]:
        """Slow start's pacing will add a slot and no waiter sleeps until then: one waiter to wake (it
        finds no slot and sleeps until the pacing adds one)."""
        if self._conc is None or now < self._timed_until or self._conc.until_growth(now) == math.inf:
            return []
        for g in self._gates:
            while g.waiters:
                fut = g.waiters.popleft()
                if not fut.done():
                    return [(g, fut)]
        return []

    def hold_for(self, a: Attempt) -> float:
        """Adaptive: how long a refused attempt keeps its slot. A 503/429 comes back at once; freeing its
        slot at once would let the next request spin into the same refusal many times per round trip."""
        f = a.failure
        if self._conc is None or f is None or not f.overload or f.kind is FailureKind.TIMEOUT:
            return 0.0
        return self._conc.hold()

    def _release(self, ticket: _Ticket, a: Attempt, now: float, free: bool = True) -> float | None:
        """Count the attempt and adapt; returns the end (monotonic) of a pause to tell on_pause, if any."""
        if free:
            self.in_flight -= 1
        self.released += 1
        if a.cancelled:
            self.failfast.kinds[a.label] += 1
            return None
        f = a.failure
        self.failfast.count(a.label, f, now, self.started, self._peak)
        window = max(16, self._slots())
        self.rate.on_answer(f is not None and _too_fast(f), f is not None and not _too_fast(f))
        if f is None:
            self._closed_streak = 0
            self.windows.on_success(ticket.sent)
            self.rate.on_success(now, window, a.latency)
        elif _too_fast(f) and not (f.retry_after and self.windows.known(now, now + f.retry_after)):
            self.rate.on_throttle(ticket.sent, now, window)
        if self._conc is not None:
            if f is None:
                self._conc.on_ok(a.latency, ticket.in_flight, ticket.paced, ticket.sent, now, ticket.limit)
            elif _too_many(f):
                self._conc.on_drop(ticket.sent, ticket.in_flight, now, f.kind is not FailureKind.TIMEOUT)
            else:
                self._conc.on_other_failure()
            self._conc.end_of_attempt(now, ticket.sent)
            self._conc.mark(now)
        tell = self._closed(f, now)
        self.pacer.set_rate(self.rate.binding, now)
        record(self.rate_history, now - self.t0, self.pacer.rate)
        return tell

    def _closed(self, f: Failure | None, now: float) -> float | None:
        """A run-wide pause when the service says it is closed (see the module's docstring); returns its
        end when on_pause should hear of it. A Retry-After that is not a positive number (0, a date in
        the past, garbage) never pauses; a huge one is capped at `pause_cap`."""
        if f is None or f.kind is not FailureKind.THROTTLED or not f.retry_after or not f.retry_after > 0:
            if f is not None:
                self._closed_streak = 0
                self.windows.on_other()
            return None
        self._closed_streak += 1
        if (end := self.windows.on_refusal(now, f.retry_after)) is not None:
            self.rate.lift()  # a quota window: sends follow what each window served (windows.py)
        elif self._closed_streak < self.closed_after():
            return None
        until = now + min((end or now + f.retry_after) - now, self.settings.pause_cap)
        if until <= self.pause_until:
            return None
        known = max(self.pause_until, now)
        self.pause_until = until
        self.pauses += 1
        if self.on_pause is not None and until - known >= max(TELL_MIN, TELL_SHARE * (until - now)):
            return until
        return None

    def closed_after(self) -> int:
        """Refusals with a Retry-After in a row that say the service is closed: CLOSED_STREAK, and at least
        the run's whole limit (a round trip of the run's, not of a share's). A Ray worker (one of `parts`)
        sees only its share of the run's requests: a token bucket's burst refuses a whole round trip of one
        small share easily while the other workers are served, and its pause stops every worker. Counted
        against the run's limit, a worker's streak is as rare as one process's would be; a closed service
        refuses every worker's requests, so each streak still grows to it (no success between)."""
        return max(CLOSED_STREAK, int(self.limit * self.settings.parts))

    def pause_from_peer(self, until_wall: float) -> None:
        """Apply a pause another process of the run began (`until_wall`: wall clock, as its on_pause gave
        it; converted to this process's monotonic clock, capped as our own are)."""
        now = time.monotonic()
        until = now + min(until_wall - time.time(), self.settings.pause_cap)
        with self._lock:
            if until > self.pause_until:
                self.pause_until = until
                self.peer_pauses += 1

    # -- reading --------------------------------------------------------------------------------------
    def lines_waiting(self) -> int:
        """Lines between attempts (in their backoff): a pool that follows the limit does not count them."""
        with self._lock:
            return self.backing_off

    def current_limit(self) -> int:
        """The limit as a whole number of requests (a share's rounded up): what the pool queues work for. In
        slow start, the limit its pacing is heading to: lines wait for the slots it adds (fed for the paced
        limit alone, none waited when it rose, and it rose only as a release looked at it)."""
        limit = max(self.limit, self._conc.target) if self._conc is not None else self.limit
        return max(1, math.ceil(limit - 1e-9) if self.settings.parts > 1 else int(limit))

    def stats(self) -> dict:
        """For the run record (limit_stats.limiter_record)."""
        with self._lock:
            return limiter_record(self)


class LoopGate:
    """The limiter as one event loop sees it: the waiters of this loop."""

    def __init__(self, run: RunLimiter) -> None:
        self.run = run
        self.loop = asyncio.get_running_loop()
        self.waiters: deque[asyncio.Future] = deque()

    async def acquire(self) -> _Ticket:
        """Wait for a slot, then for the send's turn at the run's rate (after any run-wide pause);
        raise Stop once the run stopped."""
        run = self.run
        if run._fixed_slots:
            with run._lock:
                now = time.monotonic()
                if run._take_fast(now):
                    return _Ticket(now, run.in_flight)
        timed = False  # this waiter sleeps for the slot slow start's pacing adds next
        while True:
            with run._lock:
                now = time.monotonic()
                if timed:  # awake, early (a timer's rounding) or late: no one sleeps for that slot now
                    run._timed_until = 0.0
                got = run._try_take(now)
                if got is True:
                    nudge = run._nudge(now)
                    turn, wait = run._send_turn(now)
                    if wait <= 0:
                        run.rate.on_send(now)
                        ticket = _Ticket(now, run.in_flight, limit=run.limit)  # no pause, no rate to wait for
                    break
                timed = run._timed_until == now + got
                fut = self.loop.create_future()
                self.waiters.append(fut)
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
        if nudge:
            self._wake_all(nudge)
        if wait <= 0:
            return ticket
        try:
            while wait > 0:  # the rate may change while it waits (rate.Pacer): look again halfway, or sooner
                await asyncio.sleep(wait if wait < 2 * RECHECK else min(wait / 2, RECHECK_MAX))
                with run._lock:
                    wait = run.pacer.wait(turn, time.monotonic())
        except BaseException:
            self.release(_Ticket(time.monotonic(), 0), Attempt(cancelled=True))
            raise
        with run._lock:
            if run.stopped is not None:
                run.in_flight -= 1
                self._wake_all(run._wake(self))
                raise run.stopped
            now = time.monotonic()
            run.rate.on_send(now)
            return _Ticket(now, run.in_flight, paced=True, limit=run.limit)

    def connected(self, seconds: float) -> None:
        """A new connection to the service took `seconds` (the client's connector says so): while the
        probe gate is closed, a scaled grace follows it, and the requests held at the gate look again
        when it got shorter (they wait for the grace that was known when they queued)."""
        run = self.run
        if run.failfast.opened:  # read without the lock: once open, the gate stays open
            return
        with run._lock:
            if not run.failfast.connected(seconds):
                return
            wake = [(g, g.waiters.popleft()) for g in run._gates for _ in range(len(g.waiters))]
        self._wake_all(wake)

    def retry_base(self, failure: Failure) -> float | None:
        """The first backoff ceiling this limiter asks for a retry after `failure` (None: the client's).
        `auto`, a 503/504 without Retry-After: about one unloaded round trip (the slot's hold), since the
        limit, which the refusal just cut, keeps the load in check, not the wait: the client's base, many
        round trips of a fast service, kept a line refused near the run's end waiting after all others."""
        run = self.run
        if run._conc is None or failure.kind is not FailureKind.OVERLOADED:
            return None
        return run._conc.hold()

    def backing_off(self, lines: int) -> None:
        """`lines` more (or fewer) lines of this loop wait out a retry's backoff."""
        with self.run._lock:
            self.run.backing_off += lines

    def release(self, ticket: _Ticket, attempt: Attempt) -> None:
        run = self.run
        if run._fixed_slots and attempt.failure is None and not attempt.cancelled:
            with run._lock:
                fast = run.failfast.stopped is None
                if fast:
                    run._release_fast(ticket, time.monotonic())
                    # the usual case: nobody waits (a fixed limit runs as many workers as slots)
                    wake = run._wake(self) if any(g.waiters for g in run._gates) else None
            if fast:
                if wake:
                    self._wake_all(wake)
                return
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
