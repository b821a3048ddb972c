"""Whole `score` processes beside the bare aiohttp client on the same server: what a user pays,
start-up and teardown included (cases z and b), and peak memory by input length (case c)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..bounds import bound_seconds
from ..config import ServerConfig
from ..loops import EVENT_LOOP_ENV, event_loop_name
from ..server import ServiceProcess
from ..settings import choose_threads
from .measure import (Measurement, Target, bare_args, median_runs, recorded, run_process, score_args,
                      write_unique_lines)

BARE = "bare aiohttp baseline"
LEAN = "bare aiohttp, bytes in and out"  # the bare client without aiohttp's json= and resp.json()
DEFAULT = "score default settings"


def _threads_settings(loop: str) -> list[tuple[str, list[str], dict | None]]:
    """`score` with each explicit --threads (and, where uvloop runs, 1 thread on asyncio's own loop)."""
    out = [(f"score --threads 1 ({loop})", ["--threads", "1"], None), ("score --threads 2", ["--threads", "2"], None)]
    if loop != "asyncio":  # what uvloop buys: the same run on the standard library's loop
        out.insert(1, ("score --threads 1 (asyncio loop)", ["--threads", "1"], {EVENT_LOOP_ENV: "asyncio"}))
    return out


def _mark_best(rows: list[Measurement], key: str, target: Target, higher: bool = True) -> None:
    """Hold the best of `rows` (by `key`) to `target`, and say which it was."""
    if rows:
        best = (max if higher else min)(rows, key=lambda m: m.extra[key])
        best.extra["best_threads"] = True
        best.targets.append(target)


def case_zero(work: Path, n: int = 40_000, concurrency: int = 100, repeats: int = 3,
              ray: bool = False) -> list[Measurement]:
    """The client's own cost: zero latency, whole processes interleaved against one server, `score` with
    its default settings and with each --threads beside the bare aiohttp client; medians of `repeats`.
    Targets (issue 18): default >= 0.85x the bare client's line rate, the best --threads >= 0.9x."""
    path = write_unique_lines(work / "zero.txt", n)
    c = str(concurrency)
    with ServiceProcess(ServerConfig(latency=0, capacity=0)) as svc:
        settings = {BARE: (bare_args(path, svc.url, concurrency, work / "zero.bare.jsonl"), None),
                    DEFAULT: (score_args(path, svc.url, "--max-concurrent-tasks", c), None),
                    LEAN: (bare_args(path, svc.url, concurrency, work / "zero.lean.jsonl", lean=True), None)}
        for name, extra, env in _threads_settings(event_loop_name()):
            settings[name] = (score_args(path, svc.url, "--max-concurrent-tasks", c, *extra), env)
        if ray:
            settings["score ray 2 workers"] = (score_args(path, svc.url, "--max-concurrent-tasks", c, "--engine", "ray",
                                                          "--workers", "2", "--threads", c), None)
        runs = median_runs(settings, repeats)
    bare = runs[BARE]
    out = []
    for name, r in runs.items():
        extra = {"lines_per_s": round(n / r.wall), "cpu_us_per_line": round(r.cpu / n * 1e6),
                 "speed_vs_bare": round(bare.wall / r.wall, 3), "cpu_vs_bare": round(r.cpu / bare.cpu, 2),
                 "speed_vs_lean": round(runs[LEAN].wall / r.wall, 3)}
        out.append(Measurement("z", f"{name}, C={concurrency}", n, r.wall, extra=extra))
    default = out[1]
    default.extra["threads_chosen"] = _chosen(n, concurrency)
    default.targets.append(Target("speed_vs_bare", ">=", 0.85))
    _mark_best([m for m in out if "--threads" in m.setting], "speed_vs_bare", Target("speed_vs_bare", ">=", 0.9))
    return out


def _chosen(lines: int, concurrency: int) -> str:
    """What a default run against this (external, latency unknown) service chooses for its threads, and why."""
    threads, reason = choose_threads(lines, concurrency, None, os.cpu_count())
    return f"{threads} ({reason})"


def case_b(work: Path, time_scale: float, repeats: int = 3) -> list[Measurement]:
    """Throughput at scale: 10,000 lines, latency 1 s, concurrency 1,000, service unbounded. Whole
    processes interleaved against one server: the bare aiohttp client beside `score` with its default
    settings and with 1 and 2 event-loop threads (what a second loop buys when the service is slow; they
    share one GIL); medians of `repeats`. Target (issue 18): default <= 1.03x the bare client's wall time.
    The service shares the machine's cores: a wave of 1,000 replies arriving together queues in both
    processes' event loops, which the bare client shows."""
    n, concurrency, latency = 10_000, 1000, 1.0 * time_scale
    path = write_unique_lines(work / "b.txt", n)
    bound = bound_seconds(n, latency, math.inf, concurrency, 0)
    c = str(concurrency)
    names = [BARE, DEFAULT, "score --threads 1", "score --threads 2"]
    extras: list[list[str]] = [[], [], ["--threads", "1"], ["--threads", "2"]]
    with ServiceProcess(ServerConfig(latency=1.0, capacity=0, time_scale=time_scale)) as svc:
        settings = {BARE: (bare_args(path, svc.url, concurrency, work / "b.bare.jsonl"), None)}
        for i, name in enumerate(names[1:], 1):
            settings[name] = (score_args(path, svc.url, "--max-concurrent-tasks", c, *extras[i],
                                         records=work / f"b-records-{i}"), None)
        runs = median_runs(settings, repeats)
    bare = runs[BARE]
    out = []
    for i, name in enumerate(names):
        extra = {"whole_vs_bare": round(runs[name].wall / bare.wall, 3)}
        if i:
            scoring = recorded(work / f"b-records-{i}", "scoring_seconds")  # the last of the repeats
            extra["scoring_phase_vs_bound"] = round(scoring / bound, 3) if scoring else None
        out.append(Measurement("b", f"{name}, C={concurrency} (whole process)", n, runs[name].wall, bound,
                               extra=extra))
    out[1].extra["threads_chosen"] = _chosen(n, concurrency)
    out[1].targets.append(Target("whole_vs_bare", "<=", 1.03))
    return out


def case_c(work: Path, sizes: list[int]) -> list[Measurement]:
    """Memory stays flat: peak RSS of whole runs at zero latency, by input length. Targets: <= 300 MB
    each, and the largest input within 1.1x the smallest one's peak (flat: what grows with the lines seen is
    on disk, the run-local store's file; in memory only fixed-size structures)."""
    out = []
    with ServiceProcess(ServerConfig(latency=0, capacity=0)) as svc:
        for n in sizes:
            path = write_unique_lines(work / f"c{n}.txt", n)
            run = run_process(score_args(path, svc.url, "--max-concurrent-tasks", "256"))
            m = Measurement("c", "asyncio, zero latency, C=256", n, run.wall,
                            extra={"peak_rss_mb": round(run.rss_mb, 1), "lines_per_s": round(n / run.wall)},
                            targets=[Target("peak_rss_mb", "<=", 300)])
            if out:
                m.extra["rss_vs_smallest"] = round(run.rss_mb / out[0].extra["peak_rss_mb"], 2)
                m.targets.append(Target("rss_vs_smallest", "<=", 1.1))
            out.append(m)
            print("    " + m.line(), flush=True)
            path.unlink()
    return out
