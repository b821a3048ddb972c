"""Sweeps: each point of a grid (grid.py) run by papermill through run.ipynb.

Every run leaves a record; a point that fails is recorded as failed and the sweep goes on. Values
reach papermill only as plain JSON data (`grid.plain_json`), and a URL's credentials only through
the environment, never in a notebook.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from . import paths
from .calibration import LoadSampler, calibrate_sweep, save_load
from .engines.ray_cluster import sweep_ray
from .errors import ConfigError, GridError, InputFileError, MissingDependencyError, PointFailed
from .kernel_run import execute_notebook
from .inputs import open_input, read_lines
from .grid import (GRID_KEYS, POINT_KEYS, SERVICE_KEYS, Grid, Point, check_run_counts, load_grid, parse_grid,
                   plain_json)
from .provenance import shared_with_children
from .record import with_provenance
from .redact import MASK, redact, safe_url
from .service import ServiceProfile, load_profile, simulated_config
from .settings import ClientConfig, RunConfig, ServerConfig, check_settings, split_settings

__all__ = ["GRID_KEYS", "POINT_KEYS", "SERVICE_KEYS", "Grid", "Point", "load_grid", "parse_grid", "run_point",
           "run_sweep", "score_sample", "SweepSummary"]
REPO = paths.ROOT
NOTEBOOKS = paths.NOTEBOOKS
RUN_NOTEBOOK = paths.RUN_NOTEBOOK
SWEEP_URL_ENV = "SCORING_SWEEP_URL"  # a url with credentials reaches the kernels here, masked in their parameters


def head_file(path: Path, lines: int, directory: Path) -> Path:
    """The first `lines` lines of `path`, as a file in `directory` (tiny runs from a big input)."""
    out = directory / f"{path.stem}-first{lines}.txt"
    with open_input(path) as src, open(out, "wb") as dst:
        for _, line in zip(range(lines), src):
            dst.write(line)
    return out


def _client_settings(overrides: dict, profile: ServiceProfile | None) -> tuple[dict, dict]:
    """(ClientConfig keywords, RunConfig keywords): the settings given (None = the default) over the
    profile's url, fields and key variable; checked by the settings' own definitions."""
    client, run = split_settings(check_settings((ClientConfig, RunConfig), overrides, "settings", ConfigError))
    return (profile.client_settings() if profile is not None else {}) | client, run


def _fields(client: dict) -> dict:
    """The protocol a simulated service must speak to this client."""
    return {k: v for k, v in client.items() if k in ("request_field", "score_field")}


def _real_url(url: str | None) -> str | None:
    """The url a sweep gave masked in the parameters, with its credentials back from the environment."""
    real = os.environ.get(SWEEP_URL_ENV)
    return real if url and MASK in url and real and safe_url(real) == url else url


def _point_service(stack: ExitStack, url: str | None, service: dict, profile: ServiceProfile | None,
                   client: dict) -> tuple[str, dict]:
    """(url, service_info) of a point: the given url, or a simulated service started for it."""
    from .server import ServiceProcess, service_info

    # A profile without a url describes a simulated service: this point's, or the sweep's built from it.
    simulated = profile if profile is not None and not profile.url else None
    config = simulated_config(simulated, service | _fields(client)) if (url is None or service or simulated) else None
    if url is None:
        url, kind = stack.enter_context(ServiceProcess(config)).url, "embedded"
    else:
        kind = "simulated" if config is not None else "external"
    return url, service_info(safe_url(url), kind, config, profile=profile)


def run_point(input: str | os.PathLike = "data/sample.txt", repeats: int = 1, warmup: int = 0,
              lines: int | None = None, url: str | None = None, service: dict | None = None,
              records_dir: str | os.PathLike = paths.RUNS, sweep: str | None = None, point_id: str | None = None,
              skip_repeats: list | tuple = (), profile: str | os.PathLike | None = None,
              ray_address: str | None = None, **settings):
    """Run one configuration `warmup + repeats` times; record each; return the measured runs' rows.

    `settings` are the run's settings by name (settings.py: engine, threads, max_concurrent_tasks,
    timeout...), None meaning the setting's default. `profile` (a service profile path) is the
    service: its url (unless `url`), fields and key variable (unless set here) and the figures the
    bounds use. Without a url, the simulated service described by `service` runs in a child process
    for the duration. Warm-up runs are recorded with warmup=True so the report can leave them out.
    `skip_repeats` are measured repeats already recorded (a resumed sweep runs only the others).
    A run that ends with error rows is recorded as failed (kept out of the timing figures) and
    stops the point with PointFailed. Ray points join `ray_address` (default $RAY_ADDRESS, which a
    sweep sets to its one cluster)."""
    import pandas as pd

    check_run_counts(lines, repeats, warmup)
    # From the project root, as every other path of a point: run.ipynb's kernel runs in notebooks/.
    prof = load_profile(profile, base=paths.ROOT) if profile is not None else None
    client, run = _client_settings(settings, prof)
    url = _real_url(url) or client.pop("url", None)
    client.pop("url", None)
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="scoring-point-") as tmp:
        url, server_info = _point_service(stack, url, dict(service or {}), prof, client)
        path = paths.resolve(input)
        if not path.exists():  # a notebook's kernel runs in notebooks/, but its paths are the project's
            raise InputFileError(f"input file not found: {path} (a notebook's paths are relative to the project "
                                 f"root, {paths.ROOT})")
        if lines is not None:
            path = head_file(path, lines, Path(tmp))
        base = RunConfig(input=path, client=ClientConfig(url=url, **client), output=Path(tmp) / "scores.jsonl",
                         cache=None, records_dir=paths.resolve(records_dir), progress=False,
                         ray_address=ray_address or os.environ.get("RAY_ADDRESS") or None, **run)
        for i in range(warmup + repeats):
            if i >= warmup and (i - warmup) in set(skip_repeats):
                continue
            row = _run_once(base, server_info, {"sweep": sweep, "point_id": point_id, "repeat": i - warmup,
                                                "warmup": i < warmup})
            if i >= warmup:
                rows.append(row)
    return pd.DataFrame(rows)


def _run_once(base: RunConfig, server_info: dict, extra: dict) -> dict:
    """One recorded run of a point; its tidy row. Error rows fail it (recorded, then PointFailed)."""
    from .pipeline import score_file
    from .records import RunStatus, save_record, tidy_row

    result = score_file(replace(base, extra=extra), server_info=server_info, write_record=False)
    record = with_provenance(result.record)  # saved below: its row names the commit too
    errors = result.stats.counts["error"]
    if errors:
        record = replace(record, status=RunStatus.FAILED, failure=(
            f"{errors} of {result.stats.lines} rows are errors, e.g. {_first_error(result.output)}"))
    try:
        save_record(record, base.records_dir)
    except OSError as exc:
        print(f"warning: run record not written to {base.records_dir}: {exc.strerror or exc}", file=sys.stderr)
    if errors:
        raise PointFailed(f"{extra['point_id'] or base.engine}: {record.failure}")
    return tidy_row(record)


def _first_error(output: Path) -> str:
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
        tags = rec.tags
        if tags.sweep == sweep and rec.status.value == "ok" and not tags.warmup:
            done.setdefault(tags.point_id, set()).add(tags.repeat)
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
    ran: list = field(default_factory=list)  # (point id, repeat) in the order they ran
    ray_startup_seconds: float | None = None  # the sweep's one local Ray cluster, started once
    ray_cluster: object = None  # that cluster (engines.ray_cluster.LocalCluster) while the sweep runs

    @property
    def ran_points(self) -> set:
        return {p for p, _r in self.ran}

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

    Repeats are interleaved: repeat 0 of every point, then repeat 1 of every point..., each a
    notebook of its own, so a drift in the machine's load hits every setting alike. Before the
    points, the client's cost on this machine is measured (calibration.py) and the machine's load
    sampled for the whole sweep, both saved as calibration.json beside the records.
    Ray points all join one Ray: `ray_address` if given, else a local cluster started here once
    (loopback, its own temp dir and ports) and stopped at the end, so Ray's start-up is paid once."""
    try:
        import papermill  # noqa: F401 - only to fail early and plainly when the extra is missing
    except ImportError:
        raise MissingDependencyError("papermill", "notebooks") from None
    from tqdm.auto import tqdm

    from .server import ServiceProcess

    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    if not grid.input.is_file():
        raise GridError(f"grid input not found: {grid.input}")
    records = paths.resolve(records_dir) / grid.name
    outputs = paths.resolve(notebooks_dir) / grid.name
    outputs.mkdir(parents=True, exist_ok=True)
    summary = SweepSummary(grid, records)
    if not resume and (aside := set_aside(records)) is not None:
        print(f"sweep {grid.name}: the records of its last sweep moved to {paths.shown(aside)} "
              f"(`--resume` completes a sweep instead of starting it over)", flush=True)
    have = recorded_points(records, grid.name) if resume else {}
    todo = schedule(grid, have)
    summary.skipped = [p.id for p in grid.points if all(q is not p for q, _r in todo)]
    with ExitStack() as stack:
        stack.enter_context(shared_with_children())  # the commit, read once, for every run's record
        calibration = calibrate_sweep(grid.name, grid.largest_concurrency(), grid.calibration_lines,
                                      _sweep_server(grid) if grid.url is None else None, _grid_fields(grid),
                                      records.parent, grid.client_share_max)
        stack.callback(save_load, calibration, stack.enter_context(LoadSampler()), records.parent)
        url = grid.url
        if url is None:  # one simulated service for the whole sweep: every point meets the same profile
            url = stack.enter_context(ServiceProcess(_sweep_server(grid))).url
        stack.enter_context(_url_to_kernels(url))
        if any(p.engine == "ray" for p, _r in todo):
            stack.enter_context(_one_ray_for_the_sweep(summary, ray_address, ray_dashboard))
        terminal = stack.enter_context(_kernel_stderr_to(outputs / "kernels.log"))
        bar = stack.enter_context(tqdm(todo, unit="run", file=terminal,
                                       disable=None if progress is None else not progress))
        # Without a terminal (a log, a pipe) the bar is off: a line per run instead, so a long sweep shows
        # it is alive; --no-progress silences both.
        lines = bar.disable and progress is not False
        for i, (point, repeat) in enumerate(bar, 1):
            bar.set_postfix_str(f"{point.id} repeat {repeat}")
            t0 = time.monotonic()
            _run_repeat(summary, point, repeat, url, outputs)
            if lines:
                how = "failed" if point.id in dict(summary.failed) else "done"
                print(f"sweep {grid.name}: run {i}/{len(todo)} {point.id} repeat {repeat} {how} "
                      f"({time.monotonic() - t0:.1f} s)", file=terminal, flush=True)
    summary.done = [p.id for p in grid.points if p.id in summary.ran_points and p.id not in dict(summary.failed)]
    return summary


PREVIOUS = ".previous"  # <records dir>/.previous/<sweep>-<UTC time>/: earlier sweeps, never read unless named


def set_aside(records: Path) -> Path | None:
    """A sweep started over (no --resume) where one of that name is recorded: the earlier records (and
    calibration) move to a hidden folder beside them, so a report never mixes two sweeps (the repeats,
    the intervals, the code they ran); `report --compare` can still take that folder. None: nothing there."""
    if not records.is_dir() or not any(p.suffix == ".json" for p in records.iterdir()):
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = records.parent / PREVIOUS / f"{records.name}-{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    records.rename(dest)
    return dest


def schedule(grid: Grid, have: dict[str, set]) -> list[tuple[Point, int]]:
    """(point, repeat) in the order a sweep runs them: repeat 0 of every point, then repeat 1 of every
    point, ...; the repeats `have` recorded (per point id) left out."""
    return [(p, r) for r in range(grid.repeats) for p in grid.points if r not in have.get(p.id, set())]


def _run_repeat(summary: SweepSummary, point: Point, repeat: int, url: str, outputs: Path) -> None:
    """One repeat of one point through papermill; a failure is recorded and the point's later repeats
    are left out (the sweep goes on with the other points)."""
    from .records import failure_record, save_record

    grid, records = summary.grid, summary.records_dir
    if point.id in dict(summary.failed):
        return
    # The point's warm-up runs before the first of its repeats this sweep runs; every other repeat is skipped.
    first = point.id not in summary.ran_points
    skip = sorted(set(range(grid.repeats)) - {repeat})
    params = _parameters(grid, point, url, records, skip) | {"warmup": grid.warmup if first else 0}
    summary.ran.append((point.id, repeat))
    try:
        execute_notebook(RUN_NOTEBOOK, outputs / f"{point.id}-r{repeat}.ipynb", plain_json(params), paths.ROOT)
    except Exception as exc:  # noqa: BLE001 - a failed point is recorded and the sweep goes on
        failure = _failure_text(exc)
        if point.engine == "ray" and summary.ray_cluster is not None:
            kept = summary.ray_cluster.save_logs(records / f"{point.id}-r{repeat}-ray-logs")
            if kept is not None:  # the cluster's temp dir goes when the sweep ends: its logs stay here
                failure = f"{failure} (Ray logs: {kept})"
        if getattr(exc, "ename", None) != PointFailed.__name__:  # else its runs are recorded already
            save_record(failure_record(params, failure, {"sweep": grid.name, "point_id": point.id}), records)
        summary.failed.append((point.id, failure))


def _parameters(grid: Grid, point: Point, url: str, records: Path, skip: list) -> dict:
    """run.ipynb's parameters for one point: its settings and what the notebook itself needs."""
    return grid.parameters(point) | {
        "input": str(Path(grid.input).resolve()), "repeats": grid.repeats, "warmup": grid.warmup,
        "lines": grid.lines, "url": safe_url(url), "service": grid.service, "records_dir": str(records.resolve()),
        "sweep": grid.name, "point_id": point.id, "skip_repeats": skip,
        "profile": str(Path(grid.profile).resolve()) if grid.profile else None}


def _grid_fields(grid: Grid) -> dict:
    """The protocol of the grid's client (its settings over its profile's)."""
    prof = load_profile(grid.profile) if grid.profile else None
    return _fields(_client_settings(grid.settings, prof)[0])


def _sweep_server(grid: Grid) -> ServerConfig:
    """The sweep's one simulated service: the grid's `service` settings over its profile's figures and
    behaviour (a grid without a url), speaking the protocol of the grid's client (and profile)."""
    prof = load_profile(grid.profile) if grid.profile else None
    return simulated_config(prof, grid.service | _grid_fields(grid))


@contextmanager
def _url_to_kernels(url: str):
    """A url with credentials goes to the kernels through the environment (they inherit it), so the
    executed notebooks hold it masked."""
    if safe_url(url) == url:
        yield
        return
    saved = os.environ.get(SWEEP_URL_ENV)
    os.environ[SWEEP_URL_ENV] = url
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(SWEEP_URL_ENV, None)
        else:
            os.environ[SWEEP_URL_ENV] = saved


@contextmanager
def _one_ray_for_the_sweep(summary: SweepSummary, address: str | None, dashboard: bool):
    """Point every kernel at one Ray: the given one, or a local cluster started here (engines.ray_cluster)."""

    with sweep_ray(address, dashboard) as ray:
        summary.ray_startup_seconds = ray.startup_seconds
        summary.ray_cluster = ray.cluster
        try:
            yield ray.address
        finally:
            summary.ray_cluster = None


def score_sample(input: str | os.PathLike, url: str, lines: int = 50, profile: ServiceProfile | None = None,
                 **settings):
    """Score the first `lines` lines against `url` (no cache, no record) and return (result, rows):
    the rows as a DataFrame beside their text, for a first look at a service. `settings` by name
    (None = the default); `profile`'s fields and key variable unless set here."""
    import pandas as pd

    from .pipeline import score_file

    client, run = _client_settings(settings, profile)
    client.pop("url", None)
    with tempfile.TemporaryDirectory(prefix="scoring-sample-") as tmp:
        sample = head_file(paths.resolve(input), lines, Path(tmp))
        config = RunConfig(input=sample, client=ClientConfig(url=url, **client), output=Path(tmp) / "rows.jsonl",
                           cache=None, records_dir=None, progress=False, **run)
        result = score_file(config, write_record=False)
        rows = pd.read_json(result.output, lines=True, dtype={"error": "string"})
        # the texts as the reader cut them (a line that is not UTF-8, or holds U+2028, is one row): "" where
        # a line was not sent
        texts = [line.text or "" for line in read_lines(sample, config.max_line_bytes)]
        rows.insert(1, "text", texts[:len(rows)])
        if "error" in rows:
            rows["error"] = rows["error"].fillna("")
    return result, rows
