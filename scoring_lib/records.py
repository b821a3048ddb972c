"""Run records: one JSON file per run, with parameters, timings, counts, machine and versions.

One file per run means concurrent runs never corrupt or lose each other's records; the loader
turns a folder of them into one tidy pandas DataFrame.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import platform
import subprocess
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from .config import RunConfig

if TYPE_CHECKING:
    from .pipeline import RunStats

SCHEMA_VERSION = 1
TIMELINE_POINTS = 200


def machine_info() -> dict:
    return {
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def package_versions() -> dict:
    out = {}
    for name in ("scoring-workbench", "aiohttp", "ray", "pandas", "papermill"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit the code was run from, with '+dirty' when the tree has changes."""
    here = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def percentiles(values: list[float], qs=(50, 90, 99)) -> dict:
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


def build_record(config: RunConfig, stats: "RunStats", server_info: dict | None = None) -> dict:
    """The run record as a JSON-ready dict; never contains the API key."""
    sample = stats.requests_sample
    latencies = [lat for _, _, lat, ok in sample.items if ok]
    scale = sample.seen / len(sample.items) if sample.items else 1.0
    end = stats.scoring_started + stats.scoring_seconds
    now = datetime.now(timezone.utc)
    info = dict(stats.engine_info)
    cl = config.client
    return {
        "schema": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex,
        "label": config.label,
        "created": now.isoformat(timespec="seconds"),
        "engine": config.engine,
        "threads": config.resolved_threads,
        "workers": config.resolved_workers if config.engine == "ray" else None,
        "max_concurrent_tasks": config.max_concurrent_tasks,
        "connector_limit": "auto" if cl.connector_limit is None else cl.connector_limit,
        "timeout": cl.timeout,
        "max_retries": cl.max_retries,
        "input": str(config.input),
        "output": str(config.resolved_output),
        "cache": str(config.cache) if config.cache else None,
        "service": dict(server_info or {"kind": "external", "url": cl.url}),
        "lines": stats.lines,
        "ok": stats.counts["ok"],
        "empty": stats.counts["empty"],
        "error": stats.counts["error"],
        "unique_requested": stats.unique_requested,
        "cache_hits": stats.cache_hits,
        "duplicates": stats.duplicates,
        "requests": stats.requests,
        "retries": stats.retries,
        "startup_seconds": round(stats.startup_seconds, 4),
        "scoring_seconds": round(stats.scoring_seconds, 4),
        "total_seconds": round(stats.total_seconds, 4),
        "lines_per_second": round(stats.lines / stats.scoring_seconds, 3) if stats.scoring_seconds else None,
        "latency": percentiles(latencies),
        "timeline": in_flight_timeline([(s, e) for s, e, _, _ in sample.items], stats.scoring_started, end, scale),
        "engine_info": info,
        "extra": dict(config.extra),
        "machine": machine_info(),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }


def save_record(record: dict, directory: str | os.PathLike) -> Path:
    """Write one record file atomically (written aside, then renamed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stamp = record["created"].replace(":", "").replace("-", "").replace("+0000", "Z")
    path = d / f"{stamp}-{record['engine']}-{record['run_id'][:8]}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_records(directory: str | os.PathLike) -> list[dict]:
    """Every record under `directory`, oldest first; unreadable files are skipped by name."""
    out = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("schema") == SCHEMA_VERSION:
            rec["record_file"] = path.name
            out.append(rec)
    return out
