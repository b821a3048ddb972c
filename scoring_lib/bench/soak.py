"""The soak case: a long run against a faulty service, SIGKILLed half-way and resumed; nothing may be
lost or written twice, and memory stays flat."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ..config import ServerConfig
from ..server import ServiceProcess, deterministic_score
from .measure import Measurement, Target, write_unique_lines


def _soak_progress(cache: Path) -> int:
    """Scores committed to the soak's cache so far (read-only, so the run being measured is not disturbed)."""
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
                    first["wall"] + second["wall"], extra=extra,
                    targets=[Target("lost", "<=", 0), Target("duplicated", "<=", 0), Target("wrong_scores", "<=", 0)])
    if second["exit"] not in (0, 1):
        print(f"    resume failed: {second['stderr']}", flush=True)
    return [m]

