"""What one RunLimiter enforces (limits.py), from a run's settings; a Ray worker takes its `share`."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .settings import RunConfig, default_of

PROBED = "probed"  # the source (service.py) of a figure measured by probe --ramp and saved in a profile
# The scaled probe grace (no --probe-grace given): a fatal answer (401/403/404, a wrong shape, a redirect)
# needs a round trip after its connection is made and the server's moment to decide, so the gate waits
# GRACE_PER_CONNECT x the slowest connect (TLS included) of the probe's requests, within these bounds.
GRACE_MIN, GRACE_MAX, GRACE_PER_CONNECT = 0.05, 0.2, 20


def grace_for_connect(connect_seconds: float) -> float:
    """The probe grace a connect of `connect_seconds` (the slowest of the probe's so far) calls for."""
    return min(GRACE_MAX, max(GRACE_MIN, GRACE_PER_CONNECT * connect_seconds))


@dataclass(frozen=True)
class LimitSettings:
    """What one RunLimiter enforces. `limit` is the fixed limit, or the ceiling when adaptive."""

    limit: int
    adaptive: bool = False
    floor: int = 1
    initial: int = 20  # adaptive: where slow start begins
    growth: float = 2.0  # adaptive: slow start grows this much per success without queueing (x3 per round trip)
    rate: float | None = None  # requests per second, all gates of this limiter together (a hard ceiling)
    adaptive_rate: bool = True  # adaptive: a rate that follows throttling too (off: the concurrency limit alone)
    probe: int = 16  # attempts allowed before the first success (or the grace period)
    trip: int = 8  # failures of one fatal-if-unanimous cause before any success that may stop the run
    # seconds without a fatal failure after which the probe gate opens anyway (a run's --probe-grace): a
    # 401/403/404 must come back within it; a healthy run pays it once. None: scaled from the probe's
    # connects (grace_for_connect), GRACE_MAX until one is known
    grace: float | None = default_of(RunConfig, "probe_grace")
    budget: int = 50  # failed attempts in a row that stop the run (at least; 2 x the most in flight if larger)
    stall: float = 5.0  # ... and only once no attempt succeeded for this many seconds
    pause_cap: float = 20.0  # longest run-wide pause a Retry-After may cause
    parts: int = 1  # how many limiters share the run (Ray workers): each probes upwards 1/parts as fast
    slow_start: bool = True  # adaptive: grow from `initial` until queueing or a drop (off: `initial` is known)
    start_from: str = "slow start"  # adaptive: where `initial` came from, for the record

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


def settings_for(config) -> LimitSettings:
    """The limits a RunConfig asks for (one process's; Ray workers take a `share`). `auto` with a known
    start (`auto_start`, from a profile: profile_start) begins there, past slow start."""
    start = getattr(config, "auto_start", None)
    known = dict(initial=start, slow_start=False, start_from=f"profile capacity {start}") if start else {}
    return LimitSettings(limit=config.concurrency_ceiling, adaptive=config.adaptive, rate=config.rate_limit,
                         pause_cap=config.client.backoff_cap, grace=config.probe_grace, **known)


def profile_start(config, server_info: dict | None):
    """The RunConfig with `auto_start` at the capacity the run's service profile measured (`probe --ramp
    --save-profile`, source `probed`): `auto` then starts where the service was measured instead of slow
    start's 20, and probes from there (a capacity is the most served at once, so a shedding service is
    not stormed). Unchanged for a fixed limit, a start already set, or a capacity not measured (a
    simulator's configured one: `auto` learns a simulated service as it would a real one)."""
    if not config.adaptive or getattr(config, "auto_start", None) is not None:
        return config
    known = ((server_info or {}).get("profile") or {}).get("capacity") or {}
    capacity = known.get("value")
    if known.get("source") != PROBED or not isinstance(capacity, (int, float)) or isinstance(capacity, bool) \
            or not capacity >= 1:
        return config
    return replace(config, auto_start=int(min(capacity, config.concurrency_ceiling)))
