"""A service's quota windows, read from its Retry-After: refusals that point at one instant.

A quota of Q requests per fixed window answers every request beyond Q with a 429 whose Retry-After is
the time left until the window ends: refusals received at different times point at the same instant.
A token bucket's refusals do not (each points a fixed delay, or the next token, after its own arrival).
Once WINDOW_STREAK refusals in a row, received over at least WINDOW_SPAN seconds, point at instants no
further apart than half that span (a Retry-After of whole seconds from a token bucket points at
instants as far apart as the refusals were), the service is closed until that instant: the run pauses
until it (limits.py), and each window after sends what the service served in the last one, plus a
probe of 1/64 (at least one; 1/2 when the last window sent its whole allowance and none of it was
refused: a Ray worker's share of the quota grows to what the others leave), then waits for the
window's predicted end. The window's length is the
time between two ends seen; until two were seen, the time from the run's first send to the first end,
a length that can only be too short when the first window's quota was spent (the run began inside
it): a window that ends later than predicted is seen again from its refusals, and its length corrected.
Refusals that point within half a window's length (at least MIN_WAIT) of the last end seen show that
window again, not a new one (read late on a busy loop, or rounded): they give no length.
All methods run under the RunLimiter's lock.
"""

from __future__ import annotations

import math

WINDOW_STREAK = 8  # refusals in a row that must point at one instant
WINDOW_SPAN = 0.002  # seconds over which they must have been received, at least
MIN_WAIT = 0.1  # seconds: a shorter Retry-After (a token bucket's next token) shows no window
SAME_SHARE = 0.5  # an end less than this share of the window's length after the last one seen is that one
PROBE_SHARE = 1 / 64  # a window's allowance: what the last one served, plus this share (at least one)
# ... or plus this share when the last window sent its whole allowance and none of it was refused: the
# quota has room this limiter has not found (a Ray worker's share of it, which served+1 grew by one a window)
GROW_SHARE = 1 / 2


class QuotaWindows:
    """The windows of one RunLimiter's service; `end` None until refusals showed one."""

    def __init__(self, t0: float) -> None:
        self.first: float | None = None  # when the streak of refusals began (received)
        self.count = 0  # refusals in the streak
        self.lo = self.hi = 0.0  # the earliest and latest instants they pointed at
        self.start = t0  # of the window being counted (until the first send: the limiter's start)
        self.sending = False  # a send went out (the first one starts the first window)
        self.end: float | None = None  # of the window being counted (seen, or predicted)
        self.length: float | None = None
        self.seen: float | None = None  # the last end seen from refusals
        self.measured = False  # the length is a time between two ends seen (else a lower bound)
        self.served = 0  # successes in the window being counted
        self.sent = 0  # sends in the window being counted
        self.allowance: int | None = None  # sends allowed in the window being counted (None: any)
        self.windows = 0  # windows seen from refusals
        self.refused = 0  # refusals with a Retry-After in the window being counted

    def on_success(self, sent: float) -> None:
        """A success of a request sent at `sent`: sent after the streak began, it shows the service open
        (successes of requests sent earlier contradict nothing)."""
        self.served += 1
        if self.first is not None and sent >= self.first:
            self.first = None

    def on_other(self) -> None:
        """A failure that is not a refusal with a Retry-After: the streak is broken."""
        self.first = None

    def known(self, now: float, end: float) -> bool:
        """A refusal that points at the window already known (it cuts no rate: the window answers it)."""
        return self.end is not None and abs(end - self.end) <= max(WINDOW_SPAN, 0.05 * (end - now))

    def on_refusal(self, now: float, retry_after: float) -> float | None:
        """A refusal with a positive Retry-After; returns the end of a window it showed (a new one)."""
        end = now + retry_after
        self.refused += 1
        if retry_after < MIN_WAIT or self.known(now, end):
            self.first = None
            return None
        if self.first is None:
            self.first, self.count, self.lo, self.hi = now, 0, end, end
        self.count += 1
        self.lo, self.hi = min(self.lo, end), max(self.hi, end)
        span = now - self.first
        if self.count < WINDOW_STREAK or span < WINDOW_SPAN or self.hi - self.lo > span / 2:
            return None
        end, self.first = self.hi, None
        if self.seen is not None and end - self.seen < max(MIN_WAIT, SAME_SHARE * (self.length or 0.0)):
            # The window already seen, pointed at again: its refusals were read late (a busy loop adds its
            # delay to each Retry-After) or their Retry-After was rounded. No new window, no length from it
            # (taken as one, its length was the few milliseconds between the two readings, or below zero,
            # and rolling into the next window never ended: a Ray worker's loop spun under the lock).
            return None
        if self.seen is not None:  # the time between two ends seen (a mispredicted window keeps its allowance)
            self.length = end - self.seen if not self.measured else min(self.length or math.inf, end - self.seen)
            self.measured = True
        else:
            self.length = end - self.start  # a lower bound: the run may have begun inside this window
        self.windows += 1
        self.end = self.seen = end
        return end

    def wait(self, now: float) -> float:
        """Seconds before the next send may go (0: now); rolls into the next window when one ended."""
        if self.end is None:
            return 0.0
        if now >= self.end:
            self._roll(now)
        if self.allowance is None or self.sent < self.allowance:
            return 0.0
        return max(0.001, self.end - now)

    def on_send(self, now: float) -> None:
        if not self.sending:
            # The first window is counted from the first send, not from the limiter's start: a Ray worker's
            # limiter starts when the worker boots, windows before the run began, and a length counted
            # from there was several windows long (the run then waited out windows that had ended).
            self.sending, self.start = True, now
        self.sent += 1

    def _roll(self, now: float) -> None:
        """The window being counted ended: the next one may send what it served (plus a probe)."""
        assert self.end is not None and self.length is not None
        if self.served:
            room = self.refused == 0 and self.allowance is not None and self.sent >= self.allowance
            self.allowance = self.served + max(1, math.floor(self.served * (GROW_SHARE if room else PROBE_SHARE)))
        length = max(MIN_WAIT, self.length)  # never a spin, whatever was measured
        skipped = math.floor((now - self.end) / length)  # whole windows that ended unseen since
        self.start = self.end + skipped * length
        self.end = self.start + length
        self.served = self.sent = self.refused = 0
