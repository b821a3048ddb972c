"""asyncio map-reduce over a thread pool: each thread runs its own event loop, session and workers.

The run's `max_concurrent_tasks` (or the ceiling of `auto`) is split into fixed per-thread shares, and
each thread runs exactly that many worker coroutines, so the total in flight can never exceed it.
Every attempt also passes the run's limiter (limits.py), shared by all threads: it holds the adaptive
limit, the rate limit and the fail-fast rules, and the pool's room follows its current limit.
Workers pull from their thread's queue; the feeding side (the pipeline, or a Ray actor) never
creates a coroutine per line.
The caller's own event loop, if any (Jupyter), is never touched: that is what makes the public
API safe to call from a notebook without nest_asyncio.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from ..client import ScoringClient
from ..config import ClientConfig, RunConfig, split_evenly
from ..limits import LimitSettings, RunLimiter, settings_for
from ..loops import new_event_loop
from .dispatch import Result, WorkItem

_STOP = None
class ResultSink(Protocol):
    """Where a LoopPool puts finished results, from its loop threads (an Inbox, a Ray actor's reply)."""

    def put(self, results: list) -> None: ...


class _LoopThread:
    """State of one event-loop thread: its queue, its share and what it still owes."""

    def __init__(self, index: int, share: int) -> None:
        self.index = index
        self.share = share
        self.outstanding = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue | None = None
        self.tasks: list[asyncio.Task] = []
        self.client: ScoringClient | None = None  # its session, once the loop runs
        self.done: dict[int, tuple[ResultSink, list]] = {}  # finished results not yet handed over


class LoopPool:
    """`threads` event loops scoring items with `concurrency` requests in flight in total."""

    def __init__(self, client: ClientConfig, concurrency: int, threads: int, prefetch: float = 1.0,
                 api_key: str | None = None, limits: LimitSettings | None = None) -> None:
        self.limits = limits or LimitSettings(limit=concurrency, pause_cap=client.backoff_cap)
        self.limiter = RunLimiter(self.limits)
        concurrency = self.limits.limit
        shares = split_evenly(concurrency, threads)
        self._prefetch = prefetch
        self.client = client
        self._api_key = api_key
        self.threads = [_LoopThread(i, s) for i, s in enumerate(shares)]
        self._limits = [s + max(1, int(s * prefetch)) for s in shares]
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []
        self.event_loop: str | None = None  # "uvloop" or "asyncio": what the loop threads really run

    @property
    def thread_count(self) -> int:
        return len(self.threads)

    def start(self) -> None:
        ready = threading.Barrier(len(self.threads) + 1)
        self._executor = ThreadPoolExecutor(max_workers=len(self.threads), thread_name_prefix="scoring-loop")
        self._futures = [self._executor.submit(self._run_thread, t, ready) for t in self.threads]
        try:
            ready.wait(timeout=60)
        except threading.BrokenBarrierError:
            for f in self._futures:
                if f.done() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
            raise

    def _run_thread(self, state: _LoopThread, ready: threading.Barrier) -> None:
        loop = new_event_loop()
        self.event_loop = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._thread_main(state, ready))
        except BaseException:
            ready.abort()
            raise
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _thread_main(self, state: _LoopThread, ready: threading.Barrier) -> None:
        state.loop = asyncio.get_running_loop()
        state.queue = asyncio.Queue()
        gate = self.limiter.gate()  # the rate is the whole process's (limits.py), not a share per thread
        async with ScoringClient(self.client, state.share, api_key=self._api_key, limiter=gate) as client:
            state.client = client
            state.tasks = [asyncio.create_task(self._worker(state, client)) for _ in range(state.share)]
            await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60)
            results = await asyncio.gather(*state.tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                raise r

    async def _worker(self, state: _LoopThread, client: ScoringClient) -> None:
        q = state.queue
        assert q is not None
        while (item := await q.get()) is not _STOP:
            key, text, reply = item
            try:
                outcome = await client.score(text)
            except Exception as exc:  # never a lost line: whatever escaped is this line's error row
                outcome = client.internal_outcome(exc, time.time())
            with self._lock:
                state.outstanding -= 1
            # Hand results over once per loop iteration, not once per line: fewer cross-thread wake-ups.
            if not state.done:
                asyncio.get_running_loop().call_soon(_hand_over, state.done)
            state.done.setdefault(id(reply), (reply, []))[1].append((key, outcome))

    def room(self) -> int:
        with self._lock:
            room = sum(limit - t.outstanding for t, limit in zip(self.threads, self._limits))
            if self.limits.adaptive:  # the pool follows the limit: queue about `prefetch` x it, not the ceiling
                limit = self.limiter.current_limit()  # lines in their backoff are not requests in flight
                busy = sum(t.outstanding for t in self.threads) - self.limiter.lines_waiting()
                wanted = limit + max(1, int(limit * self._prefetch)) - busy
                room = min(room, wanted)
            return room

    def limit_stats(self) -> dict:
        return self.limiter.stats()

    def warm(self, n: int) -> list[Future]:
        """Open connections for up to `n` requests in flight, spread over the loop threads as their shares
        are (ScoringClient.warm): a future per thread, of the connections its pool then holds open."""
        futures = []
        for t, share in zip(self.threads, split_evenly(n, len(self.threads))):
            if t.loop is not None and t.client is not None and share > 0:
                futures.append(asyncio.run_coroutine_threadsafe(t.client.warm(share), t.loop))
        return futures

    def activity(self) -> int:
        """Attempts started and ended so far: moves while anything is in flight (the pipeline's watchdog)."""
        return self.limiter.started + self.limiter.released

    def submit(self, items: list[WorkItem], reply: "ResultSink") -> None:
        """Give each item to the least-loaded thread; results go to `reply` as lists of (key, Outcome)."""
        batches: list[list] = [[] for _ in self.threads]
        with self._lock:
            if len(self.threads) == 1:  # the usual case: no choosing, item by item
                self.threads[0].outstanding += len(items)
                batches[0] = [(key, text, reply) for key, text in items]
            else:
                for key, text in items:
                    t = min(self.threads, key=lambda s: s.outstanding / s.share)
                    t.outstanding += 1
                    batches[t.index].append((key, text, reply))
        for t, batch in zip(self.threads, batches):
            if batch:
                assert t.loop is not None and t.queue is not None
                t.loop.call_soon_threadsafe(_put_all, t.queue, batch)

    def close(self, cancel: bool = False) -> None:
        for t in self.threads:
            if t.loop is None or t.loop.is_closed():
                continue
            try:
                if cancel:
                    t.loop.call_soon_threadsafe(_cancel_all, t.tasks)
                else:
                    t.loop.call_soon_threadsafe(_put_all, t.queue, [_STOP] * t.share)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            errors = [f.exception() for f in self._futures if f.exception() is not None]
            self._executor = None
            if errors and not cancel:
                raise errors[0]  # type: ignore[misc]


def _hand_over(done: dict) -> None:
    for reply, results in done.values():
        reply.put(results)
    done.clear()


def _put_all(q: asyncio.Queue, items: list) -> None:
    for item in items:
        q.put_nowait(item)


def _cancel_all(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()


class AsyncioEngine:
    """The asyncio engine as a Dispatcher: a LoopPool feeding one Inbox."""

    name = "asyncio"

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.pool = LoopPool(config.client, config.concurrency_ceiling, config.resolved_threads,
                             limits=settings_for(config))
        self._results = Inbox()
        self.startup_seconds = 0.0

    def __enter__(self) -> "AsyncioEngine":
        t0 = time.perf_counter()
        self.pool.start()
        self.startup_seconds = time.perf_counter() - t0
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)

    def room(self) -> int:
        return self.pool.room()

    def open_gate(self) -> None:
        """The service is known to answer (the CLI's embedded simulator): no first-contact probing, the
        first requests go out at once (limits.RunLimiter.open_gate). Call before the first submit."""
        self.pool.limiter.open_gate()

    def submit(self, items: list[WorkItem]) -> None:
        self.pool.submit(items, self._results)

    def poll(self, timeout: float) -> list[Result]:
        return [r for batch in self._results.drain(timeout) for r in batch]

    def activity(self) -> int:
        return self.pool.activity()

    def info(self) -> dict:
        return {
            "threads_used": self.pool.thread_count,
            "event_loop": self.pool.event_loop,
            "sessions": self.pool.thread_count,
            "pool_per_session": [self.config.client.pool_size(t.share) for t in self.pool.threads],
            "startup_seconds": self.startup_seconds,
            "limits": self.pool.limit_stats(),
        }

    def close(self, cancel: bool = False) -> None:
        self.pool.close(cancel=cancel)


class Inbox:
    """Results from the loop threads to the reading thread: a deque the loop threads append to (atomic,
    no lock) and the reading thread polls, sleeping a little longer each time it finds it empty.

    Nothing on the loop threads' side wakes the reader. A queue.Queue (or an Event) notifies a
    condition on every hand-over, and at zero latency those wake-ups, and the GIL hand-offs they cause,
    cost more than the requests; polling gathers results into fewer, larger batches. The reader looks
    at least every MAX_POLL_PAUSE seconds, which is nothing beside a request's latency, while the
    pool's prefetched items keep the loops busy meanwhile."""

    MIN_POLL_PAUSE = 0.002
    MAX_POLL_PAUSE = 0.01

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()

    def put(self, item) -> None:
        self._items.append(item)

    def drain(self, timeout: float) -> list:
        """Everything put so far, waiting up to `timeout` for the first item."""
        items = self._items
        if not items:
            deadline = time.monotonic() + timeout
            pause = self.MIN_POLL_PAUSE
            while not items:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                time.sleep(min(pause, left))
                pause = min(2 * pause, self.MAX_POLL_PAUSE)
        out = []
        while items:
            out.append(items.popleft())
        return out
