"""Folders of run records: read them (refusing damaged files by name), choose the ones to report,
and project each onto one flat row of a tidy pandas DataFrame, its bound beside it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .bounds import effective_pool, honest_bound
from .paths import RUNS, resolve
from .config import ServerConfig
from .record import RecordError, RunRecord, RunStatus, parse_record
from .service import ServiceProfile


CALIBRATION_FILE = "calibration.json"


def read_record(path: Path) -> RunRecord:
    """One record file, migrated and checked; RecordError names the file and the key."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        rec = parse_record(raw)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise RecordError(f"{path}: not a readable JSON file ({exc.__class__.__name__})") from None
    rec.record_file = path.name
    return rec


def read_records(directory: str | os.PathLike, strict: bool = False, warn=None) -> list[RunRecord]:
    """Every record under `directory`, oldest first. A damaged file is skipped with one warning
    line (to stderr, or to `warn`), or, when `strict`, stops everything with its RecordError."""
    out = []
    for path in sorted(Path(directory).rglob("*.json")):
        if path.name == CALIBRATION_FILE:  # a sweep's calibration (calibration.py) beside its records, not a run
            continue
        if any(part.startswith(".") for part in path.relative_to(directory).parent.parts):
            continue  # a hidden folder: an earlier sweep set aside (sweep.set_aside), read only when named
        try:
            out.append(read_record(path))
        except RecordError as exc:
            if strict:
                raise
            (warn or _to_stderr)(f"warning: skipped record {exc}")
    return out


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def record_profile(rec: RunRecord) -> ServiceProfile:
    """The service profile a record was run against: the one it carries, or (older records) the
    simulator's settings as configured figures, or nothing known."""
    svc = rec.service
    if isinstance(svc.get("profile"), dict):
        try:
            return ServiceProfile.from_dict(svc["profile"])
        except Exception:  # noqa: BLE001 - a damaged profile in an old record means nothing is known
            return ServiceProfile(url=svc.get("url"))
    if svc.get("latency") is not None and svc.get("kind") in ("embedded", "simulated"):
        keys = ("latency", "latency_dist", "capacity", "rate_limit", "error_rate", "time_scale", "seed")
        try:
            cfg = ServerConfig(**{k: svc[k] for k in keys if svc.get(k) is not None})
        except Exception:  # noqa: BLE001
            return ServiceProfile(url=svc.get("url"))
        return ServiceProfile.from_server_config(cfg, url=svc.get("url"))
    return ServiceProfile(url=svc.get("url"))


def _bound_for(rec: RunRecord) -> tuple[float | None, float | None, float, str, ServiceProfile]:
    """(latency L, bound seconds, effective pool, bound source, profile) for a record, from the
    service profile only: never from the run's own latency (that would echo the measurement)."""
    info = rec.view("engine_info")
    prof = record_profile(rec)
    pool = effective_pool(rec.connector_limit, info.sessions or 1)
    ceiling = rec.max_concurrent_tasks or 0
    # Ray workers keep min(threads, share) in flight each: the run may allow fewer than C at once.
    concurrency = min(ceiling, info.in_flight_limit or ceiling)
    if not concurrency:
        return prof.latency.value, None, pool, "unknown", prof
    bound, source = honest_bound(rec.unique_requested or 0, pool, concurrency,
                                 prof.latency.value, prof.capacity.value, prof.rate_limit.value,
                                 prof.latency.source, prof.capacity.source, prof.rate_limit.source)
    return prof.latency.value, bound, pool, source, prof


def _as_record(rec: RunRecord | dict) -> RunRecord:
    return rec if isinstance(rec, RunRecord) else parse_record(rec)


def tidy_row(rec: RunRecord | dict) -> dict:
    """One record as one flat row: parameters, service, outcome, bound, machine, versions."""
    rec = _as_record(rec)
    svc, info, limits, tags = rec.view("service"), rec.view("engine_info"), rec.view("limits"), rec.tags
    latency, bound, pool, bound_source, prof = _bound_for(rec)
    lat, machine, versions = rec.latency, rec.machine, rec.versions
    scoring = rec.scoring_seconds
    return {
        "run_id": rec.run_id, "created": rec.created, "status": rec.status.value,
        "failure": rec.failure, "label": rec.label,
        "sweep": tags.sweep, "point_id": tags.point_id, "repeat": tags.repeat, "warmup": tags.warmup,
        "engine": rec.engine, "threads": rec.threads, "workers": rec.workers,
        "max_concurrent_tasks": rec.max_concurrent_tasks, "connector_limit": str(rec.connector_limit),
        "concurrency": rec.concurrency, "rate_limit": rec.rate_limit,
        "http_429": limits.http_429, "http_503": limits.http_503, "final_limit": limits.final_limit,
        "final_rate": limits.final_rate, "rate_cuts": limits.rate_cuts,
        "sessions": info.sessions, "effective_pool": pool,
        "service_kind": svc.kind, "service_url": svc.url, "service_latency": svc.latency,
        "service_capacity": prof.capacity.value, "time_scale": svc.time_scale or prof.time_scale,
        "latency_dist": svc.latency_dist,
        "lines": rec.lines, "ok": rec.ok, "empty": rec.empty, "error": rec.error,
        "requested": rec.unique_requested, "requests": rec.requests, "retries": rec.retries,
        "startup_seconds": rec.startup_seconds, "scoring_seconds": scoring,
        "total_seconds": rec.total_seconds, "lines_per_second": rec.lines_per_second,
        "latency_s": latency, "bound_seconds": bound, "bound_source": bound_source,
        "latency_source": prof.latency.source, "capacity_source": prof.capacity.source,
        "service_rate_limit": prof.rate_limit.value,
        "efficiency": (bound / scoring) if (bound and scoring) else None,
        "latency_p50": lat.p50, "latency_p90": lat.p90, "latency_p99": lat.p99, "latency_max": lat.max,
        "hostname": machine.hostname, "cpu_count": machine.cpu_count, "os": machine.os, "python": machine.python,
        "scoring_workbench": versions.get("scoring-workbench"), "aiohttp": versions.get("aiohttp"),
        "ray": versions.get("ray"), "git_commit": rec.provenance.text, "record_file": rec.record_file,
    }


TIDY_COLUMNS = list(tidy_row(RunRecord(run_id="", created="", max_concurrent_tasks=1)))


def sweep_of(rec: RunRecord) -> str | None:
    """The sweep a record belongs to, or None for an ad-hoc run (`score`, a notebook on its own)."""
    return rec.tags.sweep or None


def sweeps_in(records: list[RunRecord]) -> list[str]:
    """The sweeps these records belong to, the most recently run last."""
    last: dict[str, str] = {}
    for rec in records:
        name = sweep_of(rec)
        if name:
            last[name] = max(last.get(name, ""), rec.created)
    return sorted(last, key=lambda n: (last[n], n))


def select_records(records: list[RunRecord], sweeps: list[str] | None = None,
                   adhoc: bool = False) -> list[RunRecord]:
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


def is_measured(rec: RunRecord) -> bool:
    """A finished, non-warm-up run: what timing figures are made of."""
    return rec.status is RunStatus.OK and not rec.tags.warmup


def tidy_frame(records: list[RunRecord]):
    """Records as one tidy pandas DataFrame, one row per run."""
    import pandas as pd  # optional heavy dependency: only the report and notebooks need a frame

    return pd.DataFrame([tidy_row(rec) for rec in records], columns=TIDY_COLUMNS)


def load_runs(directory: str | os.PathLike | None = None, sweeps: list[str] | None = None, adhoc: bool = True):
    """Run records below `directory` (searched recursively; default results/runs under the project
    root) as one tidy pandas DataFrame; `sweeps` and `adhoc` choose which, as in select_records."""
    records = read_records(resolve(directory) if directory is not None else RUNS)
    return tidy_frame(select_records(records, sweeps, adhoc))
