"""When a run stops sending: fail fast on a unanimous verdict before the first success, and stop once
the retry budget is spent. All methods run under the RunLimiter's lock.

Before the first success at most `probe` attempts go out; the run stops (`Stop`, fatal) only on a
unanimous verdict: at least `trip` attempts failed with one cause more requests will not change
(`Failure.fatal_if_unanimous`: refused, DNS, 401/403/404, wrong shape, a redirect) and that cause is at
least `UNANIMOUS` of every attempt that finished before any success. Transient failures (5xx, 429,
resets, timeouts, an unparseable body) never stop it early. Later, a streak of failed attempts longer
than the retry budget stops the run too (not fatal: the remaining lines become error rows at once).
"""

from __future__ import annotations

from collections import Counter

from .failures import Failure
from .limit_settings import GRACE_MAX, grace_for_connect

# Fail fast only on a (nearly) unanimous verdict: the fatal cause is at least this share of the attempts
# that finished before any success (7 of 8: one stray reset or 503 does not hide a 401).
UNANIMOUS = 7 / 8


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


class FailFast:
    """Counts of failures that decide whether the run goes on; `stopped` once it does not."""

    def __init__(self, probe: int, trip: int, grace: float | None, budget: int, stall: float, t0: float) -> None:
        self.probe, self.trip, self.budget, self.stall = probe, trip, budget, stall
        self.scaled = grace is None  # no --probe-grace: the grace follows the probe's connects (`connected`)
        self.grace = GRACE_MAX if grace is None else grace
        self.slowest_connect: float | None = None  # seconds, of the probe's connections made so far
        self.kinds: Counter = Counter()
        self.fatal: Counter = Counter()  # before any success: fatal-if-unanimous failures by label
        self._examples: dict[str, Failure] = {}  # a failure of each label seen, for Stop's cause
        self.successes = 0
        self.streak = 0
        self.streak_kinds: Counter = Counter()
        self.stopped: Stop | None = None
        self.opened = False
        self.first_start: float | None = None
        self.last_success = t0

    def gated(self, now: float, released: int) -> bool:
        """Still probing: no success yet, fewer than `probe` attempts back, and the grace period not
        over (or a fatal failure came back within it)."""
        if self.opened:
            return False
        if self.successes or released >= self.probe or (
                self.first_start is not None and now - self.first_start >= self.grace and not self.fatal):
            self.opened = True
            return False
        return True

    def connected(self, seconds: float) -> bool:
        """A connection of the probe was made in `seconds`: a scaled grace follows the slowest so far.
        True when the grace got shorter (the requests held at the gate should look again)."""
        if self.opened or not self.scaled:
            return False
        if self.slowest_connect is None or seconds > self.slowest_connect:
            self.slowest_connect = seconds
        before, self.grace = self.grace, grace_for_connect(self.slowest_connect)
        return self.grace < before

    def finished(self) -> int:
        return sum(self.kinds.values()) - self.kinds.get("cancelled", 0)

    def count(self, label: str, failure: Failure | None, now: float, started: int, peak: int) -> None:
        """One attempt came back (`failure` None: a score); stop the run when the verdict is in."""
        self.kinds[label] += 1
        if failure is None:
            self.successes += 1
            self.last_success = now
            self.streak = 0
            self.streak_kinds.clear()
            return
        self._examples[label] = failure
        self.streak += 1
        self.streak_kinds[label] += 1
        if not self.successes and failure.fatal_if_unanimous:
            self.fatal[label] += 1
        if self.stopped is None and not self.successes and (cause := self._unanimous()) is not None:
            self._stop(cause, True, started)
        # The budget is at least twice the most ever in flight: a burst sent together may all fail together.
        if (self.stopped is None and self.streak >= max(self.budget, 2 * peak)
                and now - self.last_success >= self.stall):
            self._stop(self.streak_kinds.most_common(1)[0][0], False, started)

    def _unanimous(self) -> str | None:
        """Before any success: the fatal cause (nearly) every finished attempt failed with, once `trip` did."""
        if not self.fatal:
            return None
        label, got = self.fatal.most_common(1)[0]
        return label if got >= self.trip and got >= UNANIMOUS * self.finished() else None

    def _stop(self, kind: str, fatal: bool, started: int) -> None:
        if fatal:
            # Plain counts: how many requests finished (every one failed), how many of them with this cause,
            # how many were sent in all (some were still out when the run stopped).
            finished = self.finished()
            got = self.fatal[kind]
            which = (f"every request that finished ({got} of {finished}; " if got == finished
                     else f"{got} of the {finished} requests that finished (")
            msg = f"service unusable: {kind} on {which}{started} sent, none succeeded), so the run stopped early"
        else:
            top = ", ".join(f"{c} {k}" for k, c in self.streak_kinds.most_common(3))
            msg = f"retry budget spent: {self.streak} attempts in a row failed ({top})"
        self.stopped = Stop(msg, self._examples[kind], fatal)
