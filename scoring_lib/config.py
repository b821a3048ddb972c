"""The settings classes under their historical import path, and two small helpers of the base layer.

The settings themselves (each defined once) live in `settings.py`.
"""

from __future__ import annotations

from pathlib import Path

from .redact import API_KEY_ENV
from .settings import (AUTO, DEFAULT_MAX_LINE_BYTES, EMBEDDED_CACHE_NAMESPACE, ENGINES, ClientConfig, RunConfig,
                       ServerConfig)

__all__ = ["API_KEY_ENV", "AUTO", "DEFAULT_MAX_LINE_BYTES", "EMBEDDED_CACHE_NAMESPACE", "ENGINES", "ClientConfig",
           "RunConfig", "ServerConfig", "split_evenly", "read_yaml"]


def split_evenly(total: int, parts: int) -> list[int]:
    """Shares of `total` over `parts` that differ by at most one and sum to `total` (zeros dropped)."""
    base, extra = divmod(total, parts)
    shares = [base + (1 if i < extra else 0) for i in range(parts)]
    return [s for s in shares if s > 0]


MAX_YAML_BYTES = 1 << 20  # a grid or a profile is a few KB; more is the wrong file (/dev/zero, a data file)


def read_yaml(path: Path, error: type, missing: str, unreadable: str):
    """A YAML file's data, or `error` with a one-line message: `missing` or `unreadable` formatted
    with {path} (and {first}, the parser's first line). Only YAML's safe types are built (no object
    is constructed from a tag); the caller type-checks every value."""
    import yaml

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ValueError(f"larger than {MAX_YAML_BYTES} bytes: not a grid or profile")
        return yaml.safe_load(raw.decode("utf-8"))
    except FileNotFoundError:
        raise error(missing.format(path=path)) from None
    # ValueError: an integer of more digits than Python converts (4,300), e.g. `quota: 111...1`.
    except (OSError, UnicodeDecodeError, RecursionError, ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(unreadable.format(path=path, first=first)) from None
