"""The Ray driver's first request to the service, sent while Ray and its workers start."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

from ..client import ScoringClient
from ..config import ClientConfig


class FirstContact:
    """One request to the service from the driver, in a thread, while Ray and its workers start: a dead or
    misconfigured service is found before any worker sends, and a live one needs no probing later.
    It costs one request per Ray run (a probe text, not a line of the input)."""

    def __init__(self, client: ClientConfig) -> None:
        self.client = dataclasses.replace(client, max_retries=0)
        self.kind: str | None = None  # None until answered: "ok" or the failure's label
        self.failure = None  # failures.Failure of the answer, if it failed
        self.error: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scoring-first-contact", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def result(self, wait: float) -> str | None:
        self._done.wait(wait)
        return self.kind

    def _run(self) -> None:
        from ..probe import PROBE_TEXTS  # probe sits above the engines (a layer up): imported when used

        async def contact() -> None:
            async with ScoringClient(self.client, 1) as client:
                outcome = await client.score(PROBE_TEXTS[0])
            self.error, self.failure = outcome.error, outcome.failure
            self.kind = "ok" if outcome.ok else (outcome.cause or "other")

        try:
            asyncio.run(contact())
        except Exception as exc:  # never the run's failure: the workers probe as usual
            self.error, self.kind = str(exc), None
        finally:
            self._done.set()
