"""The single-driver ceiling (case d): the whole pipeline against an engine that answers at once."""

from __future__ import annotations

import time
from pathlib import Path

from ..client import Outcome
from ..config import ClientConfig, RunConfig
from ..pipeline import score_file
from .measure import Measurement, write_unique_lines


class InstantEngine:
    """A Dispatcher whose service is infinitely fast: every item is scored the moment it is submitted.
    What is left is the driver's own cost: reader, dedupe, cache, ordered writer, records."""

    name = "instant"

    def __init__(self, config: RunConfig | None = None, room: int = 1000) -> None:
        self._room = room
        self._done: list = []
        self.startup_seconds = 0.0

    def __enter__(self) -> "InstantEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def room(self) -> int:
        return self._room - len(self._done)

    def submit(self, items: list) -> None:
        now = time.time()
        self._done += [(key, Outcome(0.5, None, 1, now, now, 0.0, now)) for key, _ in items]

    def poll(self, timeout: float) -> list:
        done, self._done = self._done, []
        return done

    def info(self) -> dict:
        return {"sessions": 0, "startup_seconds": 0.0}

    def close(self, cancel: bool = False) -> None:
        pass


def case_driver(work: Path, n: int = 200_000) -> list[Measurement]:
    """The single-driver ceiling: lines/s of the whole pipeline when the service answers instantly,
    without and with the persistent cache (one process, one driver thread)."""
    path = write_unique_lines(work / "driver.txt", n)
    out = []
    for name, cache in (("no cache (run-local store)", None), ("persistent cache", work / "driver-cache.sqlite")):
        config = RunConfig(input=path, client=ClientConfig(url="http://127.0.0.1:9/"), cache=cache, records_dir=None,
                           progress=False, output=work / "driver.out.jsonl")
        cpu0 = time.process_time()
        result = score_file(config, write_record=False, engine=InstantEngine)
        cpu = time.process_time() - cpu0
        wall = result.stats.scoring_seconds
        out.append(Measurement("d", f"driver only, {name}", n, wall,
                               extra={"lines_per_s": round(n / wall), "cpu_us_per_line": round(cpu / n * 1e6)}))
    return out
