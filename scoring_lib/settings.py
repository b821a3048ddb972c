"""Every run setting, defined once: name, type, default, validation, help and unit.

A setting is a dataclass field whose metadata holds a `Setting` (its kind, help, unit, CLI group,
whether a grid may set it). The CLI's options, a grid point's overrides, `run.ipynb`'s parameters
and the run record's `settings` are all made from these fields, and every value from any of them
is checked by the same `Kind`. Dataclasses rather than pydantic: the CLI and every Ray worker
import this module on their start-up path, pydantic's import would cost more than the few types
here need, and a closed set of kinds says everything a setting can be.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError
from .kinds import AUTO, Choice, Flag, Kind, Maybe, Number, OrAuto, Text, Url, Whole, shown
from .redact import API_KEY_ENV, safe_url

DEFAULT_MAX_LINE_BYTES = 1 << 20
EMBEDDED_CACHE_NAMESPACE = "simulated://embedded"
ENGINES = ("asyncio", "ray")
LATENCY_DISTS = ("const", "exp", "lognormal")
RETRY_AFTER_MODES = ("exact", "whole", "none")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
DAY = 86400.0  # the longest simulated duration a zoo setting takes (a daily quota's window)
SHORTEST_WINDOW = 1e-3  # real seconds: a quota window counted in windows shorter than this overflows
MIN_RATE = 0.01  # requests per second: the slowest --rate-limit (one request per 100 s)
# The value is never echoed: a key pasted where its variable's name belongs must not reach a terminal or log.
ENV_NAME_WANTED = ("the NAME of an environment variable (letters, digits, _; not starting with a digit), "
                   "not the key itself")

__all__ = ["Setting", "ClientConfig", "RunConfig", "ServerConfig", "settings_of", "check_settings",
           "settings_record", "add_options", "options_given", "API_KEY_ENV", "ENGINES", "AUTO"]


# -------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """How one field is a setting: its kind, meaning, unit, where it may be set."""

    kind: Kind
    help: str
    unit: str | None = None  # metavar on the command line (S, N, RPS...)
    group: str = "client"  # the CLI option group: client, engine, files, service
    cli: bool = True  # an option of the commands that take this group
    grid: bool = False  # a grid (and run.ipynb) may set it
    default_text: str | None = None  # how --help states a default that is not a literal (None: CPU count)


def setting(default: Any, kind: Kind, help: str, **meta: Any) -> Any:
    """A dataclass field that is a setting: its one default and its one definition."""
    return field(default=default, metadata={"setting": Setting(kind, help, **meta)})


def settings_of(cls: type) -> Iterator[tuple[str, Setting, Any]]:
    """(name, Setting, default) of every setting field of a settings class, in definition order."""
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is not None:
            yield f.name, spec, (f.default if f.default is not MISSING else None)


def default_of(cls: type, name: str) -> Any:
    """A field's one default (for the few callers that must state it, e.g. a CLI path option)."""
    return next(f.default for f in fields(cls) if f.name == name)


def _validate(obj: Any) -> None:
    """Check (and normalise) every setting field of a frozen settings instance."""
    for name, spec, _default in settings_of(type(obj)):
        object.__setattr__(obj, name, spec.kind.check(name, getattr(obj, name)))


def check_settings(classes: tuple[type, ...], data: Any, where: str, error: type = ConfigError,
                   only: str = "grid") -> dict:
    """Overrides given as data (a grid point, notebook parameters): every key a known setting of
    `classes` that may be set there (`only`: "grid" or "any"), every value of its kind; `error` with
    one line naming `where`, the key and the expected type otherwise. None values mean "the default"."""
    if not isinstance(data, dict):
        raise error(f"{where} must be a mapping of setting: value, got {shown(data)}")
    known = {name: spec for cls in classes for name, spec, _ in settings_of(cls) if only == "any" or spec.grid}
    out = {}
    for key, value in data.items():
        if key not in known:
            raise error(f"{where}: unknown setting {shown(key)} (known: {', '.join(sorted(known))})")
        if value is None:
            continue
        try:
            out[key] = known[key].kind.check(key, value)
        except ConfigError as exc:
            raise error(f"{where}: {exc}") from None
    return out


def split_settings(overrides: dict) -> tuple[dict, dict]:
    """Overrides as (ClientConfig keywords, RunConfig keywords)."""
    client = {name for name, _s, _d in settings_of(ClientConfig)}
    return ({k: v for k, v in overrides.items() if k in client},
            {k: v for k, v in overrides.items() if k not in client})


def settings_record(config: "RunConfig") -> dict:
    """The plain-JSON settings of a run (its own and its client's), as the run record carries them;
    the url with any password masked."""
    out: dict = {}
    for obj in (config, config.client):
        for name, _spec, _default in settings_of(type(obj)):
            value = getattr(obj, name)
            out[name] = safe_url(value) if name == "url" else (os.fspath(value) if isinstance(value, Path) else value)
    return out


# ------------------------------------------------------------------------------------- the CLI
def _help(spec: Setting, default: Any) -> str:
    shown = spec.default_text if spec.default_text is not None else (
        None if default is None or isinstance(spec.kind, Flag) else f"{default:g}" if isinstance(default, float)
        else str(default))
    text = spec.help + (f" (default {shown})" if shown is not None else "")
    return text.replace("%", "%%")


def add_options(group: Any, cls: type, which: str, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add the command-line options of `cls`'s settings in CLI group `which`: `--{prefix}{name}`.
    Every option's default is None (not given): the settings class holds the default, so a value
    given on purpose can be told from one left out (and win over a profile)."""
    for name, spec, default in settings_of(cls):
        if not spec.cli or spec.group != which or name in skip:
            continue
        flag = f"--{prefix}{name.replace('_', '-')}"
        if isinstance(spec.kind, Flag):
            group.add_argument(flag, action="store_true", default=None, help=_help(spec, default))
        elif isinstance(spec.kind, Choice):
            group.add_argument(flag, choices=spec.kind.values, default=None, help=_help(spec, default))
        else:
            group.add_argument(flag, type=spec.kind.parse, default=None, metavar=spec.unit or "VALUE",
                               help=_help(spec, default))


def options_given(args: argparse.Namespace, cls: type, prefix: str = "") -> dict:
    """The settings of `cls` given on the command line (None = left out)."""
    p = prefix.replace("-", "_")
    given = {name: getattr(args, p + name, None) for name, spec, _ in settings_of(cls) if spec.cli}
    return {k: v for k, v in given.items() if v is not None}


# -------------------------------------------------------------------------------- the settings
@dataclass(frozen=True)
class ClientConfig:
    """How one line becomes one scored request: protocol, timeouts, retries, pool."""

    url: str = setting(MISSING, Url(), "scoring endpoint; without it an embedded simulated service runs on "
                       "loopback", unit="URL")
    request_field: str = setting("text", Text(), "JSON field carrying the line", unit="NAME", grid=True)
    score_field: str = setting("score", Text(), "path to the score in the reply: score, result.score, 0.score "
                               "for a list reply", unit="PATH", grid=True)
    timeout: float = setting(30.0, Number(0, strict=True), "per-request timeout in seconds", unit="S", grid=True)
    max_retries: int = setting(5, Whole(0), "retries per line after the first try", unit="N", grid=True)
    backoff_base: float = setting(0.5, Number(0), "first backoff ceiling; doubles each retry, full jitter",
                                  unit="S", grid=True)
    backoff_cap: float = setting(20.0, Number(0), "longest wait between tries, Retry-After included", unit="S",
                                 grid=True)
    connector_limit: int | str = setting(AUTO, OrAuto(Whole(0)), "connections per aiohttp session; 0 = "
                                         "unlimited; auto = the session's concurrency; aiohttp's own default is "
                                         "100", unit="N|auto", grid=True)
    max_body_bytes: int = setting(1 << 20, Whole(1), "largest reply body read", unit="BYTES", cli=False)
    api_key_env: str = setting(API_KEY_ENV, Text(_ENV_NAME, ENV_NAME_WANTED, echo=False), "the NAME of the "
                               "environment variable holding the API key, never the key itself", unit="VAR", grid=True,
                               default_text=f"the profile's api_key_env, else {API_KEY_ENV}")

    def __post_init__(self) -> None:
        _validate(self)

    def pool_size(self, concurrency: int) -> int:
        """Connections one session may hold (0 = unlimited) for a session running `concurrency` requests."""
        return concurrency if self.connector_limit == AUTO else int(self.connector_limit)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None


@dataclass(frozen=True)
class ServerConfig:
    """Shape of the simulated service: latency, capacity, faults, time scale."""

    host: str = setting("127.0.0.1", Text(), "address to listen on", group="service", cli=False)
    port: int = setting(0, Whole(0, 65535), "port; 0 = a free port", group="service", cli=False)
    latency: float = setting(4.15, Number(0), "mean service time per request", unit="SECONDS", group="service")
    latency_dist: str = setting("const", Choice(LATENCY_DISTS), "latency distribution", group="service")
    capacity: int = setting(200, Whole(0), "requests served at once, the rest queue; 0 = unlimited", unit="N",
                            group="service")
    shed: bool = setting(False, Flag(), "above capacity answer 503 at once (load shedding) instead of queueing",
                         group="service")
    rate_limit: float = setting(0.0, Number(0), "requests per second before 429 + Retry-After; 0 = none",
                                unit="RPS", group="service")
    error_rate: float = setting(0.0, Number(0, maximum=1), "share of requests answered with a transient 503",
                                unit="P", group="service")
    reset_rate: float = setting(0.0, Number(0, maximum=1), "share of requests whose connection is reset",
                                unit="P", group="service")
    slow_body_rate: float = setting(0.0, Number(0, maximum=1), "share of requests answered with a body "
                                    "trickling at 1 byte/s (never time-scaled)", unit="P", group="service")
    time_scale: float = setting(1.0, Number(0, strict=True), "multiplies every duration: 0.01 runs 100x faster",
                                unit="F", group="service")
    seed: int = setting(0, Whole(0), "random seed", unit="N", group="service")
    request_field: str = setting("text", Text(), "JSON field carrying the line", unit="NAME", group="service")
    score_field: str = setting("score", Text(), "JSON field of the score in the reply", unit="NAME",
                               group="service")
    require_api_key: str | None = field(default=None, repr=False)
    # The zoo: how real services refuse and fail (durations in simulated seconds, like latency).
    rate_burst: float = setting(0.0, Number(0), "the rate limit's bucket size (requests); 0 = one second of "
                                "rate-limit", unit="N", group="service")
    retry_after: str = setting("exact", Choice(RETRY_AFTER_MODES), "a 429's Retry-After: exact, whole (seconds "
                               "rounded up) or none (no header)", group="service")
    shed_retry_after: float = setting(0.0, Number(0, maximum=DAY), "Retry-After on a 503 over capacity; 0 = no header",
                                      unit="SECONDS", group="service")
    queue_limit: int = setting(0, Whole(0), "requests waiting for a slot (a proxy queue), beyond it 503 at once; "
                               "0 = unbounded", unit="N", group="service")
    quota: int = setting(0, Whole(0), "requests per quota window, beyond it 429 with Retry-After = seconds to the "
                         "window's end; 0 = none", unit="N", group="service")
    quota_window: float = setting(60.0, Number(0, strict=True, maximum=DAY), "the quota's window", unit="SECONDS",
                                  group="service")
    halve_after: int = setting(0, Whole(0), "capacity halves once this many requests were admitted; 0 = never",
                               unit="N", group="service")
    warmup: float = setting(0.0, Number(0, maximum=DAY), "seconds from the first request during which latency is 5x",
                            unit="SECONDS", group="service")
    flaky: int = setting(0, Whole(0), "each line's first N attempts fail (503, 429, reset, non-JSON 200, 500 "
                         "mixed)", unit="N", group="service")

    def __post_init__(self) -> None:
        _validate(self)
        if self.shed and self.queue_limit:
            raise ConfigError("shed (no queue) and queue_limit (a bounded queue) exclude each other")
        if self.quota and self.quota_window * self.time_scale < SHORTEST_WINDOW:
            raise ConfigError(f"quota_window x time_scale must be at least {SHORTEST_WINDOW:g} s (a real window), got "
                              f"{self.quota_window:g} x {self.time_scale:g}")


# Requests in flight per event loop before another loop may pay: the loops share one GIL, so a second one
# only overlaps socket system calls and adds cross-thread hand-overs. Measured in whole processes beside
# the bare client (1 s latency): a second loop loses at zero latency, is even up to a few thousand in
# flight, and pays clearly only at about twice this many; the threshold sits where it stops losing.
IN_FLIGHT_PER_LOOP = 2000
FAST_SERVICE = 0.05  # seconds: a service answering faster keeps one loop busy on its own


def choose_threads(lines: int | None, concurrency: int, latency: float | None,
                   cores: int | None) -> tuple[int, str]:
    """Event-loop threads for a run that did not give --threads, from what is known of it: the line count
    (None for a stream), the concurrency, the service's unloaded latency (None when unknown), the cores.
    One loop unless waves of replies are large enough for a second one to pay; at most one per core."""
    cores = cores or 1
    wave = concurrency if lines is None else max(1, min(lines, concurrency))
    if cores < 2:
        return 1, "one core"
    if latency is not None and latency < FAST_SERVICE:
        return 1, (f"a fast service ({latency:g} s): one loop keeps up, a second would share its GIL and add "
                   "hand-overs")
    if wave < 2 * IN_FLIGHT_PER_LOOP:
        return 1, f"at most {wave} in flight: one loop keeps up; a second pays from {2 * IN_FLIGHT_PER_LOOP}"
    n = min(cores, wave // IN_FLIGHT_PER_LOOP)
    return n, f"{wave} in flight: one loop per {IN_FLIGHT_PER_LOOP}, at most one per core ({cores})"


@dataclass(frozen=True)
class RunConfig:
    """One scoring run: which file, which engine, how much concurrency, where results go."""

    input: Path
    client: ClientConfig
    engine: str = setting("asyncio", Choice(ENGINES), "asyncio or ray: how requests are kept in flight", group="engine",
                          grid=True)
    threads: int | None = setting(None, Maybe(Whole(1)), "asyncio: event-loop threads; ray: request slots "
                                  "per worker, all on the worker's one event loop", unit="N", group="engine",
                                  grid=True, default_text="asyncio: chosen per run (one loop unless waves are large); ray: its share of C")
    workers: int | None = setting(None, Maybe(Whole(1)), "ray: worker processes, may exceed CPUs", unit="N",
                                  group="engine", grid=True, default_text="CPU count")
    max_concurrent_tasks: int | str = setting(256, OrAuto(Whole(1)), "requests in flight for the whole run; "
                                              "auto = find the service's limit", unit="N|auto", group="engine",
                                              grid=True)
    max_concurrent_tasks_max: int = setting(2000, Whole(1), "ceiling of --max-concurrent-tasks auto", unit="N",
                                            group="engine", grid=True)
    # A slower rate than MIN_RATE is a typo (0.001 for 1000), and a run at it would look hung.
    rate_limit: float | None = setting(None, Maybe(Number(MIN_RATE)), "requests per second for the "
                                       "whole run, shared by every thread and worker", unit="RPS", group="engine",
                                       grid=True, default_text="none")
    probe_grace: float | None = setting(None, Maybe(Number(0)), "seconds the first 16 requests wait for a reply "
                                        "before the rest go out: a refused key, refused connection or wrong URL "
                                        "that fails within it stops the run after at most 16 requests",
                                        unit="S", group="engine", default_text="scaled: 20x the probe's slowest "
                                        "connect, at least 0.05 and at most 0.2")
    output: Path | None = None
    cache: Path | None = Path("results/cache/scores.sqlite")
    max_line_bytes: int = setting(DEFAULT_MAX_LINE_BYTES, Whole(1), "longest line sent", unit="N", group="files",
                                  grid=True)
    records_dir: Path | None = Path("results/runs")
    progress: bool | None = None  # None: only on a terminal
    cache_namespace: str | None = None  # defaults to the url
    ray_address: str | None = setting(None, Maybe(Text()), "join this Ray cluster instead of starting a "
                                      "local one", unit="ADDR", group="engine", default_text="$RAY_ADDRESS")
    ray_dashboard: bool = setting(False, Flag(), "start Ray's dashboard on 127.0.0.1 and say how to get in (Ray "
                                  "asks for its auth token; the dashboard ends with the run)", group="engine")
    ray_verbose: bool = setting(False, Flag(), "show Ray's own logs and workers' output", group="engine")
    chunk_size: int | None = setting(None, Maybe(Whole(1)), "ray: lines per chunk sent to a worker",
                                     unit="N", group="engine", cli=False)
    label: str | None = None
    auto_start: int | None = None  # auto: where the limit starts (limit_settings.profile_start); None = slow start
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def adaptive(self) -> bool:
        return self.max_concurrent_tasks == AUTO

    @property
    def concurrency_ceiling(self) -> int:
        """Requests in flight at most: the fixed number, or the ceiling of "auto"."""
        return self.max_concurrent_tasks_max if self.adaptive else int(self.max_concurrent_tasks)

    def threads_for(self, lines: int | None = None, latency: float | None = None) -> tuple[int, str | None]:
        """The threads this run uses, and why when they were chosen rather than given: --threads as given;
        ray: each worker's share of C; asyncio: `choose_threads` from the line count and the service's
        latency (None: not known) and the cores. The pipeline asks with what it knows and fixes the number
        in the run's config before anything uses it (pipeline.resolve_threads)."""
        if self.threads is not None:
            return self.threads, None
        if self.engine == "ray":  # request slots per worker: by default its whole share of C
            return -(-self.concurrency_ceiling // self.resolved_workers), None
        return choose_threads(lines, self.concurrency_ceiling, latency, os.cpu_count())

    @property
    def resolved_threads(self) -> int:
        return self.threads_for()[0]

    @property
    def resolved_workers(self) -> int:
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    @property
    def resolved_output(self) -> Path:
        stem = "stdin" if os.fspath(self.input) == "-" else Path(self.input).stem  # `-`: as /dev/stdin
        return self.output or Path("results/scores") / f"{stem}.jsonl"

    @property
    def namespace(self) -> str:
        """The cache's namespace: the url, its credentials masked (the cache file must not hold them)."""
        return self.cache_namespace or safe_url(self.client.url)
