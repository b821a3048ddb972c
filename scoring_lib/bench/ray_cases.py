"""Ray at the seed's shape (case r) and a Ray sweep's start-up paid once (case w)."""

from __future__ import annotations

import math
from pathlib import Path

from ..config import ServerConfig
from ..server import ServiceProcess
from .measure import (Measurement, Target, bare_args, measure_run, recorded, run_process, score_args,
                      write_unique_lines)


def case_ray(work: Path, time_scale: float, whole_latency: float = 0.5) -> list[Measurement]:
    """The seed's Ray shape, 32 workers x 64 threads (C=2,048, pool 100, capacity 200, 2,000 lines):
    scoring efficiency at 4.15 s x time scale, and one whole `score` process at `whole_latency`."""
    n, capacity = 2000, 200
    path = write_unique_lines(work / "ray.txt", n)
    out = []
    with ServiceProcess(ServerConfig(latency=4.15, capacity=capacity, time_scale=time_scale)) as svc:
        m = measure_run("r", "ray 32 workers x 64 threads, C=2048", svc, path, n, 4.15 * time_scale, capacity,
                        engine="ray", workers=32, threads=64, max_concurrent_tasks=2048, connector_limit=100)
        m.extra["efficiency"] = round(m.bound_seconds / m.wall_seconds, 2)
        # What this machine allows at this shape: the bare aiohttp client, 2,048 in flight, same service
        # (a whole process, so its few tenths of a second of start-up count against it).
        bare = run_process(bare_args(path, svc.url, 2048, work / "ray.bare.jsonl"))
        b = Measurement("r", "bare aiohttp baseline, C=2048 (whole process)", n, bare.wall, m.bound_seconds,
                        extra={"efficiency": round(m.bound_seconds / bare.wall, 2)})
        m.extra["efficiency_vs_bare"] = round(b.wall_seconds / m.wall_seconds, 2)
        m.targets.append(Target("efficiency_vs_bare", ">=", 1.05))
        out += [b, m]
    with ServiceProcess(ServerConfig(latency=whole_latency, capacity=capacity)) as svc:
        run = run_process(score_args(path, svc.url, "--engine", "ray", "--workers", "32", "--threads", "64",
                                     "--max-concurrent-tasks", "2048", "--connector-limit", "100",
                                     records=work / "ray-whole"))
        bound = math.ceil(n / capacity) * whole_latency
        split = recorded(work / "ray-whole", "engine_info") or {}  # start-up: Ray, workers, first request
        out.append(Measurement("r", f"whole `score` ray 32x64 at {whole_latency:g} s", n, run.wall, bound,
                               extra={"cpu_s": round(run.cpu, 1)} |
                               {k: split.get(k) for k in ("ray_init_seconds", "workers_seconds", "first_request_seconds")},
                               targets=[Target("wall_seconds", "<=", 30)]))
    return out


def case_ray_sweep(work: Path, points: int = 3, time_scale: float = 0.05) -> list[Measurement]:
    """A sweep's Ray start-up, paid once: one local cluster, then `points` whole `score` processes
    (as a sweep's kernels are) joining it, each starting its 4 workers; beside one cold run."""
    from ..engines.ray_engine import LocalCluster  # Ray is optional and heavy: only for this case

    n, capacity = 400, 200
    path = write_unique_lines(work / "sweep.txt", n)
    runs = work / "runs"
    out = []
    with ServiceProcess(ServerConfig(latency=4.15, capacity=capacity, time_scale=time_scale)) as svc:
        cold = run_process(score_args(path, svc.url, "--engine", "ray", "--workers", "4", "--threads", "16",
                                      records=runs / "cold"))
        out.append(Measurement("w", "cold run (starts its own Ray)", n, cold.wall,
                               startup_seconds=recorded(runs / "cold", "startup_seconds")))
        with LocalCluster() as cluster:
            out.append(Measurement("w", "sweep's cluster, started once", 0, cluster.startup_seconds,
                                   startup_seconds=cluster.startup_seconds))
            for i in range(points):
                run = run_process(score_args(path, svc.url, "--engine", "ray", "--workers", "4", "--threads", "16",
                                             records=runs / f"p{i}"), env=cluster.env())
                out.append(Measurement("w", f"point {i + 1} joining it", n, run.wall,
                                       startup_seconds=recorded(runs / f"p{i}", "startup_seconds")))
    return out

