"""`python -m scoring_lib bench`: the engines against the simulated service and the physical limit.

Each case prints measured wall time beside its bound, as ratios within one run (the machine is
small and noisy: compare ratios, not absolute seconds). The service runs in a child process so
that it does not share the measured client's interpreter.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .bounds import bound_seconds, effective_pool, sessions_of
from .config import ClientConfig, RunConfig, ServerConfig
from .loops import EVENT_LOOP_ENV, event_loop_name
from .pipeline import score_file
from .records import git_commit, machine_info, package_versions
from .server import ServiceProcess

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample.txt"


def write_unique_lines(path: Path, n: int) -> Path:
    """n distinct lines of real English (the shipped sample, numbered so none repeats)."""
    base = SAMPLE.read_text(encoding="utf-8").splitlines() if SAMPLE.exists() else ["A sentence to score."]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"{base[i % len(base)]} [{i}]\n")
    return path


@dataclass
class Measurement:
    case: str
    setting: str
    lines: int
    wall_seconds: float
    bound_seconds: float | None = None
    startup_seconds: float | None = None
    peak_in_flight: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.wall_seconds / self.bound_seconds if self.bound_seconds else None

    def line(self) -> str:
        parts = [f"{self.case:<3} {self.setting:<38} {self.lines:>9} lines  wall {self.wall_seconds:8.2f} s"]
        if self.bound_seconds is not None:
            parts.append(f"bound {self.bound_seconds:7.2f} s  wall/bound {self.ratio:5.2f}")
        if self.startup_seconds is not None:
            parts.append(f"start-up {self.startup_seconds:5.2f} s")
        if self.peak_in_flight is not None:
            parts.append(f"peak in flight {self.peak_in_flight}")
        parts += [f"{k} {v}" for k, v in self.extra.items()]
        return "  ".join(parts)


def measure_run(case: str, setting: str, service: ServiceProcess, path: Path, lines: int, latency: float,
                capacity: int, **run) -> Measurement:
    """One in-process run against `service`; scoring-phase wall time against its bound."""
    client = ClientConfig(url=service.url, connector_limit=run.pop("connector_limit", None), timeout=600)
    config = RunConfig(input=path, client=client, cache=None, records_dir=None, progress=False,
                       output=path.with_suffix(".out.jsonl"), **run)
    service.reset_stats()
    result = score_file(config, write_record=False)
    stats = service.stats()
    info = result.stats.engine_info
    sessions = info.get("sessions") or sessions_of(config.engine, config.resolved_threads, config.resolved_workers,
                                                   config.max_concurrent_tasks)
    pool = effective_pool(client.connector_limit, sessions)
    concurrency = min(config.max_concurrent_tasks, info.get("in_flight_limit") or config.max_concurrent_tasks)
    bound = bound_seconds(lines, latency, pool, concurrency, capacity)
    if result.stats.counts["ok"] != lines:
        raise RuntimeError(f"{setting}: only {result.stats.counts['ok']} of {lines} lines scored")
    pool_text = "inf" if math.isinf(pool) else str(int(pool))
    return Measurement(case, setting, lines, result.stats.scoring_seconds, bound, result.stats.startup_seconds,
                       stats.peak_in_flight, {"pool": pool_text})


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


def case_b(work: Path, time_scale: float, repeats: int = 2) -> list[Measurement]:
    """Throughput at scale: 10,000 lines, latency 1 s, concurrency 1,000, service unbounded. Whole
    processes in turn against one server: the bare aiohttp client beside `score` with 1 and 2 event-loop
    threads (what threads buy when the service is slow; they share one GIL). Best of `repeats` each.
    The bare client shows what this machine allows: the service shares its two cores, and a wave of
    1,000 replies arriving together queues in both processes' event loops."""
    n, concurrency, latency = 10_000, 1000, 1.0 * time_scale
    path = write_unique_lines(work / "b.txt", n)
    bound = bound_seconds(n, latency, math.inf, concurrency, 0)
    settings: list[tuple[str, list[str] | None]] = [
        ("bare aiohttp baseline", None),
        ("score asyncio 1 thread", ["--threads", "1"]),
        ("score asyncio 2 threads", ["--threads", "2"]),
    ]
    best: dict[str, tuple[ProcessRun, float | None]] = {}
    with ServiceProcess(ServerConfig(latency=1.0, capacity=0, time_scale=time_scale)) as svc:
        for i in range(repeats):
            for name, extra in settings:
                if extra is None:
                    run = run_process([sys.executable, str(BASELINE), str(path), svc.url, str(concurrency),
                                       str(work / "b.bare.jsonl")])
                    scoring = None
                else:
                    records = work / f"b-records-{len(best)}-{i}"
                    run = run_process(score_args(path, svc.url, "--max-concurrent-tasks", str(concurrency), *extra,
                                                 records=records))
                    scoring = _recorded(records, "scoring_seconds")
                if name not in best or run.wall < best[name][0].wall:
                    best[name] = (run, scoring)
    bare = best["bare aiohttp baseline"][0]
    out = []
    for name, _ in settings:
        run, scoring = best[name]
        extra = {"whole_vs_bare": round(run.wall / bare.wall, 3)}
        if scoring is not None:
            extra["scoring_phase_vs_bound"] = round(scoring / bound, 3)
        out.append(Measurement("b", f"{name}, C={concurrency} (whole process)", n, run.wall, bound, extra=extra))
    return out


def case_p(work: Path, time_scale: float, capacities: tuple[int, ...] = (50, 200, 1000)) -> list[Measurement]:
    """Know the service: for each capacity, `probe --ramp` it blind (probed vs configured capacity,
    probing time), then score 2,000 lines at the recommended settings and compare the measured wall
    time with the ramp's prediction (target: within 10%)."""
    from .ramp import ramp

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
    p50 = result.record["latency"]["p50"]
    extra = {"ok": result.stats.counts["ok"], "rejected": f"{refused / max(1, stats.requests):.1%}",
             "p50": f"{p50:.3f}s" if p50 is not None else None}
    if unloaded_p50:
        extra["p50/unloaded"] = round(p50 / unloaded_p50, 2) if p50 else None
    limits = result.record.get("limits") or {}
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
                print("    " + out[-1].line(), flush=True)
    return out


def peak_rss_run(path: Path, url: str, concurrency: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `score` CLI process."""
    run = run_process(score_args(path, url, "--max-concurrent-tasks", str(concurrency)))
    return run.wall, run.rss_mb


def case_c(work: Path, sizes: list[int]) -> list[Measurement]:
    """Memory stays flat: peak RSS of whole runs at zero latency, by input length."""
    out = []
    with ServiceProcess(ServerConfig(latency=0, capacity=0)) as svc:
        for n in sizes:
            path = write_unique_lines(work / f"c{n}.txt", n)
            wall, rss = peak_rss_run(path, svc.url, 256)
            out.append(Measurement("c", "asyncio, zero latency, C=256", n, wall,
                                   extra={"peak_rss_mb": round(rss, 1), "lines_per_s": round(n / wall)}))
            print("    " + out[-1].line(), flush=True)
            path.unlink()
    return out


def _soak_progress(cache: Path) -> int:
    """Scores committed to the soak's cache so far (read-only, so the run being measured is not disturbed)."""
    import sqlite3

    if not cache.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _soak_run(args: list[str], cache: Path, lines: int, kill_at: float | None) -> dict:
    """One `score` process: RSS sampled against progress; SIGKILLed once `kill_at` of the lines are cached."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    samples: list[tuple[int, float]] = []  # (lines cached, RSS MB)
    killed = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # reaped here, for its ru_maxrss
        if pid:
            break
        time.sleep(0.5)
        try:
            rss = ps.memory_info().rss / 2**20
        except psutil.Error:
            continue
        done = _soak_progress(cache)
        if rss > 0:  # 0 once the process is a zombie
            samples.append((done, rss))
        if kill_at is not None and done >= kill_at * lines:
            proc.kill()
            killed = True
            _, status, usage = os.wait4(proc.pid, 0)
            break
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return {"wall": time.perf_counter() - t0, "exit": proc.returncode, "killed": killed,
            "peak_rss_mb": usage.ru_maxrss / 1024, "samples": samples, "stderr": stderr[-500:],
            "cached_at_end": _soak_progress(cache)}


def case_soak(work: Path, lines: int = 200_000, concurrency: int = 512, timeout: float = 2.0) -> list[Measurement]:
    """Soak: `lines` lines against a service with 5% 503s, 2% resets and 1% slow bodies (1 byte/s);
    SIGKILL at half-way, then a resume. Counts lost and duplicated rows; RSS against progress."""
    from .server import deterministic_score

    path = write_unique_lines(work / "soak.txt", lines)
    cache, out = work / "soak.sqlite", work / "soak.out.jsonl"
    cfg = ServerConfig(latency=0.02, capacity=0, error_rate=0.05, reset_rate=0.02, slow_body_rate=0.01, seed=7)
    with ServiceProcess(cfg) as svc:
        args = [sys.executable, "-m", "scoring_lib", "score", str(path), "--url", svc.url, "--cache", str(cache),
                "--output", str(out), "--no-record", "--no-progress", "--max-concurrent-tasks", str(concurrency),
                "--timeout", str(timeout), "--max-retries", "10", "--backoff-base", "0.05", "--backoff-cap", "1"]
        first = _soak_run(args, cache, lines, kill_at=0.5)
        second = _soak_run(args, cache, lines, kill_at=None)
        stats = svc.stats()
    texts = path.read_text(encoding="utf-8").splitlines()
    seen: dict[int, int] = {}
    wrong = errors = 0
    if out.exists():
        with open(out, encoding="utf-8") as f:
            for raw in f:
                row = json.loads(raw)
                seen[row["line"]] = seen.get(row["line"], 0) + 1
                if row["status"] != "ok":
                    errors += 1
                elif row["score"] != deterministic_score(texts[row["line"] - 1]):
                    wrong += 1
    lost = sum(1 for n in range(1, lines + 1) if n not in seen)
    duplicated = sum(c - 1 for c in seen.values() if c > 1)
    quarters = {}
    # RSS as the file is scored: the first run covers the first half (up to the kill), the resume the rest.
    for q, run in ((0.25, first), (0.5, first), (0.75, second), (1.0, second)):
        at = [r for d, r in run["samples"] if d >= q * lines] or [r for _, r in run["samples"][-1:]]
        quarters[f"rss_at_{int(q * 100)}pct_mb"] = round(at[0], 1) if at else None
    extra = {"killed_at_cached": first["cached_at_end"], "lost": lost, "duplicated": duplicated, "error_rows": errors,
             "wrong_scores": wrong, "first_exit": first["exit"], "resume_exit": second["exit"],
             "first_peak_rss_mb": round(first["peak_rss_mb"], 1), "resume_peak_rss_mb": round(second["peak_rss_mb"], 1),
             **quarters, "service_requests": stats.requests, "injected_503": stats.injected_errors,
             "resets": stats.resets, "slow_bodies": stats.slow_bodies}
    m = Measurement("soak", f"C={concurrency}, timeout {timeout:g} s, kill at 50% + resume", lines,
                    first["wall"] + second["wall"], extra=extra)
    if second["exit"] not in (0, 1):
        print(f"    resume failed: {second['stderr']}", flush=True)
    return [m]


BASELINE = Path(__file__).resolve().parent / "baseline_client.py"


@dataclass
class ProcessRun:
    """One whole process: wall seconds, CPU seconds (user + system) and peak RSS."""

    wall: float
    cpu: float
    rss_mb: float
    stdout: str = ""


def run_process(args: list[str], env: dict | None = None) -> ProcessRun:
    """Run `args` to the end; its own wall, CPU and peak RSS (from wait4, so only this process tree's)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=None if env is None else os.environ | env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[1:5])}... failed: {err.read().decode()[-500:]}")
        return ProcessRun(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read().decode())


def score_args(path: Path, url: str, *extra: str, records: Path | None = None) -> list[str]:
    """A whole `score` process against `url`: no cache, no progress, a record only if `records` is given."""
    return [sys.executable, "-m", "scoring_lib", "score", str(path), "--url", url, "--no-cache", "--no-progress",
            "--output", str(path.with_suffix(".out.jsonl")),
            *(["--records-dir", str(records)] if records else ["--no-record"]), *extra]


def case_zero(work: Path, n: int = 50_000, concurrency: int = 100, repeats: int = 2,
              ray: bool = False) -> list[Measurement]:
    """The client's own cost: zero latency, whole processes in turn against one server, `score` beside
    the bare aiohttp baseline (baseline_client.py). Best of `repeats` for each (the machine is shared)."""
    path = write_unique_lines(work / "zero.txt", n)
    loop = event_loop_name()
    # (name, score's extra arguments or None for the bare client, extra environment)
    settings: list[tuple[str, list[str] | None, dict | None]] = [
        ("bare aiohttp baseline", None, None),
        (f"score asyncio 1 thread ({loop})", ["--threads", "1"], None),
        ("score asyncio 2 threads", ["--threads", "2"], None),
    ]
    if loop != "asyncio":  # what uvloop buys: the same run on the standard library's loop
        settings.insert(2, ("score asyncio 1 thread (asyncio loop)", ["--threads", "1"], {EVENT_LOOP_ENV: "asyncio"}))
    if ray:
        settings.append(("score ray 2 workers", ["--engine", "ray", "--workers", "2", "--threads", str(concurrency)],
                         None))
    best: dict[str, ProcessRun] = {}
    with ServiceProcess(ServerConfig(latency=0, capacity=0)) as svc:
        for _ in range(repeats):
            for name, extra, env in settings:
                if extra is None:
                    args = [sys.executable, str(BASELINE), str(path), svc.url, str(concurrency),
                            str(work / "zero.bare.jsonl")]
                else:
                    args = score_args(path, svc.url, "--max-concurrent-tasks", str(concurrency), *extra)
                run = run_process(args, env)
                if name not in best or run.wall < best[name].wall:
                    best[name] = run
    bare = best["bare aiohttp baseline"]
    out = []
    for name, _, _ in settings:
        r = best[name]
        extra = {"lines_per_s": round(n / r.wall), "cpu_us_per_line": round(r.cpu / n * 1e6),
                 "speed_vs_bare": round(bare.wall / r.wall, 2), "cpu_vs_bare": round(r.cpu / bare.cpu, 2)}
        out.append(Measurement("z", f"{name}, C={concurrency}", n, r.wall, extra=extra))
    return out


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
        bare = run_process([sys.executable, str(BASELINE), str(path), svc.url, "2048", str(work / "ray.bare.jsonl")])
        b = Measurement("r", "bare aiohttp baseline, C=2048 (whole process)", n, bare.wall, m.bound_seconds,
                        extra={"efficiency": round(m.bound_seconds / bare.wall, 2)})
        m.extra["efficiency_vs_bare"] = round(b.wall_seconds / m.wall_seconds, 2)
        out += [b, m]
    with ServiceProcess(ServerConfig(latency=whole_latency, capacity=capacity)) as svc:
        run = run_process(score_args(path, svc.url, "--engine", "ray", "--workers", "32", "--threads", "64",
                                     "--max-concurrent-tasks", "2048", "--connector-limit", "100"))
        bound = math.ceil(n / capacity) * whole_latency
        out.append(Measurement("r", f"whole `score` ray 32x64 at {whole_latency:g} s", n, run.wall, bound,
                               extra={"target": "<= 40 s", "cpu_s": round(run.cpu, 1)}))
    return out


def case_ray_sweep(work: Path, points: int = 3, time_scale: float = 0.05) -> list[Measurement]:
    """A sweep's Ray start-up, paid once: one local cluster, then `points` whole `score` processes
    (as a sweep's kernels are) joining it, each starting its 4 workers; beside one cold run."""
    from .engines.ray_engine import LocalCluster

    n, capacity = 400, 200
    path = write_unique_lines(work / "sweep.txt", n)
    runs = work / "runs"
    out = []
    with ServiceProcess(ServerConfig(latency=4.15, capacity=capacity, time_scale=time_scale)) as svc:
        cold = run_process(score_args(path, svc.url, "--engine", "ray", "--workers", "4", "--threads", "16",
                                      records=runs / "cold"))
        out.append(Measurement("w", "cold run (starts its own Ray)", n, cold.wall,
                               startup_seconds=_recorded_startup(runs / "cold")))
        with LocalCluster() as cluster:
            out.append(Measurement("w", "sweep's cluster, started once", 0, cluster.startup_seconds,
                                   startup_seconds=cluster.startup_seconds))
            for i in range(points):
                run = run_process(score_args(path, svc.url, "--engine", "ray", "--workers", "4", "--threads", "16",
                                             records=runs / f"p{i}"), env=cluster.env())
                out.append(Measurement("w", f"point {i + 1} joining it", n, run.wall,
                                       startup_seconds=_recorded_startup(runs / f"p{i}")))
    return out


class InstantEngine:
    """A Dispatcher whose service is infinitely fast: every item is scored the moment it is submitted.
    What is left is the driver's own cost: reader, dedupe, cache, ordered writer, records."""

    name = "instant"

    def __init__(self, room: int = 1000) -> None:
        self._room = room
        self._done: list = []
        self.startup_seconds = 0.0

    def __enter__(self) -> "InstantEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def room(self) -> int:
        return self._room - len(self._done)

    def submit(self, items: list) -> None:
        from .client import Outcome

        now = time.time()
        self._done += [(key, Outcome(0.5, None, 1, now, now, 0.0, now)) for key, _ in items]

    def poll(self, timeout: float) -> list:
        done, self._done = self._done, []
        return done

    def info(self) -> dict:
        return {"sessions": 0, "startup_seconds": 0.0}

    def close(self, cancel: bool = False) -> None:
        pass


def case_driver(work: Path, n: int = 200_000) -> list[Measurement]:
    """The single-driver ceiling: lines/s of the whole pipeline when the service answers instantly,
    without and with the persistent cache (one process, one driver thread)."""
    from unittest import mock

    from . import pipeline

    path = write_unique_lines(work / "driver.txt", n)
    out = []
    for name, cache in (("no cache (run-local store)", None), ("persistent cache", work / "driver-cache.sqlite")):
        config = RunConfig(input=path, client=ClientConfig(url="http://127.0.0.1:9/"), cache=cache, records_dir=None,
                           progress=False, output=work / "driver.out.jsonl")
        cpu0 = time.process_time()
        with mock.patch.object(pipeline, "open_engine", lambda _config: InstantEngine()):
            result = score_file(config, write_record=False)
        cpu = time.process_time() - cpu0
        wall = result.stats.scoring_seconds
        out.append(Measurement("d", f"driver only, {name}", n, wall,
                               extra={"lines_per_s": round(n / wall), "cpu_us_per_line": round(cpu / n * 1e6)}))
    return out


def _recorded(records: Path, key: str) -> float | None:
    """`key` of the run record a whole `score` process wrote into `records`."""
    for f in records.glob("*.json"):
        return json.loads(f.read_text()).get(key)
    return None


def _recorded_startup(records: Path) -> float | None:
    return _recorded(records, "startup_seconds")


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _printed(measurements: list[Measurement]) -> list[Measurement]:
    for m in measurements:
        print("    " + m.line(), flush=True)
    return measurements


def run_bench(cases: str = "zdabcrw", time_scale: float = 0.05, b_time_scale: float = 1.0,
              rss_sizes: tuple[int, ...] = (100_000, 1_000_000), ray: bool = False,
              out_dir: Path | None = Path("results/bench"), soak_lines: int = 200_000, p_time_scale: float = 0.5,
              p_capacities: tuple[int, ...] = (50, 200, 1000)) -> list[Measurement]:
    print(f"machine: {machine_info()}")
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="scoring-bench-") as tmp:
        work = Path(tmp)
        if "a" in cases:
            print(f"(a) 2,000 lines, capacity 200, latency 4.15 s x time scale {time_scale}:", flush=True)
            results += _printed(case_a(work, time_scale, ray))
        if "b" in cases:
            print(f"(b) 10,000 lines, latency 1 s x time scale {b_time_scale}, C=1000 (target wall/bound <= 1.05; "
                  "the bare client shows what the machine allows):", flush=True)
            results += _printed(case_b(work, b_time_scale))
        if "p" in cases:
            print(f"(p) probe --ramp, capacities {'/'.join(map(str, p_capacities))}, latency 4.15 s x time scale "
                  f"{p_time_scale}; then 2,000 lines at the recommended settings (target measured/predicted within "
                  "10%):", flush=True)
            results += case_p(work, p_time_scale, p_capacities)
        if "c" in cases:
            print("(c) peak RSS at zero latency (target <= 300 MB and flat):", flush=True)
            results += case_c(work, list(rss_sizes))
        if "s" in cases:
            print(f"(soak) {soak_lines:,} lines, 5% 503 + 2% resets + 1% slow bodies, SIGKILL at 50% then resume "
                  "(target: 0 lost, 0 duplicated, RSS flat):", flush=True)
            results += _printed(case_soak(work, soak_lines))
        if "l" in cases:
            print(f"(l) limits: fixed best / fixed too high / auto (time scale {time_scale}):", flush=True)
            results += case_limits(work, time_scale, ray)
        if "d" in cases:
            print("(d) the single-driver ceiling: the whole pipeline against an instant service (no HTTP):",
                  flush=True)
            results += _printed(case_driver(work))
        if "z" in cases:
            print("(z) the client's own cost at zero latency, whole processes against one server "
                  "(targets: speed_vs_bare >= 0.85 and cpu_vs_bare <= 1.2 for 1 thread):", flush=True)
            results += _printed(case_zero(work, ray=ray_available()))
        if "r" in cases and ray_available():
            print(f"(r) Ray at the seed's shape, 32 workers x 64 threads (targets: efficiency >= 0.85; "
                  f"whole run <= 40 s):", flush=True)
            results += _printed(case_ray(work, time_scale))
        if "w" in cases and ray_available():
            print("(w) a Ray sweep's start-up, paid once (cluster once, then each point joins it):", flush=True)
            results += _printed(case_ray_sweep(work, time_scale=time_scale))
        if "o" in cases:  # the zoo (bench_zoo.py): auto against every kind of service of issue 16
            from .bench_zoo import case_zoo

            print(f"(o) the zoo: best fixed vs auto per service behaviour (time scale {time_scale}):", flush=True)
            case_zoo(work, time_scale, ray=ray_available())
        if set(cases) & set("rw") and not ray_available():
            print("(r, w) skipped: Ray is not installed (pip install -e '.[ray]')", flush=True)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = out_dir / f"bench-{stamp}.json"
        path.write_text(json.dumps({
            "created": stamp, "machine": machine_info(), "versions": package_versions(), "git_commit": git_commit(),
            "time_scale": time_scale, "b_time_scale": b_time_scale, "p_time_scale": p_time_scale,
            "measurements": [asdict(m) | {"ratio": m.ratio} for m in results]}, indent=1))
        print(f"saved: {path}")
    return results
