"""In-process runs against services with limits: the seed's shape, pool 100 vs auto (case a); a blind
`probe --ramp` and a run at what it recommends (case p); fixed and adaptive limits against services
that queue, shed or rate-limit (case l)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..config import ClientConfig, RunConfig, ServerConfig
from ..pipeline import score_file
from ..ramp import ramp
from ..server import ServiceProcess
from .measure import Measurement, Target, measure_run, write_unique_lines

# Issue 9's targets for `auto`: wall/bound by the service's shape, p50 beside unloaded, refusals.
AUTO_RATIO = {"queue": 1.15, "shed": 1.2, "rate": 1.25}


def case_a(work: Path, time_scale: float, ray: bool) -> list[Measurement]:
    """The seed's shape: 2,000 lines, capacity 200, concurrency 500; pool 100 vs auto."""
    n, capacity, latency = 2000, 200, 4.15 * time_scale
    path = write_unique_lines(work / "a.txt", n)
    out = []
    with ServiceProcess(ServerConfig(latency=4.15, capacity=capacity, time_scale=time_scale)) as svc:
        for limit in (100, None):
            out.append(measure_run("a", f"asyncio 1 thread, C=500, pool {limit or 'auto'}", svc, path, n, latency,
                                   capacity, engine="asyncio", threads=1, max_concurrent_tasks=500,
                                   connector_limit=limit))
        if ray:
            out.append(measure_run("a", "ray 4 workers x 64 threads, C=256", svc, path, n, latency, capacity,
                                   engine="ray", workers=4, threads=64, max_concurrent_tasks=256))
    pool100, auto = out[0], out[1]
    print(f"    (a) pool 100 / pool auto wall-time ratio: {pool100.wall_seconds / auto.wall_seconds:.2f} "
          f"(bound ratio {pool100.bound_seconds / auto.bound_seconds:.2f})")
    return out


def case_p(work: Path, time_scale: float, capacities: tuple[int, ...] = (50, 200, 1000)) -> list[Measurement]:
    """Know the service: for each capacity, `probe --ramp` it blind (probed vs configured capacity,
    probing time), then score 2,000 lines at the recommended settings and compare the measured wall
    time with the ramp's prediction (target: within 10%)."""
    n, latency = 2000, 4.15 * time_scale
    path = write_unique_lines(work / "p.txt", n)
    out = []
    for capacity in capacities:
        with ServiceProcess(ServerConfig(latency=4.15, capacity=capacity, time_scale=time_scale)) as svc:
            t0 = time.perf_counter()
            probed = ramp(ClientConfig(url=svc.url, timeout=600), input=path, ceiling=4096)
            probe_s = time.perf_counter() - t0
            rec = probed.recommended
            if rec is None or probed.predicted_seconds is None:
                print(f"    (p) capacity {capacity}: the ramp found nothing to recommend ({probed.stopped})")
                continue
            m = measure_run("p", f"capacity {capacity}: asyncio C={rec.max_concurrent_tasks}", svc, path, n,
                            latency, capacity, engine="asyncio", max_concurrent_tasks=rec.max_concurrent_tasks,
                            connector_limit=rec.connector_limit)
        m.extra = {"configured": capacity, "probed": probed.capacity, "probed/configured":
                   round(probed.capacity / capacity, 3) if probed.capacity else None,
                   "probe_s": round(probe_s, 1), "steps": len(probed.steps),
                   "predicted_s": round(probed.predicted_seconds, 2),
                   "measured/predicted": round(m.wall_seconds / probed.predicted_seconds, 3),
                   "warning": probed.client_bound()}
        m.targets = [Target("measured/predicted", ">=", 0.9), Target("measured/predicted", "<=", 1.1)]
        print("    " + m.line(), flush=True)
        out.append(m)
    return out


def _limit_run(case: str, setting: str, service: ServiceProcess, path: Path, lines: int, bound: float,
               unloaded_p50: float | None, **run) -> Measurement:
    """One run for the limits case: wall/bound, share of requests refused (429/503), p50 vs unloaded."""
    client = ClientConfig(url=service.url, timeout=600, max_retries=50)
    config = RunConfig(input=path, client=client, cache=None, records_dir=None, progress=False,
                       output=path.with_suffix(".out.jsonl"), **run)
    service.reset_stats()
    result = score_file(config, write_record=False)
    stats = service.stats()
    refused = stats.rate_limited + stats.shed + stats.injected_errors
    p50 = result.record.latency.p50
    extra = {"ok": result.stats.counts["ok"], "rejected_pct": round(100 * refused / max(1, stats.requests), 1),
             "p50": f"{p50:.3f}s" if p50 is not None else None}
    if unloaded_p50:
        extra["p50/unloaded"] = round(p50 / unloaded_p50, 2) if p50 else None
    limits = result.record.limits
    if limits.get("mode") == "adaptive":
        extra["final_limit"] = limits.get("final_limit")
    if limits.get("retry_after_pauses_from_peers"):  # Ray: pauses a worker took from another's Retry-After
        extra["pauses_from_peers"] = limits["retry_after_pauses_from_peers"]
    if limits.get("stopped"):
        extra["stopped"] = limits["stopped"]
    return Measurement(case, setting, lines, result.stats.scoring_seconds, bound, result.stats.startup_seconds,
                       stats.peak_in_flight, extra)


def case_limits(work: Path, time_scale: float = 0.05, ray: bool = False) -> list[Measurement]:
    """Issue 9: fixed best, fixed too high and auto against a service that queues, one that sheds
    (503 above capacity) and one that rate-limits (429 + Retry-After). Targets: auto within 1.15x /
    1.2x / 1.25x of the bound, p50 within 1.5x of unloaded, at most 5% rejected when shedding,
    at most 1% 429s with --rate-limit 95."""
    cap, latency = 137, 4.15 * time_scale
    n = cap * 40
    path = write_unique_lines(work / "l.txt", n)
    small = write_unique_lines(work / "l-unloaded.txt", 100)
    bound = math.ceil(n / cap) * latency
    out: list[Measurement] = []
    for shape, shed in (("queue", False), ("shed", True)):
        print(f"    capacity {cap} that {'sheds (503 above it)' if shed else 'queues'}, {n} lines, "
              f"latency {latency:.3f} s:", flush=True)
        with ServiceProcess(ServerConfig(latency=4.15, capacity=cap, time_scale=time_scale, shed=shed)) as svc:
            unloaded = _limit_run("l", "unloaded (C=10)", svc, small, 100, None, None, max_concurrent_tasks=10)
            p50 = float(unloaded.extra["p50"].rstrip("s"))
            for setting, mct in (("fixed best C=137", 137), ("fixed too high C=1000", 1000), ("auto", "auto")):
                out.append(_limit_run("l", f"{shape}: {setting}", svc, path, n, bound, p50, max_concurrent_tasks=mct))
                if mct == "auto":
                    out[-1].targets += [Target("ratio", "<=", AUTO_RATIO[shape]), Target("p50/unloaded", "<=", 1.5)]
                    if shed:
                        out[-1].targets.append(Target("rejected_pct", "<=", 5))
                print("    " + out[-1].line(), flush=True)
    rate, n_rate = 100.0, 1000
    path = write_unique_lines(work / "l-rate.txt", n_rate)
    print(f"    rate limit {rate:g}/s with 429 + Retry-After, {n_rate} lines, latency 0.05 s (bound N/rate):", flush=True)
    settings = (("fixed best --rate-limit 95, C=32", {"max_concurrent_tasks": 32, "rate_limit": 95.0}),
                ("fixed too high C=256", {"max_concurrent_tasks": 256}), ("auto", {"max_concurrent_tasks": "auto"}))
    engines = [("asyncio", {}, settings)]
    if ray:
        # 4 slots per worker caps each worker's share; without --threads a worker may use its whole share of
        # the ceiling (500), so only the limiter (and a Retry-After passed on to every worker) holds it back.
        engines += [("ray 4 workers", {"engine": "ray", "workers": 4, "threads": 4}, settings),
                    ("ray 4 workers, default threads", {"engine": "ray", "workers": 4}, settings[2:])]
    with ServiceProcess(ServerConfig(latency=0.05, capacity=0, rate_limit=rate, time_scale=1.0)) as svc:
        for label, engine, runs in engines:
            for setting, run in runs:
                out.append(_limit_run("l", f"rate {label}: {setting}", svc, path, n_rate, n_rate / rate, None,
                                      **run, **engine))
                if "rate_limit" in run:
                    out[-1].targets.append(Target("rejected_pct", "<=", 1))
                elif run["max_concurrent_tasks"] == "auto":
                    out[-1].targets.append(Target("ratio", "<=", AUTO_RATIO["rate"]))
                print("    " + out[-1].line(), flush=True)
    return out

