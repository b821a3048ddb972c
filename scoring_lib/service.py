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
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .config import API_KEY_ENV, ServerConfig, read_yaml
from .errors import ConfigError

SOURCES = ("configured", "probed", "unknown")
PROFILES_DIR = Path("profiles")
FIGURES = ("latency", "capacity", "rate_limit")


@dataclass(frozen=True)
class Known:
    """One figure and where it came from; value None exactly when the source is `unknown`."""

    value: float | None = None
    source: str = "unknown"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"a figure's source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if (self.value is None) != (self.source == "unknown"):
            raise ConfigError(f"a {self.source} figure needs {'no' if self.source == 'unknown' else 'a'} value")
        if self.value is not None and (not math.isfinite(self.value) or self.value <= 0):
            raise ConfigError(f"a known figure must be a positive number, got {self.value!r}")

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
    simulated: dict = field(default_factory=dict)  # the simulator's other settings (dist, faults, seed)

    def __post_init__(self) -> None:
        for name in FIGURES:
            if not isinstance(getattr(self, name), Known):
                raise ConfigError(f"profile figure {name} must be a Known(value, source)")
        if not self.request_field or not self.score_field:
            raise ConfigError("request and score field names must not be empty")

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
                   simulated={"latency_dist": config.latency_dist, "error_rate": config.error_rate,
                              "shed": config.shed, "seed": config.seed})

    def server_config(self, **overrides) -> ServerConfig:
        """A simulator that behaves as this profile says (unknown capacity or rate limit = none)."""
        ts = self.time_scale or 1.0
        if not self.latency.known:
            raise ConfigError("a simulated service needs a known latency")
        sim = dict(self.simulated)
        kw = dict(latency=self.latency.value / ts, capacity=int(self.capacity.value or 0),
                  rate_limit=(self.rate_limit.value or 0.0) * ts, time_scale=ts,
                  request_field=self.request_field, score_field=self.score_field,
                  latency_dist=sim.get("latency_dist", "const"), error_rate=sim.get("error_rate", 0.0),
                  shed=bool(sim.get("shed", False)), seed=sim.get("seed", 0))
        return ServerConfig(**(kw | overrides))

    def with_url(self, url: str) -> "ServiceProfile":
        return replace(self, url=url)

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
        d = asdict(self)
        for name in FIGURES:
            d[name] = {"value": getattr(self, name).value, "source": getattr(self, name).source}
        return d

    @classmethod
    def from_dict(cls, data: dict, source: str = "profile") -> "ServiceProfile":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a profile must be a mapping")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{source}: unknown profile key {sorted(unknown)[0]!r}")
        kw = dict(data)
        for name in FIGURES:
            v = kw.get(name)
            if v is None:
                kw[name] = UNKNOWN
            elif isinstance(v, dict):
                kw[name] = Known(v.get("value"), v.get("source", "unknown" if v.get("value") is None else "configured"))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                kw[name] = Known(float(v), "configured")  # a bare number in a hand-written profile
            else:
                raise ConfigError(f"{source}: {name} must be a number or {{value, source}}, got {v!r}")
        try:
            return cls(**kw)
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def save(self, path_or_name: str | os.PathLike) -> Path:
        """Write the profile as YAML (a bare name goes to profiles/NAME.yaml); written aside, then renamed."""
        path = profile_path(path_or_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if not data["name"]:
            data["name"] = path.stem
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)
        return path


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
