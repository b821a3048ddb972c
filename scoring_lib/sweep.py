"""Sweeps: a grid of settings, validated as data, each point run by papermill through run.ipynb.

A grid is a YAML file: the input, the service profile, repeats and warm-up, and `points`, a list of
sub-grids whose cartesian products are unioned. Every run leaves a record; a point that fails is
recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths
from .config import ENGINES, ClientConfig, RunConfig, ServerConfig, read_yaml
from .errors import ClusterConnectError, ConfigError, GridError, MissingDependencyError, PointFailed
from .redact import redact

REPO = paths.ROOT
NOTEBOOKS = paths.NOTEBOOKS
RUN_NOTEBOOK = paths.RUN_NOTEBOOK
GRID_KEYS = {"name", "description", "input", "lines", "repeats", "warmup", "service", "url", "points", "timeout",
             "max_retries", "profile"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a grid name is one plain folder name
POINT_KEYS = {"engine", "threads", "workers", "max_concurrent_tasks", "connector_limit"}
SERVICE_KEYS = {"latency", "latency_dist", "capacity", "rate_limit", "error_rate", "reset_rate", "slow_body_rate",
                "time_scale", "seed"}


@dataclass(frozen=True)
class Point:
    """One setting of the grid."""

    engine: str
    threads: int | None
    workers: int | None
    max_concurrent_tasks: int | str  # a number (fixed), or "auto" (adaptive, up to its default ceiling)
    connector_limit: int | None  # None = auto

    @property
    def id(self) -> str:
        pool = "auto" if self.connector_limit is None else self.connector_limit
        workers = f"-w{self.workers}" if self.engine == "ray" else ""
        return f"{self.engine}{workers}-t{self.threads or 'default'}-c{self.max_concurrent_tasks}-pool{pool}"

    def parameters(self) -> dict:
        d = asdict(self)
        d["connector_limit"] = "auto" if self.connector_limit is None else self.connector_limit
        return d


@dataclass(frozen=True)
class Grid:
    name: str
    input: Path
    points: tuple[Point, ...]
    repeats: int = 1
    warmup: int = 0
    lines: int | None = None
    service: dict = field(default_factory=dict)
    url: str | None = None
    timeout: float = 30.0
    max_retries: int = 5
    description: str = ""
    profile: str | None = None  # service profile path: its known figures make the bounds


def _positive_int(where: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GridError(f"{where} must be a whole number of at least {minimum}, got {value!r}")
    return value


def _number(where: str, value, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum or \
            (strict and value == minimum):
        raise GridError(f"{where} must be a number {'above' if strict else 'of at least'} {minimum:g}, got {value!r}")
    return float(value)


def _concurrency(where: str, value) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GridError(f"{where} must be 'auto' or a whole number of at least 1, got {value!r}")
    return value


def _pool(where: str, value) -> int | None:
    if value == "auto" or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GridError(f"{where} must be 'auto' or a whole number of at least 0, got {value!r}")
    return value


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _points(spec, where: str) -> list[Point]:
    if not isinstance(spec, dict):
        raise GridError(f"{where} must be a mapping of parameter: [values]")
    unknown = set(spec) - POINT_KEYS
    if unknown:
        raise GridError(f"{where}: unknown parameter {sorted(unknown)[0]!r} (known: {', '.join(sorted(POINT_KEYS))})")
    values = {k: _as_list(spec.get(k, default)) for k, default in
              (("engine", "asyncio"), ("threads", None), ("workers", None), ("max_concurrent_tasks", 256),
               ("connector_limit", "auto"))}
    out = []
    for engine, threads, workers, c, pool in itertools.product(*values.values()):
        if engine not in ENGINES:
            raise GridError(f"{where}: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        threads = None if threads is None else _positive_int(f"{where}: threads", threads)
        workers = None if (workers is None or engine == "asyncio") else _positive_int(f"{where}: workers", workers)
        out.append(Point(engine, threads, workers, _concurrency(f"{where}: max_concurrent_tasks", c),
                         _pool(f"{where}: connector_limit", pool)))
    return out


def parse_grid(data, source: str = "grid", base: Path | None = None) -> Grid:
    """Validate a grid given as data (what YAML gives); raises GridError naming the first problem."""
    if not isinstance(data, dict):
        raise GridError(f"{source}: a grid must be a mapping")
    unknown = set(data) - GRID_KEYS
    if unknown:
        raise GridError(f"{source}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(GRID_KEYS))})")
    if "points" not in data or not isinstance(data["points"], list) or not data["points"]:
        raise GridError(f"{source}: 'points' must be a non-empty list of sub-grids")
    service = data.get("service") or {}
    if not isinstance(service, dict) or set(service) - SERVICE_KEYS:
        bad = sorted(set(service) - SERVICE_KEYS)[0] if isinstance(service, dict) else service
        raise GridError(f"{source}: unknown service setting {bad!r} (known: {', '.join(sorted(SERVICE_KEYS))})")
    try:
        ServerConfig(**service)
    except (ConfigError, TypeError) as exc:
        raise GridError(f"{source}: service: {exc}") from None
    points: list[Point] = []
    for i, spec in enumerate(data["points"]):
        for p in _points(spec, f"{source}: points[{i}]"):
            if p not in points:
                points.append(p)
    input_path = data.get("input", "data/sample.txt")
    if not isinstance(input_path, str) or not input_path:
        raise GridError(f"{source}: input must be a path, got {input_path!r}")
    input_path = paths.resolve(input_path, base)  # relative to the project root
    name = data.get("name", "sweep")
    # The name becomes a folder under the records and notebooks folders: one plain component only.
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        raise GridError(f"{source}: name must be a plain name (letters, digits, '.', '_', '-'; no '/' or '..'), "
                        f"got {name!r}")
    url = data.get("url")
    if url is not None and not isinstance(url, str):
        raise GridError(f"{source}: url must be a string, got {url!r}")
    timeout = _number(f"{source}: timeout", data.get("timeout", 30.0), 0, strict=True)
    max_retries = _positive_int(f"{source}: max_retries", data.get("max_retries", 5), minimum=0)
    try:  # the client settings as a run will use them: every rule checked now, before anything runs
        ClientConfig(url=url or "http://127.0.0.1/score", timeout=timeout, max_retries=max_retries)
    except ConfigError as exc:
        raise GridError(f"{source}: {exc}") from None
    lines = data.get("lines")
    profile = data.get("profile")
    if profile is not None:
        from .service import load_profile, profile_path

        path = profile_path(profile)
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        try:
            prof = load_profile(path)
        except ConfigError as exc:
            raise GridError(f"{source}: {exc}") from None
        profile, url = str(path), url or prof.url
    return Grid(name=name, input=input_path, points=tuple(points),
                repeats=_positive_int(f"{source}: repeats", data.get("repeats", 1)),
                warmup=_positive_int(f"{source}: warmup", data.get("warmup", 0), minimum=0),
                lines=None if lines is None else _positive_int(f"{source}: lines", lines),
                service=service, url=url, timeout=timeout, max_retries=max_retries,
                description=str(data.get("description", "")), profile=profile)


def load_grid(path: str | os.PathLike) -> Grid:
    """A grid file: as given (relative to the current folder), else relative to the project root,
    else a grid name such as 'quick' (notebooks/grids/quick.yaml)."""
    p = Path(path).expanduser()
    if not p.exists():
        p = paths.grid_path(path)
    data = read_yaml(p, GridError, "grid file not found: {path}", "cannot parse grid {path}: {first}")
    return parse_grid(data, source=str(p), base=paths.ROOT)


def head_file(path: Path, lines: int, directory: Path) -> Path:
    """The first `lines` lines of `path`, as a file in `directory` (tiny runs from a big input)."""
    out = directory / f"{path.stem}-first{lines}.txt"
    with open(path, "rb") as src, open(out, "wb") as dst:
        for _, line in zip(range(lines), src):
            dst.write(line)
    return out


def run_point(input: str | os.PathLike = "data/sample.txt", engine: str = "asyncio", threads: int | None = None,
              workers: int | None = None, max_concurrent_tasks: int | str = 256, connector_limit: int | str = "auto",
              repeats: int = 1, warmup: int = 0, lines: int | None = None, url: str | None = None,
              service: dict | None = None, records_dir: str | os.PathLike = paths.RUNS,
              sweep: str | None = None, point_id: str | None = None, api_key_env: str = "SCORING_API_KEY",
              timeout: float = 30.0, max_retries: int = 5, skip_repeats: list | tuple = (),
              profile: str | os.PathLike | None = None, ray_address: str | None = None):
    """Run one configuration `warmup + repeats` times; record each; return the measured runs' rows.

    `max_concurrent_tasks` is a number, or "auto": the adaptive limit up to its default ceiling.

    Without `url`, the simulated service described by `service` runs in a child process for the
    duration. `profile` (a service profile path) gives the figures the bounds use. Warm-up runs are
    recorded with warmup=True so the report can leave them out.
    `skip_repeats` are measured repeats already recorded (a resumed sweep runs only the others).
    A run that ends with error rows is recorded as failed (kept out of the timing figures) and
    stops the point with PointFailed. Ray points join `ray_address` (default $RAY_ADDRESS, which a
    sweep sets to its one cluster)."""
    import pandas as pd

    from .pipeline import score_file
    from .records import save_record, tidy_row
    from .server import ServiceProcess, service_info

    service = dict(service or {})
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="scoring-point-") as tmp:
        if url is None:
            svc = stack.enter_context(ServiceProcess(ServerConfig(**service)))
            url, kind = svc.url, "embedded"
        else:
            kind = "simulated" if service else "external"
        prof = None
        if profile is not None:
            from .service import load_profile

            # From the project root, as every other path of a point: run.ipynb's kernel runs in notebooks/.
            prof = load_profile(profile, base=paths.ROOT)
        server_info = service_info(url, kind, ServerConfig(**service) if kind != "external" else None, profile=prof)
        path = paths.resolve(input)
        records_dir = paths.resolve(records_dir)
        if lines:
            path = head_file(path, lines, Path(tmp))
        client = ClientConfig(url=url, connector_limit=None if connector_limit in ("auto", None) else
                              int(connector_limit), timeout=timeout, max_retries=max_retries, api_key_env=api_key_env)
        for i in range(warmup + repeats):
            is_warmup = i < warmup
            if not is_warmup and (i - warmup) in set(skip_repeats):
                continue
            config = RunConfig(input=path, client=client, engine=engine, threads=threads, workers=workers,
                               max_concurrent_tasks=max_concurrent_tasks, output=Path(tmp) / "scores.jsonl",
                               cache=None, records_dir=Path(records_dir), progress=False,
                               ray_address=ray_address or os.environ.get("RAY_ADDRESS") or None,
                               extra={"sweep": sweep, "point_id": point_id, "repeat": i - warmup,
                                      "warmup": is_warmup})
            result = score_file(config, server_info=server_info, write_record=False)
            record = result.record
            errors = result.stats.counts["error"]
            if errors:
                record["status"] = "failed"
                record["failure"] = (f"{errors} of {result.stats.lines} rows are errors, e.g. "
                                     f"{_first_error(result.output)}")
            try:
                save_record(record, records_dir)
            except OSError as exc:
                print(f"warning: run record not written to {records_dir}: {exc.strerror or exc}", file=sys.stderr)
            if errors:
                raise PointFailed(f"{point_id or engine}: {record['failure']}")
            if not is_warmup:
                rows.append(tidy_row(record))
    return pd.DataFrame(rows)


def _first_error(output: Path) -> str:
    import json

    with open(output, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("status") == "error":
                return str(row.get("error"))[:200]
    return "?"


def recorded_points(records_dir: Path, sweep: str) -> dict[str, set]:
    """Measured repeats (their indices) recorded as successful per point id of this sweep (for --resume)."""
    from .records import read_records

    done: dict[str, set] = {}
    for rec in read_records(records_dir):
        extra = rec.get("extra") or {}
        if extra.get("sweep") == sweep and rec.get("status", "ok") == "ok" and not extra.get("warmup"):
            done.setdefault(extra.get("point_id"), set()).add(extra.get("repeat"))
    return done


@contextmanager
def _kernel_stderr_to(path: Path):
    """Kernels inherit this process's stderr and print start-up warnings there; send them to a log
    beside the executed notebooks, and yield a stream on the real stderr for progress."""
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w")
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            terminal.close()


def _failure_text(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split())[:500])


@dataclass
class SweepSummary:
    grid: Grid
    records_dir: Path
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (point id, failure)
    ray_startup_seconds: float | None = None  # the sweep's one local Ray cluster, started once

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def table(self):
        import pandas as pd

        rows = [{"point": p, "status": "done"} for p in self.done]
        rows += [{"point": p, "status": "skipped (recorded)"} for p in self.skipped]
        rows += [{"point": p, "status": f"FAILED: {why}"} for p, why in self.failed]
        return pd.DataFrame(rows)

    def line(self) -> str:
        ray = ("" if self.ray_startup_seconds is None else
               f"; one Ray cluster for all Ray points, started in {self.ray_startup_seconds:.1f} s")
        return (f"sweep {self.grid.name}: {len(self.done)} points run, {len(self.skipped)} skipped, "
                f"{len(self.failed)} failed; records in {self.records_dir}{ray}")


def run_sweep(grid: Grid | str | os.PathLike, records_dir: str | os.PathLike = paths.RUNS,
              notebooks_dir: str | os.PathLike = paths.EXECUTED, resume: bool = False,
              progress: bool | None = None, ray_address: str | None = None,
              ray_dashboard: bool = False) -> SweepSummary:
    """Run every point of the grid through papermill (run.ipynb), against one shared service.

    Ray points all join one Ray: `ray_address` if given, else a local cluster started here once
    (loopback, its own temp dir and ports) and stopped at the end, so Ray's start-up is paid once."""
    try:
        import papermill as pm
    except ImportError:
        raise MissingDependencyError("papermill", "notebooks") from None
    from tqdm.auto import tqdm

    from .records import failure_record, save_record
    from .server import ServiceProcess

    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    if not grid.input.is_file():
        raise GridError(f"grid input not found: {grid.input}")
    records = paths.resolve(records_dir) / grid.name
    outputs = paths.resolve(notebooks_dir) / grid.name
    outputs.mkdir(parents=True, exist_ok=True)
    summary = SweepSummary(grid, records)
    have = recorded_points(records, grid.name) if resume else {}
    wanted = set(range(grid.repeats))
    todo = [p for p in grid.points if not wanted <= have.get(p.id, set())]
    summary.skipped = [p.id for p in grid.points if p not in todo]
    with ExitStack() as stack:
        url = grid.url
        if url is None:  # one simulated service for the whole sweep: every point meets the same profile
            url = stack.enter_context(ServiceProcess(ServerConfig(**grid.service))).url
        if any(p.engine == "ray" for p in todo):
            stack.enter_context(_one_ray_for_the_sweep(summary, ray_address, ray_dashboard))
        terminal = stack.enter_context(_kernel_stderr_to(outputs / "kernels.log"))
        bar = stack.enter_context(tqdm(todo, unit="point", file=terminal,
                                       disable=None if progress is None else not progress))
        for point in bar:
            bar.set_postfix_str(point.id)
            params = point.parameters() | {
                "input": str(Path(grid.input).resolve()), "repeats": grid.repeats, "warmup": grid.warmup,
                "lines": grid.lines, "url": url, "service": grid.service, "records_dir": str(records.resolve()),
                "sweep": grid.name, "point_id": point.id, "timeout": grid.timeout, "max_retries": grid.max_retries,
                "skip_repeats": sorted(have.get(point.id, set()) & wanted)}
            if grid.profile:
                params["profile"] = str(Path(grid.profile).resolve())
            try:
                pm.execute_notebook(str(RUN_NOTEBOOK), str(outputs / f"{point.id}.ipynb"), parameters=params,
                                    kernel_name="python3", progress_bar=False, cwd=str(paths.ROOT))
                summary.done.append(point.id)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed point is recorded and the sweep goes on
                failure = _failure_text(exc)
                if getattr(exc, "ename", None) != PointFailed.__name__:  # else its runs are recorded already
                    save_record(failure_record(params, failure, {"sweep": grid.name, "point_id": point.id}), records)
                summary.failed.append((point.id, failure))
    return summary




@contextmanager
def _one_ray_for_the_sweep(summary: SweepSummary, address: str | None, dashboard: bool):
    """Point every kernel at one Ray: the given one, or a local cluster started here (engines.ray_cluster)."""
    from .engines.ray_cluster import sweep_ray  # imports no Ray itself; kept lazy as the engines are

    with sweep_ray(address, dashboard) as ray:
        summary.ray_startup_seconds = ray.startup_seconds
        yield ray.address


def score_sample(input: str | os.PathLike, url: str, lines: int = 50, max_concurrent_tasks: int = 64,
                 api_key_env: str = "SCORING_API_KEY"):
    """Score the first `lines` lines against `url` (no cache, no record) and return (result, rows):
    the rows as a DataFrame beside their text, for a first look at a service."""
    import pandas as pd

    from .pipeline import score_file

    with tempfile.TemporaryDirectory(prefix="scoring-sample-") as tmp:
        sample = head_file(paths.resolve(input), lines, Path(tmp))
        config = RunConfig(input=sample, client=ClientConfig(url=url, api_key_env=api_key_env),
                           max_concurrent_tasks=max_concurrent_tasks, output=Path(tmp) / "rows.jsonl", cache=None,
                           records_dir=None, progress=False)
        result = score_file(config, write_record=False)
        rows = pd.read_json(result.output, lines=True)
        rows.insert(1, "text", sample.read_text(encoding="utf-8").splitlines()[:len(rows)])
    return result, rows
