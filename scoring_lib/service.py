"""One typed description of a scoring service: how to talk to it and what is known of it.

Every figure the bounds and recommendations use (unloaded latency, capacity, rate limit) carries its
source: `configured` (someone said so, e.g. the simulator was built with it), `probed` (measured by
`probe --ramp`) or `unknown`. Nothing downstream may treat an unknown figure as known, and nothing
may fall back on a run's own latency: that turns a bound into an echo of the measurement.
Profiles are small YAML files, by default under `profiles/NAME.yaml`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .config import read_yaml
from .errors import ConfigError
from .kinds import Number, shown
from .redact import API_KEY_ENV, safe_url
from .settings import ClientConfig, ServerConfig, settings_of

# The simulator's settings a profile holds as its own keys (figures, protocol, time scale) or never (where
# it listens); every other ServerConfig setting (its distribution, faults, seed and the zoo of behaviours:
# rate_burst, retry_after, quota, flaky, ...) is kept under `simulated`, defined once in settings.py.
_NOT_SIMULATED = ("host", "port", "latency", "capacity", "rate_limit", "time_scale", "request_field", "score_field")

SOURCES = ("configured", "probed", "unknown")
PROFILES_DIR = Path("profiles")
FIGURES = ("latency", "capacity", "rate_limit")
CLIENT_KEYS = ("url", "request_field", "score_field", "api_key_env")  # how to talk to it: the client's settings
SIMULATED_KEYS = tuple(name for name, _s, _d in settings_of(ServerConfig) if name not in _NOT_SIMULATED)
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_FIGURE = Number(0, strict=True)


@dataclass(frozen=True)
class Known:
    """One figure and where it came from; value None exactly when the source is `unknown`."""

    value: float | None = None
    source: str = "unknown"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"a figure's source must be one of {', '.join(SOURCES)}, got {shown(self.source)}")
        if (self.value is None) != (self.source == "unknown"):
            raise ConfigError(f"a {self.source} figure needs {'no' if self.source == 'unknown' else 'a'} value")
        if self.value is not None and not _FIGURE.valid(self.value):
            raise ConfigError(f"a known figure must be a finite number above 0, got {shown(self.value)}")

    @property
    def known(self) -> bool:
        return self.value is not None

    def text(self, unit: str = "", fmt: str = "g") -> str:
        return "unknown" if self.value is None else f"{self.value:{fmt}}{unit} ({self.source})"


UNKNOWN = Known()


@dataclass(frozen=True)
class ServiceProfile:
    """A service: its url and protocol, and its unloaded latency (seconds on the wire), capacity
    (requests served at once) and rate limit (requests per second), each with its source."""

    url: str | None = None
    name: str = ""
    request_field: str = "text"
    score_field: str = "score"
    api_key_env: str = API_KEY_ENV  # the NAME of the variable holding the key, never the key
    latency: Known = UNKNOWN
    capacity: Known = UNKNOWN
    rate_limit: Known = UNKNOWN
    time_scale: float = 1.0  # simulated services only: measured seconds / time_scale = full-scale seconds
    notes: str = ""
    probed_at: str | None = None
    simulated: dict = field(default_factory=dict)  # the simulator's other settings given (SIMULATED_KEYS)

    def __post_init__(self) -> None:
        for name in FIGURES:
            if not isinstance(getattr(self, name), Known):
                raise ConfigError(f"profile figure {name} must be a Known(value, source)")
        specs = {n: spec for n, spec, _ in settings_of(ClientConfig)} | {
            n: spec for n, spec, _ in settings_of(ServerConfig) if n in SIMULATED_KEYS + ("time_scale",)}
        for name in CLIENT_KEYS + ("time_scale",):
            if name != "url" or self.url is not None:
                specs[name].kind.check(name, getattr(self, name))
        for name in ("name", "notes"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {shown(getattr(self, name))}")
        if self.probed_at is not None and not isinstance(self.probed_at, str):
            raise ConfigError(f"probed_at must be a string (a date and time), got {shown(self.probed_at)}")
        object.__setattr__(self, "simulated", _simulated(self.simulated, specs))

    # --- simulator <-> profile -------------------------------------------------------------
    @classmethod
    def from_server_config(cls, config: ServerConfig, url: str | None = None, name: str = "") -> "ServiceProfile":
        """The profile a simulator was built with: every figure it enforces is `configured`."""
        lat = config.latency * config.time_scale
        return cls(url=url, name=name, request_field=config.request_field, score_field=config.score_field,
                   latency=Known(lat, "configured") if lat > 0 else UNKNOWN,
                   capacity=Known(config.capacity, "configured") if config.capacity else UNKNOWN,
                   rate_limit=Known(config.rate_limit / config.time_scale, "configured") if config.rate_limit
                   else UNKNOWN,
                   time_scale=config.time_scale,
                   simulated={k: getattr(config, k) for k in SIMULATED_KEYS
                              if getattr(config, k) != _DEFAULT_SERVER[k]})

    def server_config(self, **overrides) -> ServerConfig:
        """A simulator that behaves as this profile says (unknown capacity or rate limit = none)."""
        ts = self.time_scale or 1.0
        if not self.latency.known:
            raise ConfigError("a simulated service needs a known latency")
        kw = dict(latency=self.latency.value / ts, capacity=int(self.capacity.value or 0),
                  rate_limit=(self.rate_limit.value or 0.0) * ts, time_scale=ts,
                  request_field=self.request_field, score_field=self.score_field)
        return ServerConfig(**(self.simulated | kw | overrides))

    def with_url(self, url: str) -> "ServiceProfile":
        return replace(self, url=url)

    def client_settings(self) -> dict:
        """How to talk to this service, as ClientConfig keywords: url (when known), fields, key variable."""
        out = {k: getattr(self, k) for k in CLIENT_KEYS}
        return {k: v for k, v in out.items() if v is not None}

    # --- what the figures imply ----------------------------------------------------------------
    def in_flight_ceiling(self) -> float:
        """Requests in flight that still shorten a run: the capacity, or rate x latency if that binds first."""
        out = math.inf
        if self.capacity.known:
            out = self.capacity.value
        if self.rate_limit.known and self.latency.known:
            out = min(out, self.rate_limit.value * self.latency.value)
        return out

    def lines(self) -> list[str]:
        return [f"service: {self.url or '(no url)'}" + (f" [{self.name}]" if self.name else ""),
                f"unloaded latency: {self.latency.text(' s', '.3f')}",
                f"capacity: {self.capacity.text(' in flight', '.0f')}",
                f"rate limit: {self.rate_limit.text(' req/s', '.1f')}"]

    # --- YAML ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain data (YAML, records); URL credentials masked: a secret never goes into a file."""
        d = asdict(self)
        d["url"] = safe_url(self.url)
        for name in FIGURES:
            d[name] = {"value": getattr(self, name).value, "source": getattr(self, name).source}
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> "ServiceProfile":
        """A profile from data (what YAML gives): every key known and of its type, else one line naming
        `source`, the key and the type expected."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a profile must be a mapping")
        known = set(cls.__dataclass_fields__)
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError(f"{source}: unknown profile key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        kw = {k: v for k, v in data.items() if v is not None or k in ("url", "probed_at")}
        if isinstance(kw.get("probed_at"), (date, datetime)):  # an unquoted timestamp in a hand-written file
            kw["probed_at"] = kw["probed_at"].isoformat()
        for name in FIGURES:
            kw[name] = _known(kw.get(name), f"{source}: {name}")
        try:
            return cls(**kw)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def save(self, path_or_name: str | os.PathLike) -> Path:
        """Write the profile as YAML (a plain name goes to profiles/NAME.yaml, see `save_path`); written
        aside, then renamed."""
        path = save_path(path_or_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if not data["name"]:
            data["name"] = path.stem
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)
        return path


_DEFAULT_SERVER = {name: default for name, _s, default in settings_of(ServerConfig)}


def _simulated(data: Any, specs: dict) -> dict:
    """A profile's `simulated` mapping: every key a simulator setting a profile keeps, every value of its
    kind (normalised), and the whole a simulator that can be built (e.g. not shed and queue_limit both)."""
    if not isinstance(data, dict):
        raise ConfigError(f"simulated must be a mapping of {', '.join(SIMULATED_KEYS)}, got {shown(data)}")
    out = {}
    for key, value in data.items():
        if key not in SIMULATED_KEYS:
            raise ConfigError(f"simulated: unknown key {shown(key)} (known: {', '.join(SIMULATED_KEYS)})")
        out[key] = specs[key].kind.check(f"simulated: {key}", value)
    try:
        ServerConfig(**out)
    except ConfigError as exc:
        raise ConfigError(f"simulated: {exc}") from None
    return out


def simulated_config(profile: ServiceProfile | None, settings: dict) -> ServerConfig:
    """The simulated service every path builds (serve, score and probe without a url, a sweep, a
    notebook): `settings` given (None = not given) over the profile's behaviour, figures and time scale,
    else over the simulator's defaults. One rule, so one profile means one service everywhere."""
    given = {k: v for k, v in settings.items() if v is not None}
    return profile.server_config(**given) if profile is not None else ServerConfig(**given)


def client_config(url: str | None = None, profile: ServiceProfile | None = None, **settings: Any) -> ClientConfig:
    """How to talk to a service: client `settings` given by name (None = the default) over the profile's
    url, fields and key variable; `url` over the profile's."""
    kw = (profile.client_settings() if profile is not None else {}) | {
        k: v for k, v in settings.items() if v is not None}
    kw["url"] = url or kw.get("url")
    return ClientConfig(**kw)


def _known(value: Any, where: str) -> Known:
    """A figure as written: {value, source}, a bare number (configured), or absent (unknown)."""
    if value is None:
        return UNKNOWN
    if isinstance(value, dict):
        extra = [k for k in value if k not in ("value", "source")]
        if extra:
            raise ConfigError(f"{where}: unknown key {extra[0]!r} (known: value, source)")
        v = value.get("value")
        source = value.get("source", "unknown" if v is None else "configured")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        v, source = value, "configured"  # a bare number in a hand-written profile
    else:
        raise ConfigError(f"{where} must be a number or {{value, source}}, got {shown(value)}")
    if v is not None and not _FIGURE.valid(v):
        raise ConfigError(f"{where}: value must be a finite number above 0, got {shown(v)}")
    if not isinstance(source, str) or source not in SOURCES:
        raise ConfigError(f"{where}: source must be one of {', '.join(SOURCES)}, got {shown(source)}")
    try:
        return Known(v, source)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def save_path(name: str | os.PathLike) -> Path:
    """Where `--save-profile NAME` writes: profiles/NAME.yaml for a plain name, or a path the user gave
    that ends in .yaml/.yml; anything else (`../../x`, `a/b`) is a ConfigError, never a stray file."""
    text = os.fspath(name)
    p = Path(text)
    if p.suffix in (".yaml", ".yml") and p.name not in (".yaml", ".yml"):
        return p
    if _PLAIN_NAME.match(text) and text not in (".", ".."):
        return PROFILES_DIR / f"{text}.yaml"
    raise ConfigError(f"a profile is saved under a plain NAME (profiles/NAME.yaml: letters, digits, '.', '_', "
                      f"'-') or to a path ending in .yaml, got {text!r}")


def profile_path(path_or_name: str | os.PathLike, directory: Path = PROFILES_DIR) -> Path:
    """`name` -> profiles/name.yaml; anything with a suffix or a slash is a path as given."""
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        return p
    return directory / f"{p.name}.yaml"


def load_profile(path_or_name: str | os.PathLike, base: str | os.PathLike | None = None) -> ServiceProfile:
    """Read a profile written by `probe --ramp --save-profile` or by hand; one-line errors. A relative
    path (`profiles/NAME.yaml` for a bare name) is taken from `base` when given (notebooks pass the
    project root), else from the current folder (the CLI: the shell's meaning)."""
    path = profile_path(path_or_name)
    if base is not None and not path.expanduser().is_absolute():
        path = Path(base) / path
    data = read_yaml(path, ConfigError, "service profile not found: {path}", "cannot read service profile {path}: {first}")
    return ServiceProfile.from_dict(data, source=str(path))


def whole_capacity(capacity: float) -> int:
    """A capacity figure (a probed one is a Little's-law estimate such as 199.4) as the whole number of
    requests served at once that the recommendation, the prediction and the report all assume: rounded
    up, never down. A service's capacity K is whole, so a run of N requests takes ceil(N / min(C, K))
    waves: a C one below K adds a wave (2,000 lines at K = 200: 11 waves instead of 10, +10%), while
    one above costs nothing against a queueing service (that request waits its turn) and one 503 and
    a backoff per wave against one that sheds. Rounded up, C >= K whenever the estimate is less than
    one request low, so the run's waves are not increased; rounded to nearest, not when it is
    between K - 1 and K - 0.5."""
    return max(1, math.ceil(capacity - 1e-6))  # 1e-6: 11.000000000000002 (float noise) is 11


def now_stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
