"""Engines: ways of keeping many requests in flight. All sit behind the same Dispatcher protocol,
so the run pipeline (reader, dedupe, cache, ordered writer, records) is written once.

Engines are found by name in a registry (papermill's `engines.py` is the model): the built-in
`asyncio` and `ray` are registered here; a caller (bench's instant engine, a test's fake) registers
its own or hands `score_file` a factory directly, instead of patching the pipeline."""

from __future__ import annotations

from contextlib import AbstractContextManager

from ..config import RunConfig
from ..errors import ConfigError
from .asyncio_engine import AsyncioEngine
from .dispatch import Dispatcher, EngineFactory, Result, WorkItem

__all__ = ["Dispatcher", "EngineFactory", "Result", "WorkItem", "EngineRegistry", "register", "get_engine",
           "open_engine"]


class EngineRegistry:
    """Engine factories by name; one instance per process (`registry`)."""

    def __init__(self) -> None:
        self._factories: dict[str, EngineFactory] = {}

    def register(self, name: str, factory: EngineFactory) -> None:
        """Make `name` open engines with `factory` (a later registration of the same name replaces it)."""
        self._factories[name] = factory

    def get_engine(self, name: str) -> EngineFactory:
        """The factory registered as `name`."""
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories))
            raise ConfigError(f"no engine named {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._factories)


def _ray_engine(config: RunConfig) -> AbstractContextManager[Dispatcher]:
    from .ray_engine import RayEngine  # Ray is optional and heavy: loaded only when a run asks for it

    return RayEngine(config)


registry = EngineRegistry()
register = registry.register
get_engine = registry.get_engine
register("asyncio", AsyncioEngine)
register("ray", _ray_engine)


def open_engine(config: RunConfig, engine: str | EngineFactory | None = None) -> AbstractContextManager[Dispatcher]:
    """The engine for `config`, not yet started: `engine` as given (a registered name or a factory),
    else the one `config.engine` names."""
    factory = engine if callable(engine) else get_engine(engine or config.engine)
    return factory(config)
