"""Grids as validated data: a sweep's settings, each point holding only overrides of the settings model.

A grid is a YAML file: the input, the service, repeats and warm-up, settings for every point, and
`points`, a list of sub-grids whose cartesian products are unioned. Every value is checked by the
same definitions as the CLI's (settings.py) before anything runs; YAML's other types (bytes from
`!!binary`, sets, dates, nan) are refused with one line naming the file, the key and the type expected.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths, settings
from .config import read_yaml
from .errors import ConfigError, GridError
from .kinds import Maybe, Number, Text, Url, Whole
from .service import load_profile, profile_path, simulated_config
from .settings import check_settings, settings_of, split_settings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a grid name is one plain folder name
# The simulated service's settings a grid may give (its host, port and fields are the sweep's own).
SERVICE_KEYS = {name for name, _s, _d in settings_of(settings.ServerConfig)
                if name not in ("host", "port", "request_field", "score_field")}
_GRID_OWN = {"name": Text(what="a plain name"), "description": Text(what="a string", empty=True),
             "input": Text(what="a path"),
             "lines": Maybe(Whole(1)), "repeats": Whole(1), "warmup": Whole(0), "url": Maybe(Url()),
             "profile": Maybe(Text(what="a profile name or path")), "service": None, "points": None,
             "calibration_lines": Maybe(Whole(0)), "client_share_max": Maybe(Number(0.0, strict=True, maximum=1.0))}
_ID_KEYS = ("engine", "workers", "threads", "max_concurrent_tasks", "connector_limit")
_PRODUCT_ORDER = ("engine", "threads", "workers", "max_concurrent_tasks", "connector_limit")  # as grids always ran


def _classes() -> tuple[type, ...]:
    """The settings classes a grid overrides (looked up at call time: one place defines them)."""
    return settings.ClientConfig, settings.RunConfig


def point_keys() -> set[str]:
    """Every setting a grid (or run.ipynb) may set."""
    return {name for cls in _classes() for name, spec, _d in settings_of(cls) if spec.grid}


POINT_KEYS = point_keys()
GRID_KEYS = set(_GRID_OWN) | POINT_KEYS


def default(name: str) -> Any:
    return next(d for cls in _classes() for n, _s, d in settings_of(cls) if n == name)


@dataclass(frozen=True)
class Point:
    """One setting of the grid: only what the grid's sub-grid set (its overrides), in a fixed order."""

    overrides: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str) -> Any:
        return dict(self.overrides).get(name, default(name))

    def __getattr__(self, name: str) -> Any:  # point.engine, point.threads, ...: the value this point runs with
        if name.startswith("_") or name not in point_keys():
            raise AttributeError(name)
        return self.get(name)

    @property
    def id(self) -> str:
        workers = f"-w{self.get('workers')}" if self.get("engine") == "ray" else ""
        base = (f"{self.get('engine')}{workers}-t{self.get('threads') or 'default'}-c{self.get('max_concurrent_tasks')}"
                f"-pool{self.get('connector_limit')}")
        return base + "".join(f"-{k}{_file_safe(v)}" for k, v in self.overrides if k not in _ID_KEYS)

    def parameters(self) -> dict:
        """The settings this point runs with, for run.ipynb (the id's five always, then its overrides)."""
        return {k: self.get(k) for k in _ID_KEYS} | dict(self.overrides)


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
    description: str = ""
    profile: str | None = None  # service profile path: its url, fields, key variable and known figures
    settings: dict = field(default_factory=dict)  # overrides every point starts from
    calibration_lines: int | None = None  # lines of the sweep's calibration run (None: calibration's own; 0: none)
    client_share_max: float | None = None  # the client's CPU per wave, as a share of the latency, the grid accepts

    def parameters(self, point: Point) -> dict:
        return self.settings | point.parameters()

    def largest_concurrency(self) -> int:
        """The largest fixed C of the grid's points; the `auto` ceiling if every point is `auto`."""
        def of(point: Point, key: str) -> Any:
            value = self.parameters(point).get(key)
            return default(key) if value is None else value

        fixed = [int(of(p, "max_concurrent_tasks")) for p in self.points if of(p, "max_concurrent_tasks") != "auto"]
        return max(fixed) if fixed else max(int(of(p, "max_concurrent_tasks_max")) for p in self.points)


_SAFE = re.compile(r"[A-Za-z0-9._=+-]*")


def _file_safe(value: Any) -> str:
    """A value as it goes into a point's id, which names files (notebooks, logs): as it is when it is
    safe there, else its unsafe characters replaced and a short digest of the whole value added (two
    values that differ only there stay two ids)."""
    text = str(value)
    if _SAFE.fullmatch(text):
        return text
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)[:40] + "-" + digest


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _points(spec: Any, where: str) -> list[Point]:
    if not isinstance(spec, dict):
        raise GridError(f"{where} must be a mapping of setting: [values], got {type(spec).__name__}")
    unknown = [k for k in spec if k not in point_keys()]
    if unknown:
        raise GridError(f"{where}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(point_keys()))})")
    order = [k for k in _PRODUCT_ORDER if k in spec] + [
        n for cls in _classes() for n, _s, _d in settings_of(cls) if n in spec and n not in _PRODUCT_ORDER]
    empty = [k for k in order if spec[k] == []]
    if empty:
        raise GridError(f"{where}: {empty[0]} is an empty list: give it at least one value (or leave it out)")
    out = []
    for values in itertools.product(*(_as_list(spec[k]) for k in order)):
        overrides = check_settings(_classes(), dict(zip(order, values)), where, GridError)
        if overrides.get("engine", default("engine")) != "ray":
            overrides.pop("workers", None)  # asyncio has no workers: the same point, not a new one
        out.append(Point(tuple((k, overrides[k]) for k in order if k in overrides)))
    return out


def check_run_counts(lines: Any, repeats: Any, warmup: Any) -> None:
    """run.ipynb's `lines`, `repeats` and `warmup` checked as a grid's are (ConfigError naming the first
    wrong one): papermill hands the notebook any value, and `lines: 0` or -5 must not mean "all"."""
    for key, value in (("lines", lines), ("repeats", repeats), ("warmup", warmup)):
        _GRID_OWN[key].check(key, value)


def _own(data: dict, source: str) -> dict:
    """The grid's own keys, each of its type (None: absent)."""
    out = {}
    for key, kind in _GRID_OWN.items():
        if kind is None or data.get(key) is None:
            continue
        try:
            out[key] = kind.check(key, data[key])
        except ConfigError as exc:
            raise GridError(f"{source}: {exc}") from None
    name = out.get("name", "sweep")
    # The name becomes a folder under the records and notebooks folders: one plain component only.
    if not NAME.match(name) or name in (".", ".."):
        raise GridError(f"{source}: name must be a plain name (letters, digits, '.', '_', '-'; no '/' or '..'), "
                        f"got {name!r}")
    return out


def _service(data: Any, source: str) -> dict:
    service = {} if data is None else data
    if not isinstance(service, dict):
        raise GridError(f"{source}: service must be a mapping of setting: value, got {type(service).__name__}")
    bad = [k for k in service if k not in SERVICE_KEYS]
    if bad:
        raise GridError(f"{source}: unknown service setting {bad[0]!r} (known: {', '.join(sorted(SERVICE_KEYS))})")
    try:
        settings.ServerConfig(**service)
    except ConfigError as exc:
        raise GridError(f"{source}: service: {exc}") from None
    return dict(service)


def _check_runs(grid: Grid, source: str) -> None:
    """Every point's settings as a run will use them: every rule checked now, before anything runs."""
    for point in grid.points:
        client, run = split_settings(grid.parameters(point))
        try:
            settings.RunConfig(input=Path("-"), client=settings.ClientConfig(url=grid.url or "http://127.0.0.1/score",
                                                                              **client), **run)
        except ConfigError as exc:
            raise GridError(f"{source}: point {point.id}: {exc}") from None


def parse_grid(data: Any, source: str = "grid", base: Path | None = None) -> Grid:
    """Validate a grid given as data (what YAML gives); raises GridError naming the first problem."""
    if not isinstance(data, dict):
        raise GridError(f"{source}: a grid must be a mapping")
    known = set(_GRID_OWN) | point_keys()
    unknown = [k for k in data if k not in known]
    if unknown:
        raise GridError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    own = _own(data, source)
    wide = check_settings(_classes(), {k: v for k, v in data.items() if k in point_keys()}, source, GridError)
    if not isinstance(data.get("points"), list) or not data["points"]:
        raise GridError(f"{source}: 'points' must be a non-empty list of sub-grids")
    points: list[Point] = []
    for i, spec in enumerate(data["points"]):
        for point in _points(spec, f"{source}: points[{i}]"):
            if point not in points:
                points.append(point)
    url, profile = own.get("url"), own.get("profile")
    if profile is not None:
        path = profile_path(profile)
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        try:
            prof = load_profile(path)
            if not (url or prof.url):  # the sweep simulates the profile: its service must be one it can build
                simulated_config(prof, _service(data.get("service"), source))
        except ConfigError as exc:
            raise GridError(f"{source}: {exc}") from None
        url, profile = url or prof.url, str(path)
    grid = Grid(name=own.get("name", "sweep"), input=paths.resolve(own.get("input", "data/sample.txt"), base),
                points=tuple(points), repeats=own.get("repeats", 1), warmup=own.get("warmup", 0),
                lines=own.get("lines"), service=_service(data.get("service"), source), url=url,
                description=own.get("description", ""), profile=profile, settings=wide,
                calibration_lines=own.get("calibration_lines"), client_share_max=own.get("client_share_max"))
    _check_runs(grid, source)
    return grid


def load_grid(path: str | os.PathLike) -> Grid:
    """A grid file: as given (relative to the current folder), else relative to the project root,
    else a grid name such as 'quick' (notebooks/grids/quick.yaml)."""
    p = Path(path).expanduser()
    if not p.exists():
        p = paths.grid_path(path)
    data = read_yaml(p, GridError, "grid file not found: {path}", "cannot parse grid {path}: {first}")
    return parse_grid(data, source=str(p), base=paths.ROOT)


def plain_json(value: Any, where: str = "parameters") -> Any:
    """`value` if it is plain JSON data (str, int, float, bool, None, lists and string-keyed dicts of
    them, finite floats), else GridError. Only such values reach papermill, whose translator writes
    anything else (bytes, objects) into the parameters cell as code."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, list):
        return [plain_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: plain_json(v, f"{where}.{k}") for k, v in value.items()}
    raise GridError(f"{where} must be plain data (a string, number, true/false, null, list or mapping), "
                    f"got {type(value).__name__}")
