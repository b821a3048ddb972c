"""`auto`'s concurrency limit: how many requests may be in flight, learnt from latency and overload.

Slow start, then a gradient on latency: by Little's law capacity ~ in-flight x baseline / latency,
plus a small headroom; a multiplicative cut on overload (503/504 without Retry-After, timeouts: the
service has too much in flight); never below the floor, never above the ceiling. Throttling (429, a
503 with Retry-After) is the rate's to answer (rate.py), not this limit's. All methods run under the
RunLimiter's lock.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

HISTORY_POINTS = 1000
# Latency up to this multiple of the lowest seen is not queueing (client overhead and noise on a busy
# machine add some); above it, the limit is set where latency would come back to it.
TOLERANCE = 1.3
# After a cut on latency (queueing), a window that shows none grows the limit by this factor: the cut may
# have followed the client's own delays on a busy machine (Little's law then reads the client's throughput,
# not the service's), and on a queueing service too many in flight cost only latency. After a drop (a
# shedding service refused the overshoot), or from a profile's known capacity, by small steps.
REGROWTH = 1.25
# The service is flaky, not full, while other failures (500s, resets, bodies that do not parse) are at
# least as many as overload replies among this many of the latest failures: its 503s then cut nothing.
FAILURE_MEMORY = 32
# Slow start's growth goes out over this share of a round trip: the limit rises towards what the successes
# earned at (1 + growth) per PACE round trips at most, so a wave of successes that came back together sends
# a stream, not a burst: a shedding service's or a proxy queue's first refusal comes back while it flows.
PACE = 0.25
# Slow start's first step: the replies of the first round trip (requests sent before any reply came back: the
# probe's) grow the target by this factor, and the limit follows at this factor per PACE round trips, so a
# queueing service's capacity is reached in the second round trip. It is safe because a queueing service
# only queues the overshoot (a round trip later, slow start ends on its latency) and a shedding one answers
# it at once (the first 503 ends slow start just under the in-flight count it met, while the pace flows).
FIRST_STEP = 8.0
# A cut on latency is judged on JUDGED round trips of replies sent once the old limit's replies were all
# back (before, they waited behind the old queue draining): when, with fewer in flight, the replies per
# second fell by more than this share of the in-flight count's fall, the service was not full (a full one,
# queueing, serves as many per second with fewer in flight): the cut read a slower client (a busy machine's
# own loop) or network as the service's queue. It is undone, and that latency is the lowest seen from then
# on. (Latency is no judge: a service of constant latency queues in whole waves, and fewer in flight but as
# many waves waits as long.)
UNDO_SHARE = 0.5
JUDGED = 2
# A round trip with 503s cuts the limit to just under the least in-flight count one of them was sent at (a
# shedding service refuses only beyond its capacity), by this factor at least, by x0.75-0.9 at most.
DROP_LEAST = 0.97


class AdaptiveConcurrency:
    """The adaptive limit of one RunLimiter (`parts` of them share a Ray run's limit)."""

    def __init__(self, ceiling: int, floor: int, initial: int, parts: int, growth: float, t0: float,
                 slow_start: bool = True) -> None:
        self.ceiling, self.floor, self.parts, self.growth, self.t0 = ceiling, floor, parts, growth, t0
        self.limit = float(min(ceiling, max(floor, initial)))
        self.initial = self.limit
        self.history: list[list[float]] = [[0.0, self.limit]]
        self.slow_start = slow_start  # off: the start is a known capacity (a profile's), probed from there
        self.target = self.limit  # slow start: where the successes' growth has got (the limit follows, paced)
        self._paced_at = t0
        self._first_reply = math.inf  # when the first success came back: replies sent before it are the first step's
        self._pace_growth = FIRST_STEP - 1  # the pace's growth: the first step's until a later reply grows the target
        self._rtt = math.inf  # the lowest latency of a success: slow start paces its growth over it
        self._clear_peak = 0  # slow start: the most in flight at which a success showed no queueing
        self.baseline = math.inf
        self._last_cut = -math.inf
        self._old_done = -math.inf  # when the latest reply to a request sent before the last cut came back
        # a cut on latency not yet judged: (the limit before it, its window's median in flight, the replies per
        # second of the round trips before it), and the clean round trips after it: [replies, seconds, windows]
        self._cut_from: tuple[float, float, float] | None = None
        self._after = [0, 0.0, 0]
        self._spans: deque[tuple[int, float]] = deque(maxlen=JUDGED)  # the latest windows: (replies, seconds)
        self._win_ok: list[tuple[float, int, float, float]] = []
        self._win_drops = 0
        self._win_refused_at = math.inf  # the least in-flight count a 503 of this window was sent at
        self._win_other = 0
        self._failures: deque[bool] = deque(maxlen=FAILURE_MEMORY)  # the latest failures: True for a drop
        self._recent: deque[bool] = deque(maxlen=16)
        self._last_window: tuple[float, float] | None = None
        self._win_count = 0
        self._win_target = max(3, int(self.limit))
        self._win_start = t0
        # the limit grows by small steps: the last cut was a drop (503/504, timeout), or it began at a known capacity
        self._careful = not slow_start

    def hold(self) -> float:
        """How long a refused attempt keeps its slot: about one unloaded round trip."""
        return min(2.0, self.baseline if self.baseline < math.inf else 0.1)

    def on_ok(self, latency: float, in_flight: int, paced: bool, sent: float = math.inf, now: float = 0.0,
              limit: float | None = None) -> None:
        """A success (`limit`: the limit when it was sent). In slow start, the target grows by `growth` per
        success that saw no queueing (x(1 + growth) per round trip) and the limit follows it, paced; not
        when the request waited for the rate (then the rate binds, not this limit). Slow start ends as soon
        as most recent replies show queueing, no lower than the most in flight seen without queueing. A
        reply to a request sent before the last cut judges nothing (it queued behind the old limit: judged
        again, it cut the limit a second time, to 2/3 of a queueing service's capacity)."""
        if sent <= self._last_cut:
            return
        self._rtt = min(self._rtt, max(latency, 1e-4))
        self._win_ok.append((latency, in_flight, in_flight / max(limit or self.limit, 1.0), sent))
        if not self.slow_start:
            return
        first = sent < self._first_reply  # a reply of the first round trip: the first step's
        self._first_reply = min(self._first_reply, now)
        queued = latency > TOLERANCE * self.baseline
        self._recent.append(queued)
        if not queued:
            self._clear_peak = max(self._clear_peak, in_flight)
        if not queued and not paced:
            if self.limit >= self.target:
                self._paced_at = max(self._paced_at, now)  # the pace starts now, not when the limit got there
            growth = self.initial_growth() if first else self.growth
            if not first:
                self._pace_growth = self.growth
            self.target = min(self.ceiling, max(self.target, self.limit) + growth)
            self.pace(now)
        elif queued and sum(self._recent) * 2 > len(self._recent) >= 8:
            target = statistics.median(n * TOLERANCE * self.baseline / max(lat, 1e-6)
                                       for lat, n, _, _ in self._win_ok[-len(self._recent):])
            # Down to the limit of a round trip ago at most (slow start grows x(1 + growth) per round trip),
            # and never below what went through without queueing: Little's law on a reply that waited for a
            # busy client's own loop reads that wait as the service's queue.
            self._end_slow_start(max(target, self.limit / (1 + self.growth), self._clear_peak), now)

    def initial_growth(self) -> float:
        """The target's growth per reply of the first round trip: x FIRST_STEP over it (never less than
        slow start's own growth)."""
        return max(self.growth, FIRST_STEP - 1)

    def _end_slow_start(self, limit: float, now: float) -> None:
        """Leave slow start at `limit` (never above the limit in use) and judge the next window on replies
        to requests sent from now on."""
        self.slow_start = False
        self.limit = self.target = max(self.floor, min(self.ceiling, self.limit, limit))
        self._last_cut = now
        self._win_ok, self._win_drops, self._win_other, self._win_count = [], 0, 0, 0
        self._win_target, self._win_start = max(3, int(self.limit)), now

    def pace(self, now: float) -> None:
        """Slow start: move the limit towards its target, by (1 + growth) per PACE round trips at most (by
        FIRST_STEP in the first step)."""
        if self.slow_start and self.limit < self.target and now > self._paced_at and self._rtt < math.inf:
            rise = (1 + self._pace_growth) ** ((now - self._paced_at) / (PACE * self._rtt))
            self.limit = min(self.target, self.limit * rise)
        self._paced_at = max(self._paced_at, now)

    def until_growth(self, now: float) -> float:
        """Seconds until pacing adds a slot to the limit (inf: it adds none)."""
        if not self.slow_start or self.limit >= self.target or self._rtt == math.inf:
            return math.inf
        nxt = min(self.target, math.floor(self.limit) + 1)
        wait = PACE * self._rtt * math.log((nxt + 1e-6) / self.limit) / math.log(1 + self._pace_growth)
        return max(0.001, wait - (now - self._paced_at))  # a timer of less than 1 ms may fire at once (libuv)

    def on_drop(self, sent: float, in_flight: int, now: float, refused: bool = False) -> None:
        """An overload reply to a request sent after the last cut (earlier ones were answered already).
        In slow start, one sent beyond the initial limit ends it at once (unless the service is flaky): the
        service refused the in-flight count that request made, so the limit goes just under it (waiting for the window's end let slow
        start's growth overshoot a proxy's queue by a round trip of refusals). `refused`: a 503 (answered at
        once), not a timeout: the window's cut goes no lower than just under its in-flight count."""
        if sent <= self._last_cut:
            return
        self._failures.append(True)
        if self.slow_start and in_flight > self.initial and not self.flaky():
            self._careful = True
            self._end_slow_start(in_flight - 1, now)
            return
        self._win_drops += 1
        if refused:
            self._win_refused_at = min(self._win_refused_at, in_flight)

    def on_other_failure(self) -> None:
        """A failure that is not overload (a 500, a reset, a body that does not parse): when as many come
        as drops, the service is flaky, not full, and its 503s cut nothing."""
        self._win_other += 1
        self._failures.append(False)

    def flaky(self) -> bool:
        """Other failures at least as many as drops among the latest FAILURE_MEMORY failures: a flaky
        service, whose 503s say nothing of its capacity (ending slow start there held a Ray worker's limit,
        and the lines the driver gives it, at its few lines not waiting out a backoff)."""
        drops = sum(self._failures)
        return 2 * drops <= len(self._failures)

    def end_of_attempt(self, now: float, sent: float = math.inf) -> None:
        """Count the attempt; at the end of a window (about a round trip) adapt the limit. An attempt sent
        before the last cut counts for no window: the first window after a cut is the first round trip of
        replies to the new limit (counted with the old limit's replies it ended early, on a few of them)."""
        if sent <= self._last_cut:
            self._old_done = max(self._old_done, now)
            return
        self._win_count += 1
        rtt = self.baseline if self.baseline < math.inf else 0.05
        # A window is about one round trip: as many completions as the limit when it began.
        if self._win_count < self._win_target and now - self._win_start < 4 * rtt:
            return
        ok, drops, other = self._win_ok, self._win_drops, self._win_other
        span = (self._win_count, max(now - self._win_start, 1e-6))
        self._spans.append(span)
        refused_at, self._win_refused_at = self._win_refused_at, math.inf
        self._win_ok, self._win_drops, self._win_other, self._win_count, self._win_start = [], 0, 0, 0, now
        self._win_target = max(3, int(self.limit))
        if drops and other < drops and not self.flaky():
            f = drops / (drops + len(ok))
            cut = self.limit * min(0.9, max(0.75, 1 - f))
            if self.parts == 1 and refused_at < math.inf:
                # A shedding service refused only beyond the in-flight count its first 503 met: no lower than
                # just under it, and at least x0.97 (a Ray worker's count is not the service's: x0.75-0.9).
                cut = max(cut, min(refused_at - 1, DROP_LEAST * self.limit))
            self.limit = self.target = max(self.floor, cut)
            self.slow_start, self._careful = False, True
            self._last_cut, self._cut_from = now, None
        elif len(ok) >= 3:
            self._gradient(ok, now, span)

    def _gradient(self, ok: list[tuple[float, int, float, float]], now: float,
                  span: tuple[int, float] = (0, 0.0)) -> None:
        median = statistics.median(lat for lat, _, _, _ in ok)
        self.baseline = min(self.baseline, median)
        if self.baseline <= 0:
            return
        n_median = statistics.median(n for _, n, _, _ in ok)
        if self._cut_from is not None:
            if min(s for _, _, _, s in ok) <= self._old_done:
                return  # sent while the old limit's replies still came back: they waited behind its queue
            after = self._after
            after[0], after[1], after[2] = after[0] + span[0], after[1] + span[1], after[2] + 1
            if after[2] < JUDGED:
                return
            (before, n_cut, rate_cut), self._cut_from = self._cut_from, None
            if (median > TOLERANCE * self.baseline and n_median < 0.95 * n_cut
                    and after[0] / after[1] < rate_cut * (1 - UNDO_SHARE * (1 - n_median / n_cut))):
                # Fewer in flight, the old queue gone, and fewer replies per second: the service was not
                # full, so its latency was no queue but a slower client or network. Undo the cut; this
                # latency is the lowest seen now (cut after cut, 0.7x a window each, took a 200-capacity
                # run to 9).
                self.baseline = median
                self.limit = self.target = max(self.limit, before)
                self._last_window = (n_median, median)
                return
        last, self._last_window = self._last_window, (n_median, median)
        if median > TOLERANCE * self.baseline and last and n_median < 0.95 * last[0] and median >= 0.97 * last[1]:
            # Fewer in flight did not bring latency down: not our queueing but a slower machine or network.
            # Let the baseline follow it instead of cutting the limit towards the floor.
            self.baseline = min(median, 1.1 * self.baseline)
        elif median > TOLERANCE * self.baseline:
            # Queueing: the in-flight count at which latency would be TOLERANCE x the baseline (Little's law);
            # leaving slow start, no lower than what went through without queueing.
            target = statistics.median(n * TOLERANCE * self.baseline / max(lat, 1e-6) for lat, n, _, _ in ok)
            least = max(target, 0.7 * self.limit, self._clear_peak if self.slow_start else 0)
            self.slow_start = False
            cut = max(self.floor, min(self.ceiling, self.limit, least))
            self.target = cut
            if cut < self.limit:
                replies, seconds = sum(c for c, _ in self._spans), sum(d for _, d in self._spans)
                self._cut_from, self._after = (self.limit, n_median, replies / seconds), [0, 0.0, 0]
                self.limit, self._last_cut, self._careful = cut, now, False
        elif not self.slow_start and statistics.median(use for _, _, use, _ in ok) >= 0.8:
            # No queueing while the limit is in use (the in-flight count of each reply against the limit it
            # was sent under: against the limit now, a window after a step up looked unused and every other
            # one grew): probe upwards, by REGROWTH after a cut on latency, else by a small step (together
            # the run's limiters step up as one would: sqrt of the whole limit / 2).
            step = max(1.0, math.sqrt(self.limit * self.parts) / 2) / self.parts
            if not self._careful:
                step = max(step, (REGROWTH - 1) * self.limit)
            self.limit = self.target = min(self.ceiling, self.limit + step)

    def mark(self, now: float) -> None:
        """The limit's timeline gets a point when the limit changed."""
        record(self.history, now - self.t0, self.limit)


def record(history: list[list], t: float, value: float | None) -> None:
    """Append a (time, value) point to a timeline when the value changed (whole units, or to/from None);
    points closer than 20 ms replace the last; halved when longer than HISTORY_POINTS."""
    t = round(t, 3)
    last = history[-1]
    rounded = None if value is None or math.isinf(value) else round(value, 1)
    if (last[1] is None) == (rounded is None) and (rounded is None or int(last[1]) == int(rounded)):
        return
    if t - last[0] < 0.02 and len(history) > 1:
        last[1] = rounded
    else:
        history.append([t, rounded])
    if len(history) > HISTORY_POINTS:
        history[:] = history[::2] + ([history[-1]] if len(history) % 2 == 0 else [])
