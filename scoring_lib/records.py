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
    for name in ("scoring-workbench", "aiohttp", "uvloop", "ray", "pandas", "papermill"):
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
    limits = dict(info.pop("limits", None) or {})
    if limits.get("limit_history") and limits.get("started_at") and stats.scoring_started:
        # Seconds into the scoring phase, like the in-flight timeline.
        shift = limits["started_at"] - stats.scoring_started
        limits["limit_history"] = [[round(t + shift, 3), v] for t, v in limits["limit_history"]]
    cl = config.client
    return {
        "schema": SCHEMA_VERSION,
        "status": "ok",
        "run_id": uuid.uuid4().hex,
        "label": config.label,
        "created": now.isoformat(timespec="seconds"),
        "engine": config.engine,
        "threads": config.resolved_threads,
        "workers": config.resolved_workers if config.engine == "ray" else None,
        # The bound and the report need a number: an `auto` run records its ceiling, and says it was auto.
        "max_concurrent_tasks": config.concurrency_ceiling,
        "concurrency": "auto" if config.adaptive else "fixed",
        "rate_limit": config.rate_limit,
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
        # Limit over time (adaptive runs), attempts by kind, 429/503 counts, why the run stopped if it did.
        "limits": limits,
        "error_causes": dict(stats.causes),
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
    try:
        tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a torn record beside the good ones
        raise
    return path


def read_records(directory: str | os.PathLike) -> list[dict]:
    """Every record under `directory`, oldest first; unreadable files are skipped by name."""
    out = []
    for path in sorted(Path(directory).rglob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("schema") == SCHEMA_VERSION:
            rec["record_file"] = path.name
            out.append(rec)
    return out


def record_profile(rec: dict):
    """The service profile a record was run against: the one it carries, or (older records) the
    simulator's settings as configured figures, or nothing known."""
    from .service import ServiceProfile

    svc = rec.get("service") or {}
    if isinstance(svc.get("profile"), dict):
        try:
            return ServiceProfile.from_dict(svc["profile"])
        except Exception:  # noqa: BLE001 - a damaged profile in an old record means nothing is known
            return ServiceProfile(url=svc.get("url"))
    if svc.get("latency") is not None and svc.get("kind") in ("embedded", "simulated"):
        from .config import ServerConfig

        keys = ("latency", "latency_dist", "capacity", "rate_limit", "error_rate", "time_scale", "seed")
        try:
            cfg = ServerConfig(**{k: svc[k] for k in keys if svc.get(k) is not None})
        except Exception:  # noqa: BLE001
            return ServiceProfile(url=svc.get("url"))
        return ServiceProfile.from_server_config(cfg, url=svc.get("url"))
    return ServiceProfile(url=svc.get("url"))


def _bound_for(rec: dict) -> tuple[float | None, float | None, float, str, object]:
    """(latency L, bound seconds, effective pool, bound source, profile) for a record, from the
    service profile only: never from the run's own latency (that would echo the measurement)."""
    from .bounds import effective_pool, honest_bound

    info = rec.get("engine_info") or {}
    prof = record_profile(rec)
    sessions = info.get("sessions") or 1
    pool = effective_pool(rec.get("connector_limit"), sessions)
    # Ray workers keep min(threads, share) in flight each: the run may allow fewer than C at once.
    concurrency = min(rec["max_concurrent_tasks"], info.get("in_flight_limit") or rec["max_concurrent_tasks"])
    bound, source = honest_bound(rec.get("unique_requested") or 0, pool, concurrency,
                                 prof.latency.value, prof.capacity.value, prof.rate_limit.value,
                                 prof.latency.source, prof.capacity.source, prof.rate_limit.source)
    return prof.latency.value, bound, pool, source, prof


def tidy_row(rec: dict) -> dict:
    """One record as one flat row: parameters, service, outcome, bound, machine, versions."""
    svc = rec.get("service") or {}
    info = rec.get("engine_info") or {}
    extra = rec.get("extra") or {}
    machine = rec.get("machine") or {}
    latency, bound, pool, bound_source, prof = _bound_for(rec)
    lat = rec.get("latency") or {}
    scoring = rec.get("scoring_seconds")
    return {
        "run_id": rec.get("run_id"), "created": rec.get("created"), "status": rec.get("status", "ok"),
        "failure": rec.get("failure"), "label": rec.get("label"),
        "sweep": extra.get("sweep"), "point_id": extra.get("point_id"), "repeat": extra.get("repeat"),
        "warmup": bool(extra.get("warmup", False)),
        "engine": rec.get("engine"), "threads": rec.get("threads"), "workers": rec.get("workers"),
        "max_concurrent_tasks": rec.get("max_concurrent_tasks"), "connector_limit": str(rec.get("connector_limit")),
        "concurrency": rec.get("concurrency", "fixed"), "rate_limit": rec.get("rate_limit"),
        "http_429": (rec.get("limits") or {}).get("http_429"), "http_503": (rec.get("limits") or {}).get("http_503"),
        "final_limit": (rec.get("limits") or {}).get("final_limit"),
        "sessions": info.get("sessions"), "effective_pool": pool,
        "service_kind": svc.get("kind"), "service_url": svc.get("url"), "service_latency": svc.get("latency"),
        "service_capacity": prof.capacity.value, "time_scale": svc.get("time_scale") or prof.time_scale,
        "latency_dist": svc.get("latency_dist"),
        "lines": rec.get("lines"), "ok": rec.get("ok"), "empty": rec.get("empty"), "error": rec.get("error"),
        "requested": rec.get("unique_requested"), "requests": rec.get("requests"), "retries": rec.get("retries"),
        "startup_seconds": rec.get("startup_seconds"), "scoring_seconds": scoring,
        "total_seconds": rec.get("total_seconds"), "lines_per_second": rec.get("lines_per_second"),
        "latency_s": latency, "bound_seconds": bound, "bound_source": bound_source,
        "latency_source": prof.latency.source, "capacity_source": prof.capacity.source,
        "service_rate_limit": prof.rate_limit.value,
        "efficiency": (bound / scoring) if (bound and scoring) else None,
        "latency_p50": lat.get("p50"), "latency_p90": lat.get("p90"), "latency_p99": lat.get("p99"),
        "latency_max": lat.get("max"),
        "hostname": machine.get("hostname"), "cpu_count": machine.get("cpu_count"), "os": machine.get("os"),
        "python": machine.get("python"),
        "scoring_workbench": (rec.get("versions") or {}).get("scoring-workbench"),
        "aiohttp": (rec.get("versions") or {}).get("aiohttp"), "ray": (rec.get("versions") or {}).get("ray"),
        "git_commit": rec.get("git_commit"), "record_file": rec.get("record_file"),
    }


def sweep_of(rec: dict) -> str | None:
    """The sweep a record belongs to, or None for an ad-hoc run (`score`, a notebook on its own)."""
    return (rec.get("extra") or {}).get("sweep") or None


def sweeps_in(records: list[dict]) -> list[str]:
    """The sweeps these records belong to, the most recently run last."""
    last: dict[str, str] = {}
    for rec in records:
        name = sweep_of(rec)
        if name:
            last[name] = max(last.get(name, ""), str(rec.get("created") or ""))
    return sorted(last, key=lambda n: (last[n], n))


def select_records(records: list[dict], sweeps: list[str] | None = None, adhoc: bool = False) -> list[dict]:
    """The records of the named sweeps (all sweeps when `sweeps` is None), plus ad-hoc runs only when
    `adhoc` is true: a plain `score` run never joins a sweep's report by accident."""
    wanted = None if sweeps is None else set(sweeps)
    out = []
    for rec in records:
        name = sweep_of(rec)
        if name is None:
            if adhoc:
                out.append(rec)
        elif wanted is None or name in wanted:
            out.append(rec)
    return out


def tidy_frame(records: list[dict]):
    """Records as one tidy pandas DataFrame, one row per run."""
    import pandas as pd

    rows = [tidy_row(rec) for rec in records]
    return pd.DataFrame(rows, columns=list(tidy_row({"max_concurrent_tasks": 1}).keys()))


def load_runs(directory: str | os.PathLike | None = None, sweeps: list[str] | None = None, adhoc: bool = True):
    """Run records below `directory` (searched recursively; default results/runs under the project
    root) as one tidy pandas DataFrame; `sweeps` and `adhoc` choose which, as in select_records."""
    from .paths import RUNS, resolve

    records = read_records(resolve(directory) if directory is not None else RUNS)
    return tidy_frame(select_records(records, sweeps, adhoc))


def failure_record(parameters: dict, failure: str, extra: dict | None = None) -> dict:
    """A record for a run that did not finish, so a sweep keeps the failed point in its table."""
    now = datetime.now(timezone.utc)
    return {
        "schema": SCHEMA_VERSION, "status": "failed", "failure": failure, "run_id": uuid.uuid4().hex,
        "label": None, "created": now.isoformat(timespec="seconds"),
        "engine": parameters.get("engine"), "threads": parameters.get("threads"),
        "workers": parameters.get("workers"), "max_concurrent_tasks": parameters.get("max_concurrent_tasks"),
        "connector_limit": parameters.get("connector_limit"), "service": parameters.get("service"),
        "extra": dict(extra or {}), "machine": machine_info(), "versions": package_versions(),
        "git_commit": git_commit(),
    }
