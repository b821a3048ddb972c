"""Typed settings, validated once at the edge (CLI, notebook or Python caller)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .errors import ConfigError

API_KEY_ENV = "SCORING_API_KEY"
DEFAULT_MAX_LINE_BYTES = 1 << 20
EMBEDDED_CACHE_NAMESPACE = "simulated://embedded"


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name} must be zero or more, got {value}")


@dataclass(frozen=True)
class ClientConfig:
    """How one line becomes one scored request: protocol, timeouts, retries, pool."""

    url: str
    request_field: str = "text"
    score_field: str = "score"
    timeout: float = 30.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    # None = "auto": never tighter than the session's share of the concurrency; 0 = unlimited.
    connector_limit: int | None = None
    max_body_bytes: int = 1 << 20
    api_key_env: str = API_KEY_ENV

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"url must be an http(s) URL, got {self.url!r}")
        _positive("timeout", self.timeout)
        _non_negative("max_retries", self.max_retries)
        _non_negative("backoff_base", self.backoff_base)
        _non_negative("backoff_cap", self.backoff_cap)
        if self.connector_limit is not None:
            _non_negative("connector_limit", self.connector_limit)
        _positive("max_body_bytes", self.max_body_bytes)
        if not self.request_field or not self.score_field:
            raise ConfigError("request and score field names must not be empty")

    def pool_size(self, concurrency: int) -> int:
        """Connections one session may hold (0 = unlimited) for a session running `concurrency` requests."""
        return concurrency if self.connector_limit is None else self.connector_limit

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None


@dataclass(frozen=True)
class ServerConfig:
    """Shape of the simulated service: latency, capacity, faults, time scale."""

    host: str = "127.0.0.1"
    port: int = 0
    latency: float = 4.15
    latency_dist: str = "const"
    capacity: int = 200
    shed: bool = False  # above capacity: answer 503 at once (load shedding) instead of queueing
    rate_limit: float = 0.0
    error_rate: float = 0.0
    reset_rate: float = 0.0  # share of requests whose connection is reset instead of answered
    slow_body_rate: float = 0.0  # share answered with a body that trickles at 1 byte/s (never time-scaled)
    time_scale: float = 1.0
    seed: int = 0
    request_field: str = "text"
    score_field: str = "score"
    require_api_key: str | None = field(default=None, repr=False)
    # The zoo (issue 16; durations in simulated seconds, like latency): how real services refuse and fail.
    rate_burst: float = 0.0  # the rate limit's bucket size (requests); 0 = one second of rate_limit
    retry_after: str = "exact"  # a 429's Retry-After: exact, whole (seconds rounded up), none (no header)
    shed_retry_after: float = 0.0  # Retry-After on a 503 over capacity; 0 = no header
    queue_limit: int = 0  # requests waiting for a slot (a proxy queue); beyond it 503 at once; 0 = unbounded
    quota: int = 0  # requests per quota window; beyond it 429, Retry-After = seconds to the window's end
    quota_window: float = 60.0
    halve_after: int = 0  # capacity halves once this many requests were admitted; 0 = never
    warmup: float = 0.0  # seconds from the first request during which latency is 5x
    flaky: int = 0  # each line's first N attempts fail (503, 429, reset, non-JSON 200, 500 mixed)

    def __post_init__(self) -> None:
        if self.retry_after not in ("exact", "whole", "none"):
            raise ConfigError(f"retry_after must be exact, whole or none, got {self.retry_after!r}")
        for name in ("rate_burst", "shed_retry_after", "queue_limit", "quota", "halve_after", "warmup", "flaky"):
            _non_negative(name, getattr(self, name))
        _positive("quota_window", self.quota_window)
        if self.shed and self.queue_limit:
            raise ConfigError("shed (no queue) and queue_limit (a bounded queue) exclude each other")
        if self.latency_dist not in ("const", "exp", "lognormal"):
            raise ConfigError(f"latency distribution must be const, exp or lognormal, got {self.latency_dist!r}")
        _non_negative("latency", self.latency)
        _non_negative("capacity", self.capacity)
        _non_negative("rate_limit", self.rate_limit)
        for name in ("error_rate", "reset_rate", "slow_body_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be between 0 and 1, got {getattr(self, name)}")
        _positive("time_scale", self.time_scale)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")


ENGINES = ("asyncio", "ray")


@dataclass(frozen=True)
class RunConfig:
    """One scoring run: which file, which engine, how much concurrency, where results go."""

    input: Path
    client: ClientConfig
    engine: str = "asyncio"
    threads: int | None = None
    workers: int | None = None
    max_concurrent_tasks: int | str = 256  # a number (fixed) or "auto" (adaptive, see limits.py)
    max_concurrent_tasks_max: int = 2000  # the ceiling of "auto"
    rate_limit: float | None = None  # requests per second for the whole run; None = no limit
    output: Path | None = None
    cache: Path | None = Path("results/cache/scores.sqlite")
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    records_dir: Path | None = Path("results/runs")
    progress: bool | None = None  # None: only on a terminal
    cache_namespace: str | None = None  # defaults to the url
    ray_address: str | None = None
    ray_dashboard: bool = False
    ray_verbose: bool = False
    chunk_size: int | None = None
    label: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.threads is not None:
            _positive("threads", self.threads)
        if self.workers is not None:
            _positive("workers", self.workers)
        if self.max_concurrent_tasks != "auto":
            if isinstance(self.max_concurrent_tasks, bool) or not isinstance(self.max_concurrent_tasks, int):
                raise ConfigError(f"max_concurrent_tasks must be a whole number or 'auto', "
                                  f"got {self.max_concurrent_tasks!r}")
            _positive("max_concurrent_tasks", self.max_concurrent_tasks)
        if self.max_concurrent_tasks_max < 1:
            raise ConfigError(f"max_concurrent_tasks_max must be at least 1, got {self.max_concurrent_tasks_max}")
        if self.rate_limit is not None:
            _positive("rate_limit", self.rate_limit)
        _positive("max_line_bytes", self.max_line_bytes)
        if self.chunk_size is not None:
            _positive("chunk_size", self.chunk_size)

    @property
    def adaptive(self) -> bool:
        return self.max_concurrent_tasks == "auto"

    @property
    def concurrency_ceiling(self) -> int:
        """Requests in flight at most: the fixed number, or the ceiling of "auto"."""
        return self.max_concurrent_tasks_max if self.adaptive else int(self.max_concurrent_tasks)

    @property
    def resolved_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        if self.engine == "ray":  # request slots per worker: by default its whole share of C
            return -(-self.concurrency_ceiling // self.resolved_workers)
        return os.cpu_count() or 1

    @property
    def resolved_workers(self) -> int:
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    @property
    def resolved_output(self) -> Path:
        stem = "stdin" if os.fspath(self.input) == "-" else Path(self.input).stem  # `-`: as /dev/stdin
        return self.output or Path("results/scores") / f"{stem}.jsonl"

    @property
    def namespace(self) -> str:
        return self.cache_namespace or self.client.url


def split_evenly(total: int, parts: int) -> list[int]:
    """Shares of `total` over `parts` that differ by at most one and sum to `total` (zeros dropped)."""
    base, extra = divmod(total, parts)
    shares = [base + (1 if i < extra else 0) for i in range(parts)]
    return [s for s in shares if s > 0]


def read_yaml(path: Path, error: type, missing: str, unreadable: str):
    """A YAML file's data, or `error` with a one-line message: `missing` or `unreadable` formatted
    with {path} (and {first}, the parser's first line)."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(missing.format(path=path)) from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(unreadable.format(path=path, first=first)) from None
