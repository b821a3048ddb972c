"""What a run measured, summarized in bounded memory: latency percentiles, requests in flight over
time, a uniform request sample and the run's counters. Base layer: imports nothing of the project."""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from dataclasses import dataclass, field

SAMPLE_SIZE = 20_000  # requests kept for latency percentiles and the in-flight timeline
TIMELINE_POINTS = 200


def percentiles(values: list[float], qs=(50, 90, 99)) -> dict:
    """Nearest-rank percentiles, mean and max; every figure None when there is no value."""
    if not values:
        return {f"p{q}": None for q in qs} | {"mean": None, "max": None}
    s = sorted(values)
    out = {f"p{q}": s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))] for q in qs}
    return out | {"mean": sum(s) / len(s), "max": s[-1]}


def in_flight_timeline(intervals: list[tuple[float, float]], start: float, end: float, scale: float = 1.0,
                       points: int = TIMELINE_POINTS) -> list[list[float]]:
    """Requests in flight at evenly spaced instants, from (started, finished) wall-clock pairs."""
    if not intervals or end <= start:
        return []
    starts = sorted(s for s, _ in intervals)
    ends = sorted(e for _, e in intervals)
    out = []
    for i in range(points + 1):
        t = start + (end - start) * i / points
        n = bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)
        out.append([round(t - start, 4), round(n * scale, 2)])
    return out


class Reservoir:
    """A uniform sample of at most `size` items, so a million-line run keeps a fixed-size summary.

    Li's Algorithm L: once full, it draws how many items to skip before the next one is kept, so an
    item that is not kept costs a comparison, not a random number (this runs once per request)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seen = 0
        self.items: list = []
        self._rng = random.Random(seed)
        self._w = 1.0
        self._next = size  # the index (0-based, in arrival order) of the next item kept once full

    def _uniform(self) -> float:
        return self._rng.random() or 1e-12  # in (0, 1): both logarithms below stay finite

    def _skip(self) -> None:
        self._w *= math.exp(math.log(self._uniform()) / self.size)
        self._next += int(math.log(self._uniform()) / math.log1p(-self._w)) + 1

    def add(self, item) -> None:
        index = self.seen
        self.seen = index + 1
        if index < self.size:
            self.items.append(item)
            if self.seen == self.size:
                self._next = index
                self._skip()
        elif index == self._next:
            self.items[self._rng.randrange(self.size)] = item
            self._skip()


@dataclass
class RunStats:
    """What a run measured; turned into the run record."""

    lines: int = 0
    counts: dict = field(default_factory=lambda: {"ok": 0, "empty": 0, "error": 0})
    unique_requested: int = 0
    cache_hits: int = 0
    duplicates: int = 0
    requests: int = 0
    retries: int = 0
    startup_seconds: float = 0.0
    scoring_seconds: float = 0.0
    total_seconds: float = 0.0
    scoring_started: float = 0.0  # wall clock
    requests_sample: Reservoir = field(default_factory=lambda: Reservoir(SAMPLE_SIZE))
    engine_info: dict = field(default_factory=dict)
    causes: Counter = field(default_factory=Counter)  # error rows by cause ("HTTP 503", "timeout", ...)

    def summary(self) -> str:
        rate = self.lines / self.scoring_seconds if self.scoring_seconds > 0 else float("inf")
        c = self.counts
        errors = ""
        if self.causes:
            top = self.causes.most_common(3)
            rest = sum(self.causes.values()) - sum(n for _, n in top)
            errors = " (" + ", ".join(f"{n} {cause}" for cause, n in top) + (f", {rest} other" if rest else "") + ")"
        limits = self.engine_info.get("limits") or {}
        limit = (f", limit now {round(limits['final_limit'])}" if limits.get("mode") == "adaptive" and self.requests
                 else "")
        return (f"{self.lines} lines: {c['ok']} ok, {c['empty']} empty, {c['error']} error{errors}; "
                f"{self.requests} requests, {self.retries} retries; {self.cache_hits} from cache{limit}; "
                f"scoring {self.scoring_seconds:.2f} s ({rate:.1f} lines/s), start-up {self.startup_seconds:.2f} s")
