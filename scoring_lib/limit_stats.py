"""The limiter's part of a run record: several processes' (Ray workers') stats as one."""

from __future__ import annotations

import math
from collections import Counter

from .concurrency import HISTORY_POINTS

SUMMED = ("attempts", "quota_windows", "initial_limit", "http_429", "http_503", "retry_after_pauses", "retry_after_pauses_from_peers",
          "closed_pauses", "rate_cuts", "final_limit")


def limiter_record(lim) -> dict:
    """A RunLimiter's part of the run record (called under its lock): the limit and the rate over time
    (adaptive), where the limit started and why, attempts by kind, 429/503 counts, pauses, windows."""
    adaptive = lim._conc is not None
    kinds = lim.failfast.kinds
    rate = lim.pacer.rate
    return {
        "mode": "adaptive" if adaptive else "fixed",
        "ceiling" if adaptive else "limit": lim.settings.limit,
        "rate_limit": lim.settings.rate,
        "initial_limit": round(lim._conc.history[0][1], 1) if adaptive else None,
        "start": lim.settings.start_from if adaptive else None,
        "final_limit": round(lim.limit, 1),
        "final_rate": None if math.isinf(rate) else round(rate, 1),
        "started_at": lim.started_at,
        "limit_history": [list(p) for p in lim._conc.history] if adaptive else [],
        "rate_history": [list(p) for p in lim.rate_history] if adaptive else [],
        "rate_cuts": lim.rate.cuts,
        "attempts": sum(kinds.values()),
        "attempt_kinds": dict(kinds),
        "http_429": kinds.get("HTTP 429", 0),
        "http_503": kinds.get("HTTP 503", 0),
        "retry_after_pauses": lim.pauses,
        "retry_after_pauses_from_peers": lim.peer_pauses,
        "quota_windows": lim.windows.windows,
        "stopped": str(lim.stopped) if lim.stopped else None,
        # how long the first requests waited for a fatal answer at most, and from what (limits.py)
        "probe_grace": round(lim.failfast.grace, 4),
        "probe_grace_from": _grace_source(lim.failfast),
    }


def _grace_source(ff) -> str:
    if not ff.scaled:
        return "--probe-grace"
    if ff.slowest_connect is None:
        return "scaled, no connect measured while probing"
    return f"scaled from the probe's slowest connection round trip, {ff.slowest_connect * 1000:.3f} ms"


def merge_stats(parts: list[dict]) -> dict:
    """One limits record from several processes' (Ray workers'): counts summed, limits and rates summed
    over time (a worker without a rate yet makes the run's rate unbounded: None)."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    out = dict(parts[0])
    kinds: Counter = Counter()
    for p in parts:
        kinds.update(p.get("attempt_kinds") or {})
    out["attempt_kinds"] = dict(kinds)
    for key in SUMMED:
        out[key] = round(sum(p.get(key) or 0 for p in parts), 1)
    for key in ("ceiling", "limit", "rate_limit"):
        if key in out:
            out[key] = sum(p.get(key) or 0 for p in parts) or None
    rates = [p.get("final_rate") for p in parts]
    out["final_rate"] = None if None in rates else round(sum(rates), 1)
    out["stopped"] = next((p["stopped"] for p in parts if p.get("stopped")), None)
    base = min(p.get("started_at") or 0.0 for p in parts)
    out["started_at"] = base
    for key in ("limit_history", "rate_history"):
        hists = [[[round(t + (p.get("started_at") or base) - base, 3), v] for t, v in p.get(key) or []]
                 for p in parts]
        out[key] = _summed(hists)[-HISTORY_POINTS:]
    out["processes"] = len(parts)
    return out


def _summed(hists: list[list]) -> list[list]:
    """The sum over time of step functions given as [time, value] points (None absorbs: unbounded)."""
    times = sorted({t for h in hists for t, _ in h})
    merged = []
    for t in times:
        total: float | None = 0.0
        for hist in hists:
            value = 0.0
            for ht, hv in hist:
                if ht > t:
                    break
                value = hv
            total = None if total is None or value is None else total + value
        merged.append([t, None if total is None else round(total, 1)])
    return merged
