"""The run's watchdog: a run that stopped moving ends with an error, never a silent hang.

Engines hand lines back as they finish; a bug that loses a line (a worker that died, a reply never
delivered) would otherwise leave the pipeline waiting forever. The watchdog's patience is the longest
one line may legitimately take, so it never mistakes a slow service for a lost line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .config import RunConfig
from .errors import RunStalled

WATCHDOG_SLACK = 60.0  # seconds added to the longest a line may take before a quiet run counts as stalled


class Watchdog:
    """Turns a run that stopped moving into an error instead of a hang: when no line finished and (for an
    engine that can tell, `activity`) no attempt started or ended for `seconds` while lines are
    outstanding, the engine lost them. A live engine hands back a line at least once per the longest one
    line may take (all its attempts, waits and backoffs), so a quiet stretch beyond that is never slowness."""

    def __init__(self, seconds: float, activity: Callable[[], int] | None = None) -> None:
        self.seconds = seconds
        self._activity = activity
        self._marker = activity() if activity is not None else None
        self._since = time.monotonic()

    def check(self, finished: bool, outstanding: int) -> None:
        """Called after every poll: `finished` when it brought results; raises RunStalled past the patience."""
        now = time.monotonic()
        marker = self._activity() if self._activity is not None else None
        if finished or marker != self._marker:
            self._marker, self._since = marker, now
        elif now - self._since > self.seconds:
            raise RunStalled(f"internal error: no line finished and nothing moved for {self.seconds:g} s with "
                             f"{outstanding} lines outstanding; the run stopped (nothing written)")


def stall_seconds(config: RunConfig) -> float:
    """The longest one line may take (every attempt's timeout, Retry-After pause and backoff, and its
    slots at the rate limit), plus WATCHDOG_SLACK: the watchdog's patience (inf when unbounded)."""
    cl = config.client
    attempts = cl.max_retries + 1
    seconds = attempts * (cl.timeout + 2 * cl.backoff_cap) + WATCHDOG_SLACK
    if config.rate_limit:
        seconds += attempts / config.rate_limit
    return seconds if math.isfinite(seconds) else math.inf
