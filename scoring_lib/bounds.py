"""The physical limit of a run: no engine can beat ceil(N / min(pool, C, capacity)) * latency.

N requests, each taking `latency` seconds at the service, at most min(pool, C, capacity) at once
(connections the client may open, requests the client allows in flight, requests the service
serves at once). Every benchmark and report figure is drawn beside it.
"""

from __future__ import annotations

import math

from .config import split_evenly
from .service import whole_capacity


def effective_pool(connector_limit: int | str | None, sessions: int) -> float:
    """Connections the whole run may hold: the per-session limit times the sessions (inf if unlimited).

    `auto` is never tighter than the concurrency, so it imposes no bound of its own."""
    if connector_limit in (None, "auto", 0):
        return math.inf
    return int(connector_limit) * sessions


def in_flight_limit(pool: float, concurrency: int, capacity: int | None) -> float:
    cap = math.inf if not capacity else capacity
    return min(pool, concurrency, cap)


def bound_seconds(requests: int, latency: float, pool: float, concurrency: int, capacity: int | None) -> float:
    """Fastest possible wall time for `requests` requests of `latency` seconds each."""
    if requests <= 0:
        return 0.0
    width = in_flight_limit(pool, concurrency, capacity)
    return math.ceil(requests / width) * latency


def sessions_of(engine: str, threads: int, workers: int | None, concurrency: int) -> int:
    """aiohttp sessions a run opens: one per event loop (asyncio threads; Ray workers x threads),
    never more than the concurrency since each needs a share of at least one."""
    if engine == "asyncio":
        return min(threads, concurrency)
    return sum(min(threads, share) for share in split_evenly(concurrency, workers or 1))


# --- honest bounds: from what is known of the service, never from the run's own latency ---------
BOUND_SOURCES = ("configured", "probed", "pool/C only", "unknown")


def honest_bound(requests: int, pool: float, concurrency: int, latency: float | None, capacity: float | None,
                 rate_limit: float | None = None, latency_source: str = "unknown",
                 capacity_source: str = "unknown", rate_source: str = "unknown") -> tuple[float | None, str]:
    """(bound seconds, bound_source) for a run, from the service profile's figures.

    Unknown latency: no bound at all ("unknown"); a bound from the run's own latency would move
    with the queueing it is meant to expose. Known latency but unknown capacity: the pool/C bound
    alone ("pool/C only"), still a true lower bound since a capacity can only make runs slower.
    Otherwise the bound carries the weakest source of its figures (probed below configured)."""
    if latency is None or latency_source == "unknown":
        return None, "unknown"
    known_cap = capacity if capacity_source != "unknown" else None
    # A probed capacity is an estimate (199.4): rounded up, as the recommendation does, so the bound stays
    # a lower bound (rounded down, 199 would add a wave the service does not impose).
    seconds = bound_seconds(requests, latency, pool, concurrency, whole_capacity(known_cap) if known_cap else None)
    used = [latency_source]
    if rate_limit and rate_source != "unknown" and requests > 0:
        seconds = max(seconds, requests / rate_limit)
        used.append(rate_source)
    if known_cap is None:
        return seconds, "pool/C only"
    used.append(capacity_source)
    return seconds, "probed" if "probed" in used else "configured"


def queue_timeout_warning(in_flight: float, latency: float | None, capacity: float | None,
                          timeout: float) -> str | None:
    """One line when a fixed number in flight makes a queueing service hold requests longer than the
    client's timeout: the last of ceil(in_flight / capacity) waves waits that many latencies, times out
    and is sent again while the service still serves the abandoned copy (None: not the case, or unknown).
    A time scale hides this: the latency shrinks, the timeout does not."""
    if not latency or not capacity or capacity <= 0 or math.isinf(in_flight) or in_flight <= capacity:
        return None
    capacity = whole_capacity(capacity)
    longest = math.ceil(in_flight / capacity) * latency
    if longest <= timeout:
        return None
    safe = capacity * max(1, math.floor(timeout / latency))
    return (f"{int(in_flight)} requests in flight against a service that serves {capacity} at once "
            f"({latency:.3g} s each) wait there up to {longest:.3g} s, longer than the {timeout:g} s timeout: those "
            f"time out and are sent again. Use --max-concurrent-tasks auto, a C of at most {safe}, "
            f"or --timeout {math.ceil(longest * 1.2)}")
