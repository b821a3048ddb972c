"""The settings classes under their historical import path, and two small helpers of the base layer.

The settings themselves (each defined once) live in `settings.py`.
"""

from __future__ import annotations

import functools
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


@functools.cache
def _unique_key_loader() -> type:
    """YAML's safe loader that refuses a key given twice in one mapping (YAML keeps the last silently:
    `{max_concurrent_tasks: 50, max_concurrent_tasks: 60}` ran 60 with no word)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode) and not any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value):
                seen = set()
                for key_node, _value in node.value:
                    key = self.construct_object(key_node, deep=deep)
                    try:
                        duplicate = key in seen
                    except TypeError:  # an unhashable key: the safe loader's own error says so
                        continue
                    if duplicate:
                        raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice",
                                                                key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


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
        return yaml.load(raw.decode("utf-8"), Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise error(missing.format(path=path)) from None
    # ValueError: an integer of more digits than Python converts (4,300), e.g. `quota: 111...1`.
    except (OSError, UnicodeDecodeError, RecursionError, ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(unreadable.format(path=path, first=first)) from None
