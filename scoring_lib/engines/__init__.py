"""Engines: ways of keeping many requests in flight. Both sit behind the same Dispatcher protocol,
so the run pipeline (reader, dedupe, cache, ordered writer, records) is written once."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from ..client import Outcome
from ..config import RunConfig

WorkItem = tuple[bytes, str]  # (cache key, text)
Result = tuple[bytes, Outcome]


class Dispatcher(Protocol):
    """What the pipeline needs of an engine: room, submit, poll, close."""

    def room(self) -> int:
        """How many more items may be submitted now without exceeding the engine's bounds."""

    def submit(self, items: list[WorkItem]) -> None: ...

    def poll(self, timeout: float) -> list[Result]:
        """Results that arrived, waiting up to `timeout` seconds for the first one."""

    def info(self) -> dict:
        """Engine facts for the run record (threads used, shares, start-up details)."""

    def close(self, cancel: bool = False) -> None: ...


def open_engine(config: RunConfig) -> AbstractContextManager[Dispatcher]:
    """The engine the config names, started; importing Ray only when it is asked for."""
    if config.engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(config)
    from .asyncio_engine import AsyncioEngine

    return AsyncioEngine(config)
