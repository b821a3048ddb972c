"""The run's send rate: a pacer every attempt passes, and the controller that sets its rate for `auto`.

Pacer: one schedule per process (GCRA, the leaky bucket as a meter: each send reserves the next free
instant, at most `burst` requests early), shared by every event-loop thread. `--rate-limit` is its hard
ceiling; `auto` adds a rate of its own (RateControl) and the lower binds. A run-wide pause moves the
schedule past its end, so sending resumes through the bucket at the run's rate, never all at once.

RateControl follows throttling as botocore's adaptive retry mode does (`botocore/retries/adaptive.py`,
`throttling.py`): unbounded until the first throttle (429, or 503 with or without Retry-After), then
cut multiplicatively from the rate actually measured, and regrown along a CUBIC curve towards (and past)
the rate the service served when it throttled (the rate sent then, when nothing was served): fast far
below it, flat near it, probing beyond it. CUBIC rather than AIMD because a rate limiter's ceiling is a
fixed number to return to: AIMD's linear regrowth is either too slow at high rates or too coarse at low
ones, while CUBIC's plateau sits just under the ceiling. Changes to botocore's, all so the control is
the same at 6 req/s and at 6000:
- the curve is relative to its plateau (rate = w_max (1 + C (t - K)^3), C a share per second cubed):
  botocore's C is in requests per second cubed, so a cut of a fifth took cbrt(2) times as long to come
  back at twice the rate;
- the cut goes to 95% of the rate the service really served over the last round trip when that is
  known (a 10x overshoot lands under the ceiling in one step instead of six cuts of 0.7), and a cut
  happens at most once per round trip (only attempts sent after the last cut count, and a round trip
  apart), so one burst of refusals is one cut, not a collapse;
- the first cut is a floor, not a plateau: it ends the run's own ramp (slow start of the concurrency,
  a first wave), so what was served by then says how fast the run was sending, not how fast the service
  serves. From it the rate grows geometrically every round trip (as a slow start does) until the next throttle,
  whose measure is the service's; a CUBIC plateau at the ramp's rate regrew at a tenth of a 400/s
  limiter for seconds;
- rates are measured over a span of time (a round trip, at least MIN_SPAN), not over a number of
  events: a number of events spans less time the faster they come, so a floor under its span read every
  fast rate as that number per floor.
The pacer's schedule counts turns, so a new rate applies to the sends already waiting for theirs.
All methods are called under the RunLimiter's lock.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

CUBIC_C = 0.4 / 60  # CUBIC's scale, as a share of the plateau per second cubed (botocore's 0.4 req/s^3 at 60/s)
BETA = 0.7  # botocore's cut, when the served rate is not known
SERVED_SHARE = 0.95  # a cut goes to this share of the rate the service served
GROW_CAP = 2.0  # the rate never grows beyond this multiple of the measured send rate (botocore's)
MIN_RATE = 0.5  # requests per second: a rate is never cut below it (botocore's)
BURST_SECONDS = 0.1  # the pacer lets this much of its rate (at least one request) go at once
METER_EVENTS = 4096  # a meter reads rates up to this many events per span
FLAKY_SHARE = 2.0  # 429s fewer than this many times the other failures do not cut the rate
MIN_SPAN = 0.25  # seconds: rates are measured over at least this long (and at least a round trip)
PROBE_GROWTH = 1.5  # after the first cut, the rate grows this much per MIN_SPAN (or round trip) until the next


class Meter:
    """Events per second, counted up to now (a pause lowers it) over the last `min_span` seconds (a round
    trip: a wave of replies that came back together is one round trip's worth, not a rate of thousands per
    second), or over the last 8 events when fewer came in that span. A span in time, not a number of
    events: a count of events spans less time the faster they come, and over a ramp a long one lags it."""

    def __init__(self) -> None:
        self.times: deque[float] = deque(maxlen=METER_EVENTS)

    def add(self, now: float) -> None:
        self.times.append(now)

    def rate(self, now: float, k: int, min_span: float = 0.0) -> float | None:
        """None until 8 events were seen; `k` (at least 8) events at most when `min_span` is 0."""
        times = self.times
        if len(times) < 8:
            return None
        if min_span > 0:
            k = len(times) - bisect.bisect_right(times, now - min_span)  # the span's events
        k = min(len(times), max(8, k))
        span = max(now - times[-k], min_span)
        return k / span if span > 0 else None


class Pacer:
    """When each send may leave: `rate` per second (inf = at once), `burst` of them early at most.

    A send takes a turn (a place in line, `take`) and waits until the schedule reaches it (`wait`). The
    schedule is counted in turns, not instants, so a new rate applies to the turns already taken: a send
    that took its turn while the rate was low leaves sooner once it rises (and later once it is cut),
    rather than at the instant the old rate gave it."""

    def __init__(self, rate: float = math.inf) -> None:
        self._rate = rate
        self._next = 0.0  # the next free turn
        self._turns, self._at = 0.0, 0.0  # the schedule: turns due by `_at`; after it, `rate` more per second
        self._hold = 0.0  # no send before this instant (monotonic): a run-wide pause

    @property
    def rate(self) -> float:
        return self._rate

    def _due(self, now: float) -> float:
        """Turns the schedule has reached by `now` (finite rate)."""
        return self._turns + self._rate * (now - self._at)

    def _tolerance(self) -> float:
        return max(0.0, BURST_SECONDS * self._rate - 1)

    def set_rate(self, rate: float, now: float) -> None:
        """From `now` on, the schedule runs at `rate` (turns already taken included)."""
        if rate == self._rate:
            return
        if math.isinf(self._rate):  # every turn taken so far was due at once (after any pause)
            self._turns, self._at = self._next, max(now, self._hold)
        elif self._at < now:
            self._turns, self._at = self._due(now), now
        self._rate = rate

    def take(self, now: float) -> float:
        """A turn: the next free one, or the schedule's own when it is ahead (an idle pacer saves no turns)."""
        turn = self._next if math.isinf(self._rate) else max(self._next, self._due(now))
        self._next = turn + 1
        return turn

    def wait(self, turn: float, now: float) -> float:
        """Seconds until `turn` may go (0 = go), at the rate as it is now."""
        if math.isinf(self._rate):
            return max(0.0, self._hold - now)
        return max(0.0, (turn - self._tolerance() - self._due(now)) / self._rate)

    def reserve(self, now: float) -> float:
        """Seconds this send waits for its turn at the rate as it is now (0 = go); the turn is taken."""
        return self.wait(self.take(now), now)

    def hold_until(self, until: float) -> None:
        """No send before `until` (a run-wide pause); after it, sends go at the rate again."""
        self._hold = max(self._hold, until)
        if not math.isinf(self._rate) and self._at + (self._next - self._turns) / self._rate < until:
            self._turns, self._at = self._next, until


class RateControl:
    """The adaptive rate of `auto` (inf until the first throttle), under `ceiling` (--rate-limit)."""

    def __init__(self, ceiling: float | None, adaptive: bool, t0: float, parts: int = 1) -> None:
        self.ceiling = ceiling if ceiling else math.inf
        self.adaptive = adaptive
        # `parts` controllers share the run's rate (Ray workers), each with its share (and a floor of 1/parts of
        # MIN_RATE): the curves are relative to each share's own plateau, so together they follow the one curve.
        self.c = CUBIC_C
        self.min_rate = MIN_RATE / parts
        self.rate = math.inf  # the adaptive rate alone
        self.sends = Meter()
        self.served = Meter()
        self.cuts = 0
        self.rtt = 0.0  # a moving average of the latency of successes: the meters' shortest span
        self._w_max = 0.0
        self._k = 0.0
        self._last_cut = -math.inf
        self._probe: tuple[float, float] | None = None  # after a first cut: (the rate cut to, its doubling span)
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
        if self._probe is not None:
            base, span = self._probe
            grown = base * PROBE_GROWTH ** ((now - self._last_cut) / span)
        else:
            grown = self._w_max * (1 + self.c * (now - self._last_cut - self._k) ** 3)
        measured = self.sends.rate(now, window, max(self.rtt, MIN_SPAN))
        if measured is not None:
            grown = min(grown, GROW_CAP * measured)
        self.rate = max(self.rate, min(grown, self.ceiling))

    def lift(self) -> None:
        """A quota's windows answer the throttling now (windows.py): the adaptive rate steps aside."""
        self.rate, self._w_max, self._probe = math.inf, 0.0, None

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
        # The first throttle ends the run's own ramp: what was served by then was bounded by that ramp (a few
        # round trips of a growing limit), not by the service, so it is a floor, not a plateau. From it the
        # rate grows geometrically, as a slow start does, until the next throttle measures the real one.
        self._probe = (new, max(self.rtt, MIN_SPAN)) if math.isinf(self.rate) else None
        self._w_max, self._last_cut = w_max, now
        self._k = ((1 - new / w_max) / self.c) ** (1 / 3) if w_max > new else 0.0
        self.rate = new
        self.cuts += 1
        self._answers, self._throttles, self._others = 0, 0, 0
        return True
