"""The Ray engine's worker actor: `slots` requests in flight on one event loop in one Ray process.

It is kept apart from the driver's side (ray_engine.py) so that a worker process imports only what
scoring needs: this module, the LoopPool and the client, never the driver's pipeline, records or report.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time

import psutil

from ..config import ClientConfig
from ..rate import MIN_SPAN
from . import Result, WorkItem
from .asyncio_engine import LoopPool


class ScoringWorker:
    """The body of one Ray actor (an async actor): `slots` requests in flight on one event loop.

    The scoring itself is the shared LoopPool (one loop thread) and ScoringClient, exactly what the
    asyncio engine runs, with this worker's share of the run's limits (limits.py); Ray's own actor
    loop only receives chunks and hands results back."""

    def __init__(self, client: ClientConfig, slots: int, api_key: str | None, limits=None) -> None:
        # When this process started and when Ray handed it this actor: what it did before (the
        # interpreter, Ray's own imports, this module's) shows in the record (RayEngine.info).
        me = psutil.Process()
        self._boot = {"process_started": me.create_time(), "actor_init": time.time(), "cpu_to_init": _cpu(me)}
        self.slots = slots
        self.pool = LoopPool(client, slots, 1, api_key=api_key, limits=limits)
        self.pool.start()
        self._peers: list = []
        self._actor_loop = None

    async def limit_stats(self) -> dict:
        return self.pool.limit_stats()

    # A Retry-After slows the whole run (limits.py): a worker passes the pauses its own requests were told
    # straight to the run's other workers (one hop, about 1 ms on loopback), sent from the actor's loop so
    # the loop thread that scores never makes a remote call.
    async def join(self, workers: list, index: int) -> None:
        """The run's workers (this one is `index`): each pause this worker is told is passed on to them."""
        self._actor_loop = asyncio.get_running_loop()
        self._peers = [w for i, w in enumerate(workers) if i != index]
        self.pool.limiter.on_pause = self._on_pause if self._peers else None

    async def pause(self, until: float) -> None:
        """Another worker of the run was told to wait until `until` (wall clock): so does this one."""
        self.pool.limiter.pause_from_peer(until)

    def _on_pause(self, until: float) -> None:  # on the pool's loop thread
        try:
            self._actor_loop.call_soon_threadsafe(self._tell_peers, until)
        except RuntimeError:  # the actor is shutting down
            pass

    def _tell_peers(self, until: float) -> None:
        for peer in self._peers:
            peer.pause.remote(until)  # fire and forget: a peer that is gone just misses it

    async def new_run(self) -> None:
        """A kept worker starts another run: its limiter forgets what the last run learned."""
        self.pool.limiter.reset()

    async def open_gate(self) -> None:
        """The driver's first contact succeeded: send at once, no probing (limits.RunLimiter.open_gate)."""
        self.pool.limiter.open_gate()

    async def warm(self) -> dict:
        """Open the connections this worker's first requests will use (as many as its limit lets it send
        now), idle in its pool until then: the driver asks once the worker is ready, while others still
        boot, so the first wave does not wait on connects (nothing is sent on them)."""
        t0 = time.perf_counter()
        futures = self.pool.warm(self.pool.limiter.current_limit())
        opened = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True)
        return {"connections": sum(n for n in opened if isinstance(n, int)),
                "seconds": round(time.perf_counter() - t0, 3)}

    async def ready(self) -> dict:
        import ray  # optional dependency: only ever imported inside a Ray worker here

        return {"pid": os.getpid(), "threads": self.pool.thread_count, "slots": self.slots,
                "host": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id(),
                **self._boot, "ready": time.time(), "cpu_to_ready": _cpu(psutil.Process())}

    async def score_chunk(self, items: list[WorkItem]) -> tuple[list[Result], int]:
        """The chunk's results, and what this worker sends in a round trip now (`per_round_trip`): with
        `auto` the driver gives each worker about that much work, so no line waits in a worker whose limit
        or rate was cut while others have room."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        reply = _LoopReply(loop, done, len(items))
        self.pool.submit(items, reply)  # type: ignore[arg-type]
        results = await done
        return results, per_round_trip(self.pool.limiter)


def per_round_trip(limiter) -> int:
    """Requests a worker's limiter sends in a round trip: its limit, or fewer when its share of the rate
    binds (that rate over a round trip, at least rate.MIN_SPAN). Each worker's rate follows its own 429s,
    so the shares differ (one several times another behind one token bucket); work handed out by the
    limit alone left a slow share holding as many lines as a fast one, and the run ended with that share
    sending its lines alone at its rate, long after the others ran dry. Read without the limiter's lock
    (two floats): a hint for the driver."""
    limit = limiter.current_limit()
    rate = limiter.rate.binding
    if math.isinf(rate):
        return limit
    return max(1, min(limit, math.ceil(rate * max(limiter.rate.rtt, MIN_SPAN))))


def _cpu(process: psutil.Process) -> float:
    """CPU seconds this process has used so far (all its threads, user and system)."""
    times = process.cpu_times()
    return times.user + times.system


class _LoopReply:
    """What LoopPool puts results into (it calls `put` from its loop thread), resolving a future on
    the actor's own loop once the whole chunk is in."""

    def __init__(self, loop, future, expected: int) -> None:
        self.loop, self.future, self.expected = loop, future, expected
        self.results: list[Result] = []

    def put(self, results: list[Result]) -> None:
        self.loop.call_soon_threadsafe(self._add, results)

    def _add(self, results: list[Result]) -> None:
        self.results.extend(results)
        if len(self.results) >= self.expected and not self.future.done():
            self.future.set_result(self.results)
