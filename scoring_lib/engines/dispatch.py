"""What the pipeline needs of an engine (the Dispatcher protocol) and what makes one (a factory)."""

from __future__ import annotations

from collections.abc import Callable
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


# Makes the engine for a run, not yet started: entering the context manager starts it.
EngineFactory = Callable[[RunConfig], AbstractContextManager[Dispatcher]]
