"""The run record: one typed record per run, with a schema version, and the one migration that
turns records written by older versions into today's shape.

A record is data a file says: `parse_record` checks every field against its declared type and
refuses with one line naming the key, so a hand-edited record never reaches the report as a
traceback. Building a record, writing it as JSON and reading it back are the same type."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from .config import RunConfig
from .errors import ScoringError
from .provenance import Provenance, current, known, machine_info, package_versions, resolved
from .redact import safe_url
from .settings import settings_record
from .stats import RunStats, in_flight_timeline, percentiles

SCHEMA_VERSION = 2
# Numbers and flags are strict (a string where a number goes is refused, not converted); containers
# are lax, so nested sections are read from plain JSON objects. The record types are plain dataclasses:
# a run that only writes its record never imports pydantic (a few hundred ms of every `score` process);
# pydantic checks them when a record is read back (`_adapter`), with these annotations.
_TYPED = {"allow_inf_nan": False}
_VIEW = {"allow_inf_nan": False, "extra": "ignore"}


def _define_checked_types() -> None:
    """The constrained types the annotations below name, defined when the first validator is built."""

    from pydantic import Field, Strict

    globals().update(
        Count=Annotated[int, Strict(), Field(ge=0, le=10**12)],
        Seconds=Annotated[float, Strict(), Field(ge=0, le=1e9)],
        Number=Annotated[float, Strict()],
        Flag=Annotated[bool, Strict()],
        Limit=Annotated[float, Strict(), Field(ge=0, allow_inf_nan=True)],  # a timeout or rate may be unlimited
        Scale=Annotated[float, Strict(), Field(gt=0, le=1e6)],
        Whole=Annotated[int, Strict()],
        LimitValue=Annotated[float, Strict(), Field(ge=0, le=1e12)],
        Rate=Annotated[float, Strict(), Field(ge=0)])


class RecordError(ScoringError):
    """A record file that is not a run record of a known schema (exit 2, one line naming file and key)."""


class RunStatus(str, Enum):
    OK = "ok"
    FAILED = "failed"


@dataclass
class Latency:
    """Request latency as the client saw it, over the run's request sample."""
    __pydantic_config__ = _TYPED  # read by pydantic when a record is checked

    p50: Seconds | None = None
    p90: Seconds | None = None
    p99: Seconds | None = None
    mean: Seconds | None = None
    max: Seconds | None = None


@dataclass
class Machine:
    __pydantic_config__ = _TYPED  # read by pydantic when a record is checked

    hostname: str | None = None
    cpu_count: Count | None = None
    os: str | None = None
    machine: str | None = None
    python: str | None = None


# Views of the free-form sections the report reads: checked when a record is parsed, so a damaged
# `service.time_scale` is refused by name like a damaged top-level figure.
@dataclass
class ServiceView:
    __pydantic_config__ = _VIEW  # read by pydantic when a record is checked

    kind: str | None = None
    url: str | None = None
    latency: Seconds | None = None
    latency_dist: str | None = None
    capacity: Count | None = None
    time_scale: Scale | None = None
    profile: dict[str, Any] | None = None


@dataclass
class EngineView:
    __pydantic_config__ = _VIEW  # read by pydantic when a record is checked

    sessions: Count | None = None
    in_flight_limit: Count | None = None


@dataclass
class LimitsView:
    __pydantic_config__ = _VIEW  # read by pydantic when a record is checked

    http_429: Count | None = None
    http_503: Count | None = None
    final_limit: LimitValue | None = None
    limit_history: list[tuple[Number, Number]] | None = None
    final_rate: Rate | None = None  # an `auto` run's send rate at its end, requests/s (None: unbounded)
    rate_cuts: Count | None = None
    rate_history: list[tuple[Number, Rate | None]] | None = None  # None: unbounded at that time


@dataclass
class Tags:
    """What a sweep writes into `extra`: which sweep, point and repeat a run was."""
    __pydantic_config__ = _VIEW  # read by pydantic when a record is checked

    sweep: str | None = None
    point_id: str | None = None
    repeat: Whole | None = None  # a warm-up run is repeat -1
    warmup: Flag = False


_VIEWS = {"service": ServiceView, "engine_info": EngineView, "limits": LimitsView, "extra": Tags}


@functools.cache
def _adapter(kind: type):
    """One validator per type, built once (building one is the costly part); pydantic is imported
    here, on the first record read or checked, not by a run that only writes one."""
    from pydantic import TypeAdapter

    _define_checked_types()
    return TypeAdapter(kind)


@dataclass
class RunRecord:
    """One run: its settings, service, outcome, timings, machine, versions and provenance."""
    __pydantic_config__ = _TYPED  # read by pydantic when a record is checked

    run_id: str = ""
    created: str = ""  # ISO 8601, UTC
    schema_version: Literal[2] = SCHEMA_VERSION
    status: RunStatus = RunStatus.OK
    failure: str | None = None
    label: str | None = None
    engine: str | None = None
    threads: Count | None = None
    workers: Count | None = None
    max_concurrent_tasks: Count | None = None  # an `auto` run records its ceiling
    concurrency: Literal["fixed", "auto"] = "fixed"
    rate_limit: Limit | None = None
    connector_limit: Count | Literal["auto"] | None = None
    timeout: Limit | None = None
    max_retries: Count | None = None
    input: str | None = None
    output: str | None = None
    cache: str | None = None
    service: dict[str, Any] = field(default_factory=dict)
    # Counts: None where a run never got that far (a failed point's record)
    lines: Count | None = None
    ok: Count | None = None
    empty: Count | None = None
    error: Count | None = None
    unique_requested: Count | None = None
    cache_hits: Count | None = None
    duplicates: Count | None = None
    requests: Count | None = None
    retries: Count | None = None
    startup_seconds: Seconds | None = None
    scoring_seconds: Seconds | None = None
    total_seconds: Seconds | None = None
    lines_per_second: Rate | None = None
    latency: Latency = field(default_factory=Latency)
    timeline: list[tuple[Number, Number]] = field(default_factory=list)
    engine_info: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)  # limit over time, attempts by kind, 429/503 counts
    error_causes: dict[str, Count] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # the run's settings, as the settings model names them
    machine: Machine = field(default_factory=Machine)
    versions: dict[str, str | None] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    record_file: str | None = None  # where it was read from; never written

    @property
    def tags(self) -> Tags:
        return self.view("extra")

    def view(self, section: str):
        """A checked view of a free-form section (service, engine_info, limits, extra)."""
        return _adapter(_VIEWS[section]).validate_python(getattr(self, section))

    def __getitem__(self, key: str):
        """Read-only, the JSON form's `key`: code written against the dict records still reads them."""
        return self.to_json()[key]

    def to_json(self) -> dict:
        """The record as the JSON a file holds."""
        out = dataclasses.asdict(self)
        out.pop("record_file")
        out["status"] = self.status.value
        return out


def settings_section(config: RunConfig) -> dict:
    """The run's settings for the record, as the settings model names them (plain JSON, url masked)."""
    return settings_record(config)


def _legacy_settings(raw: dict) -> dict:
    """A schema-1 record's settings, from the top-level fields it kept them in."""
    keys = ("engine", "threads", "workers", "max_concurrent_tasks", "rate_limit", "connector_limit", "timeout",
            "max_retries")
    out = {k: raw.get(k) for k in keys}
    if raw.get("concurrency") == "auto":
        out["max_concurrent_tasks"] = "auto"
    return out


def migrate(raw: dict) -> dict:
    """Any record a version of this project wrote, in today's schema (the one migration function)."""
    version = raw.get("schema_version", raw.get("schema"))
    if version == SCHEMA_VERSION:
        return raw
    if version != 1 or isinstance(version, bool):
        raise RecordError(f"key 'schema_version': {version!r} is not a known record schema (1 or {SCHEMA_VERSION})")
    commit = raw.get("git_commit")
    if commit is not None and not isinstance(commit, str):
        raise RecordError(f"key 'git_commit': expected a string or null, got {type(commit).__name__}")
    out = {k: v for k, v in raw.items() if k not in ("schema", "git_commit")}
    out["schema_version"] = SCHEMA_VERSION
    out["provenance"] = dataclasses.asdict(Provenance.from_text(commit, "not recorded by this schema-1 record"))
    out.setdefault("settings", _legacy_settings(raw))
    return out


def _problem(exc, prefix: tuple = ()) -> str:
    """The first problem of a pydantic ValidationError, as one line naming the key."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in (*prefix, *err["loc"]))
    return f"key '{where}': {err['msg'].lower()}"


def parse_record(raw: Any) -> RunRecord:
    """A record from its JSON, migrated and checked; RecordError names the first wrong key."""
    if not isinstance(raw, dict):
        raise RecordError(f"not a run record (a JSON object): got {type(raw).__name__}")
    data = migrate(raw)
    from pydantic import ValidationError  # a heavy import, for reading records only

    try:
        rec = _adapter(RunRecord).validate_python(data)
    except ValidationError as exc:
        raise RecordError(_problem(exc)) from None
    for section in _VIEWS:
        try:
            rec.view(section)
        except ValidationError as exc:
            raise RecordError(_problem(exc, (section,))) from None
    return rec


def _limits_section(stats: RunStats, info: dict) -> dict:
    limits = dict(info.pop("limits", None) or {})
    if limits.get("started_at") and stats.scoring_started:
        # Seconds into the scoring phase, like the in-flight timeline.
        shift = limits["started_at"] - stats.scoring_started
        for key in ("limit_history", "rate_history"):
            if limits.get(key):
                limits[key] = [[round(t + shift, 3), v] for t, v in limits[key]]
    return limits


def build_record(config: RunConfig, stats: RunStats, server_info: dict | None = None) -> RunRecord:
    """The run's record; never contains the API key."""
    sample = stats.requests_sample
    latencies = [lat for _, _, lat, ok in sample.items if ok]
    scale = sample.seen / len(sample.items) if sample.items else 1.0
    end = stats.scoring_started + stats.scoring_seconds
    info = dict(stats.engine_info)
    limits = _limits_section(stats, info)
    cl = config.client
    return RunRecord(
        run_id=uuid.uuid4().hex, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        label=config.label, engine=config.engine, threads=config.resolved_threads,
        workers=config.resolved_workers if config.engine == "ray" else None,
        # The bound and the report need a number: an `auto` run records its ceiling, and says it was auto.
        max_concurrent_tasks=config.concurrency_ceiling, concurrency="auto" if config.adaptive else "fixed",
        rate_limit=config.rate_limit, connector_limit="auto" if cl.connector_limit is None else cl.connector_limit,
        timeout=cl.timeout, max_retries=cl.max_retries, input=str(config.input),
        output=str(config.resolved_output), cache=str(config.cache) if config.cache else None,
        service=dict(server_info or {"kind": "external", "url": safe_url(cl.url)}),
        lines=stats.lines, ok=stats.counts["ok"], empty=stats.counts["empty"], error=stats.counts["error"],
        unique_requested=stats.unique_requested, cache_hits=stats.cache_hits, duplicates=stats.duplicates,
        requests=stats.requests, retries=stats.retries, startup_seconds=round(stats.startup_seconds, 4),
        scoring_seconds=round(stats.scoring_seconds, 4), total_seconds=round(stats.total_seconds, 4),
        lines_per_second=round(stats.lines / stats.scoring_seconds, 3) if stats.scoring_seconds else None,
        latency=Latency(**percentiles(latencies)),
        timeline=[tuple(p) for p in in_flight_timeline([(s, e) for s, e, _, _ in sample.items],
                                                       stats.scoring_started, end, scale)],
        engine_info=info, limits=limits, error_causes=dict(stats.causes), extra=dict(config.extra),
        settings=settings_section(config), machine=Machine(**machine_info()), versions=package_versions(),
        provenance=known())  # git is asked when the record is saved (with_provenance), not for every run


def failure_record(parameters: dict, failure: str, extra: dict | None = None) -> RunRecord:
    """A record for a run that did not finish, so a sweep keeps the failed point in its table."""
    keys = ("engine", "threads", "workers", "max_concurrent_tasks", "connector_limit")
    settings = {k: parameters.get(k) for k in keys}
    fixed = {k: (None if settings[k] == "auto" and k != "connector_limit" else settings[k]) for k in keys}
    return _adapter(RunRecord).validate_python({
        **fixed, "status": RunStatus.FAILED, "failure": failure, "run_id": uuid.uuid4().hex,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "concurrency": "auto" if settings["max_concurrent_tasks"] == "auto" else "fixed",
        "service": dict(parameters.get("service") or {}), "extra": dict(extra or {}), "settings": settings,
        "machine": machine_info(), "versions": package_versions(), "provenance": dataclasses.asdict(current())})


def with_provenance(record: RunRecord) -> RunRecord:
    """The record with this process's provenance if it was built without one (provenance.UNREAD)."""
    found = resolved(record.provenance)
    return record if found is record.provenance else dataclasses.replace(record, provenance=found)


def save_record(record: RunRecord | dict, directory: str | os.PathLike) -> Path:
    """Write one record file atomically (written aside, then renamed); a dict is checked first. A record
    built without its provenance gets it here (the only place git is asked for a run's record)."""
    record = with_provenance(record if isinstance(record, RunRecord) else parse_record(record))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stamp = record.created.replace(":", "").replace("-", "").replace("+0000", "Z")
    path = d / f"{stamp}-{record.engine}-{record.run_id[:8]}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(record.to_json(), indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a torn record beside the good ones
        raise
    return path
