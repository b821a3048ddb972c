"""The run's send rate: a pacer every attempt passes, and the controller that sets its rate for `auto`.

Pacer: one schedule per process (GCRA, the leaky bucket as a meter: each send reserves the next free
instant, at most `burst` requests early), shared by every event-loop thread. `--rate-limit` is its hard
ceiling; `auto` adds a rate of its own (RateControl) and the lower binds. A run-wide pause moves the
schedule past its end, so sending resumes through the bucket at the run's rate, never all at once.

RateControl follows throttling as botocore's adaptive retry mode does (`botocore/retries/adaptive.py`,
`throttling.py`): unbounded until the first throttle (429, or 503 with or without Retry-After), then
cut multiplicatively from the rate actually measured, and regrown along a CUBIC curve towards (and past)
the rate the service served when it throttled (the rate sent then, when nothing was served): fast far
below it, flat near it, probing beyond it. CUBIC rather than
AIMD because a rate limiter's ceiling is a fixed number to return to: AIMD's linear regrowth is either
too slow at high rates or too coarse at low ones, while CUBIC's plateau sits just under the ceiling
whatever its scale. Two changes to botocore's: the cut goes to 95% of the rate the service really
served over the last round trip when that is known (a 10x overshoot lands under the ceiling in one step
instead of six cuts of 0.7), and a cut happens at most once per round trip (only attempts sent after
the last cut count, and a round trip apart), so one burst of refusals is one cut, not a collapse.
All methods are called under the RunLimiter's lock.
"""

from __future__ import annotations

import math
from collections import deque

CUBIC_C = 0.4  # botocore's scale constant: rate units per second cubed
BETA = 0.7  # botocore's cut, when the served rate is not known
SERVED_SHARE = 0.95  # a cut goes to this share of the rate the service served
GROW_CAP = 2.0  # the rate never grows beyond this multiple of the measured send rate (botocore's)
MIN_RATE = 0.5  # requests per second: a rate is never cut below it (botocore's)
BURST_SECONDS = 0.1  # the pacer lets this much of its rate (at least one request) go at once
METER_EVENTS = 256
FLAKY_SHARE = 2.0  # 429s fewer than this many times the other failures do not cut the rate
MIN_SPAN = 0.25  # seconds: rates are measured over at least this long (and at least a round trip)


class Meter:
    """Events per second over the most recent `k` of them, counted up to now (a pause lowers it) and
    over at least `min_span` seconds (a round trip: a wave of replies that came back together is one
    round trip's worth, not a rate of thousands per second)."""

    def __init__(self) -> None:
        self.times: deque[float] = deque(maxlen=METER_EVENTS)

    def add(self, now: float) -> None:
        self.times.append(now)

    def rate(self, now: float, k: int, min_span: float = 0.0) -> float | None:
        """None until `min(k, 8)` events were seen."""
        k = min(len(self.times), max(8, k))
        if k < 8:
            return None
        span = max(now - self.times[-k], min_span)
        return k / span if span > 0 else None


class Pacer:
    """When each send may leave: `rate` per second (inf = at once), `burst` of them early at most."""

    def __init__(self, rate: float = math.inf) -> None:
        self.rate = rate
        self._tat = 0.0  # theoretical arrival time of the next send (monotonic)

    def reserve(self, now: float) -> float:
        """Seconds this send waits for its turn (0 = go); the turn is taken."""
        tat = max(self._tat, now)
        if math.isinf(self.rate):
            self._tat = tat
            return tat - now
        interval = 1.0 / self.rate
        tolerance = max(0.0, BURST_SECONDS * self.rate - 1) * interval
        send = max(now, tat - tolerance)
        self._tat = tat + interval
        return send - now

    def hold_until(self, until: float) -> None:
        """No send before `until` (a run-wide pause); after it, sends go at the rate again."""
        self._tat = max(self._tat, until)


class RateControl:
    """The adaptive rate of `auto` (inf until the first throttle), under `ceiling` (--rate-limit)."""

    def __init__(self, ceiling: float | None, adaptive: bool, t0: float, parts: int = 1) -> None:
        self.ceiling = ceiling if ceiling else math.inf
        self.adaptive = adaptive
        # `parts` controllers share the run's rate (Ray workers), each with its share: each regrows 1/parts
        # as fast (and floors at 1/parts of MIN_RATE), so together they follow the curve one would.
        self.c = CUBIC_C / parts
        self.min_rate = MIN_RATE / parts
        self.rate = math.inf  # the adaptive rate alone
        self.sends = Meter()
        self.served = Meter()
        self.cuts = 0
        self.rtt = 0.0  # a moving average of the latency of successes: the meters' shortest span
        self._w_max = 0.0
        self._k = 0.0
        self._last_cut = -math.inf
        self._answers = self._throttles = self._others = 0  # since the last cut
        self.t0 = t0

    @property
    def binding(self) -> float:
        """The rate the pacer enforces: the lower of the adaptive rate and the ceiling."""
        return min(self.rate, self.ceiling)

    def on_send(self, now: float) -> None:
        if self.adaptive:
            self.sends.add(now)

    def on_success(self, now: float, window: int, latency: float) -> None:
        if not self.adaptive:
            return
        self.served.add(now)
        self.rtt = latency if not self.rtt else 0.9 * self.rtt + 0.1 * latency
        if math.isinf(self.rate):
            return
        grown = self.c * (now - self._last_cut - self._k) ** 3 + self._w_max
        measured = self.sends.rate(now, window, max(self.rtt, MIN_SPAN))
        if measured is not None:
            grown = min(grown, GROW_CAP * measured)
        self.rate = max(self.rate, min(grown, self.ceiling))

    def lift(self) -> None:
        """A quota's windows answer the throttling now (windows.py): the adaptive rate steps aside."""
        self.rate, self._w_max = math.inf, 0.0

    def on_answer(self, throttled: bool, other_failure: bool = False) -> None:
        """Every attempt answered; `other_failure`: any failure but a 429 (429s that come with half as many
        other failures or more are a flaky service, not a rate limit)."""
        self._answers += 1
        self._throttles += throttled
        self._others += other_failure

    def on_throttle(self, sent: float, now: float, window: int) -> bool:
        """A throttled attempt sent at `sent`; True when it cut the rate: at most once per round trip
        (and MIN_SPAN), after 8 answers at least, and not when other failures came half as often as 429s or
        more (a flaky service answers some 429s whatever the rate: cutting would only slow the run down)."""
        if not self.adaptive or sent <= self._last_cut or now - self._last_cut < max(self.rtt, MIN_SPAN):
            return False
        if self._answers < 8 or FLAKY_SHARE * self._others >= self._throttles:
            return False  # too little seen yet, or the 429s do not behave as a rate limit's
        measured = self.sends.rate(now, window, max(self.rtt, MIN_SPAN))
        ref = min(x for x in (measured, self.rate, self.binding) if x is not None)
        if math.isinf(ref):
            return False  # nothing measured yet: the concurrency limit and the hold answer this one
        served = self.served.rate(now, window, max(self.rtt, MIN_SPAN))
        new = SERVED_SHARE * served if served is not None else BETA * ref
        new = max(self.min_rate, min(new, BETA * ref if served is None else ref * SERVED_SHARE, self.ceiling))
        # CUBIC's plateau sits at the rate the service served, not at the rate sent when it refused: a first
        # throttle comes after sending unbounded, far above a limiter's rate, and a curve back to that
        # rate regrew past the limiter within about a second.
        w_max = ref if served is None else max(new, min(ref, served))
        self._w_max, self._last_cut = w_max, now
        self._k = ((w_max - new) / self.c) ** (1 / 3) if w_max > new else 0.0
        self.rate = new
        self.cuts += 1
        self._answers, self._throttles, self._others = 0, 0, 0
        return True
