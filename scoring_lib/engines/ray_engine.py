"""Ray engine: oversubscribed worker actors, each an asyncio actor with one event loop.

Workers ask Ray for zero CPUs (the work is waiting on the network, not computing), so 32 of them run
on a 2-core machine. What "workers x threads" means here: a worker is one Ray actor process; its
"threads" are request slots, logical threads that each keep one request in flight, all multiplexed
on the worker's single event loop (the shared LoopPool and ScoringClient, run with one loop thread).
The seed gave each Ray worker 64 OS threads, each sending one request at a time: 32 x 64 meant
2,048 requests in flight on 2,048 OS threads. Here 32 x 64 means the same 2,048 requests in flight on
32 event loops. The run's max_concurrent_tasks is split into per-worker shares, and a worker keeps
min(threads, share) requests in flight: the total in flight never exceeds max_concurrent_tasks nor
workers x threads.

Limits (limits.py): each worker adapts its own share of the run's limit and rate, so no remote call
sits between a request and its slot, rather than one actor handing out shares (a round trip per
request, or shares that lag the service). Only a Retry-After crosses workers: a worker told to wait
passes the pause on to every other worker of the run (`join`, `pause`; one hop of about a millisecond,
no extra process to start), so a 429 slows the whole run as it does in one process.

The driver streams chunks to workers and gets results back per chunk; the shared pipeline caches and
writes them. A chunk whose worker died (or whose node left the cluster) is given to another worker,
so no line is lost. Workers are spread over the cluster's nodes.

Start-up is paid once where it can be: a run joins a Ray that is already up (a sweep's cluster, a
notebook's earlier run), and inside a notebook kernel the worker actors of one run are kept for the
next run with the same shape (`release()` ends them). Scoring starts once every worker is ready, or
ALL_READY_WAIT seconds after the first one is (a straggler does not hold the run back): workers still
booting take chunks as they come up. `startup_seconds` is the time to that start; `all_ready_seconds`
says when the last worker came up (None if the run ended first).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field

from ..config import ClientConfig, RunConfig, split_evenly
from ..errors import ClusterConnectError, MissingDependencyError, ServiceUnusable
from ..limits import merge_stats, settings_for
from . import Result, WorkItem

MAX_CHUNK = 64
# Scoring starts once every worker is ready, or this many seconds after the first one is, whichever
# comes first; the rest join the run as they come up (a straggling node does not hold the run back).
# Not shorter: Ray boots all worker processes at once, so on 2 cores the first of 32 is ready only some
# 16 s in, and workers still booting take the CPU the scoring needs (measured: starting 5 s after the
# first cut a whole 32 x 64 run from 37 s to 31 s but its scoring efficiency from 0.82 to 0.43).
ALL_READY_WAIT = 60.0
READY_TIMEOUT = 120.0  # no worker ready within this: the cluster cannot run workers
BOOT_CHECK_SECONDS = 0.05  # how often booting workers are looked for while scoring
MAX_CHUNK_FAILURES = 5
RESTING_SECONDS = 10.0  # a worker whose chunk failed gets no new chunk for this long, if others are up
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SWEEP_CLUSTER_ENV = "SCORING_RAY_SWEEP_CLUSTER"  # the address of the local cluster a sweep started


def import_ray(address: str | None = None):
    """Import Ray. For a local cluster (or one on loopback) Ray's single-node mode keeps every
    listener on 127.0.0.1. Ray reads that switch from the environment when first imported, and
    its processes read it from theirs, so it is set in both places: Ray may already have been
    imported (a notebook, a test) before this engine was asked for."""
    local = not address or address == "auto" or address.rpartition(":")[0].strip("[]") in LOOPBACK
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address:
        _use_local_token()
    try:
        import ray
        from ray._private import ray_constants
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    if local and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


class ScoringWorker:
    """The body of one Ray actor (an async actor): `slots` requests in flight on one event loop.

    The scoring itself is the shared LoopPool (one loop thread) and ScoringClient, exactly what the
    asyncio engine runs, with this worker's share of the run's limits (limits.py); Ray's own actor
    loop only receives chunks and hands results back."""

    def __init__(self, client: ClientConfig, slots: int, api_key: str | None, limits=None) -> None:
        from .asyncio_engine import LoopPool

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
        import asyncio

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

    async def ready(self) -> dict:
        import ray

        return {"pid": os.getpid(), "threads": self.pool.thread_count, "slots": self.slots,
                "host": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()}

    async def score_chunk(self, items: list[WorkItem]) -> list[Result]:
        import asyncio

        loop = asyncio.get_running_loop()
        done = loop.create_future()
        reply = _LoopReply(loop, done, len(items))
        self.pool.submit(items, reply)  # type: ignore[arg-type]
        return await done


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


@dataclass
class _Slot:
    handle: object
    share: int
    limit: int
    outstanding: int = 0
    info: dict | None = None  # what the worker said when it was ready; None while it boots


@dataclass
class _Kept:
    """Worker actors kept between runs of one kernel, and the shape they were made for."""

    shape: tuple = field(repr=False)  # holds the API key: never printed
    slots: list[_Slot] = field(default_factory=list)


class _State:
    """This process's Ray connection and kept actors (one per process, like Ray's own)."""

    connected_here = False  # ray.init was called by this module
    address: str | None = None  # what it was called with (None: a local Ray started here)
    dashboard_url: str | None = None
    kept: _Kept | None = None
    reuse: bool | None = None  # None: reuse inside a Jupyter kernel only


def set_reuse(on: bool | None) -> None:
    """Keep the Ray connection and worker actors between runs (True), never (False), or only inside
    a Jupyter kernel (None, the default). `release()` ends what is kept."""
    _State.reuse = on
    if on is False:
        release()


def reusing() -> bool:
    if _State.reuse is not None:
        return _State.reuse
    return "ipykernel" in sys.modules and "IPython" in sys.modules


def release() -> None:
    """End kept worker actors and the Ray connection this module made (a joined cluster keeps running)."""
    kept, _State.kept = _State.kept, None
    if "ray" not in sys.modules:
        return
    ray = sys.modules["ray"]
    if kept is not None:
        _kill(ray, kept.slots)
    if _State.connected_here and ray.is_initialized():
        ray.shutdown()
    _State.connected_here = False
    _State.address = None
    _State.dashboard_url = None


atexit.register(release)


def _kill(ray, slots: list[_Slot]) -> None:
    for slot in slots:
        try:
            ray.kill(slot.handle)
        except Exception:  # already dead or the cluster is gone
            pass


class RayEngine:
    """The Ray engine as a Dispatcher."""

    name = "ray"

    def __init__(self, config: RunConfig) -> None:
        self.ray = import_ray(config.ray_address)
        self.config = config
        self.workers = config.resolved_workers
        self.threads = config.resolved_threads
        self._shares = split_evenly(config.concurrency_ceiling, self.workers)
        self._slots_per_worker = [min(self.threads, share) for share in self._shares]
        self.chunk_size = config.chunk_size or max(1, min(MAX_CHUNK, max(self._slots_per_worker) // 2))
        self.slots: list[_Slot] = []
        self._pending: dict = {}  # ObjectRef -> (slot index, chunk, failures)
        self._failed_at: dict[int, float] = {}  # slot index -> when a chunk of it last failed (monotonic)
        self.startup_seconds = 0.0
        self.all_ready_seconds: float | None = None  # since start-up began; None until every worker is ready
        self._booting: dict = {}  # ObjectRef of ready() -> slot index
        self._t0 = time.perf_counter()
        self._next_boot_check = 0.0
        self.rescored_chunks = 0
        self.reused = False
        self.dashboard_url: str | None = None

    # -- start-up ---------------------------------------------------------------------------------
    def _init_ray(self) -> None:
        ray, cfg = self.ray, self.config
        if ray.is_initialized():
            if not _State.connected_here or _State.address == cfg.ray_address:
                return  # the caller's Ray, or the one this module made for an earlier run
            release()  # kept for another address
        verbose = cfg.ray_verbose
        common = dict(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR,
                      configure_logging=True)
        if cfg.ray_address:
            _check_reachable(cfg.ray_address)
            if cfg.ray_address != os.environ.get(SWEEP_CLUSTER_ENV):  # a sweep's own cluster is known to answer
                _check_joinable(cfg.ray_address)
            try:
                ray.init(address=cfg.ray_address, **common)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                raise ClusterConnectError(f"cannot join Ray cluster at {cfg.ray_address}: "
                                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        else:
            # address="local": a new Ray of our own, never one found on the machine (ray.init() without an
            # address joins the last cluster `ray start` announced in /tmp/ray, someone else's perhaps).
            ctx = ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=cfg.ray_dashboard,
                           dashboard_host="127.0.0.1", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                           _node_ip_address="127.0.0.1", **common)
            _State.dashboard_url = getattr(ctx, "dashboard_url", None) or None
        _State.connected_here = True
        _State.address = cfg.ray_address

    def _shape(self) -> tuple:
        return (self.config.client, tuple(self._slots_per_worker), self.config.client.api_key(),
                settings_for(self.config))

    def _start_workers(self) -> None:
        ray = self.ray
        kept, _State.kept = _State.kept, None
        if kept is not None and kept.shape == self._shape():
            for slot in kept.slots:
                slot.handle.new_run.remote()  # an actor runs its calls in order: before any chunk of this run
                slot.info = None
            self.slots, self.reused = kept.slots, True
            try:
                self._wait_ready(timeout=30)
                return
            except Exception:  # a kept worker is gone for good: start afresh
                self.slots, self.reused, self._booting = [], False, {}
        if kept is not None:
            _kill(ray, kept.slots)
        actor = ray.remote(ScoringWorker)
        api_key = self.config.client.api_key()
        # Each worker adapts its own share of the limit, rate and probe (limits.py): no coordinator on the
        # hot path; a worker never has more in flight than its slots. Only Retry-After pauses cross workers
        # (`join`: each worker passes its pauses on to the others).
        limits = settings_for(self.config)
        parts = len(self._shares)
        for index, (share, slots) in enumerate(zip(self._shares, self._slots_per_worker)):
            mine = limits.share(index, parts)
            mine = dataclasses.replace(mine, limit=min(mine.limit, slots))
            # max_restarts: a worker whose process or node died comes back (elsewhere) for later chunks;
            # SPREAD: on a cluster, workers go to every node rather than fill the first one.
            handle = actor.options(num_cpus=0, max_restarts=-1, max_task_retries=0,
                                   scheduling_strategy="SPREAD").remote(self.config.client, slots, api_key, mine)
            self.slots.append(_Slot(handle, share, 2 * slots))
        self._join(range(len(self.slots)))  # before `ready` (calls to an actor run in order): no extra round trip
        self._wait_ready(timeout=READY_TIMEOUT)

    def _wait_ready(self, timeout: float) -> None:
        """Wait for the first worker, then up to ALL_READY_WAIT more seconds for the others; those still
        booting join the run when ready (`_check_booting`)."""
        ray = self.ray
        self._booting = {slot.handle.ready.remote(): i for i, slot in enumerate(self.slots)}
        deadline = time.monotonic() + timeout
        while not any(slot.info for slot in self.slots):
            left = deadline - time.monotonic()
            if left <= 0 or not self._booting:
                raise ClusterConnectError(f"no Ray worker was ready within {timeout:g} s")
            self._check_booting(wait=min(left, 1.0))
        deadline = time.monotonic() + ALL_READY_WAIT
        while self._booting and (left := deadline - time.monotonic()) > 0:
            self._check_booting(wait=min(left, 0.5))

    def _check_booting(self, wait: float = 0.0) -> None:
        """Mark the workers that have come up as ready (their slots join the run)."""
        if not self._booting:
            return
        ray = self.ray
        refs = list(self._booting)
        ready, _ = ray.wait(refs, num_returns=1 if wait else len(refs), timeout=wait)
        if ready and wait:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            index = self._booting.pop(ref)
            try:
                self.slots[index].info = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                # Died while booting (Ray restarts it, max_restarts=-1, without its peers): ask again.
                self._join([index])
                self._booting[self.slots[index].handle.ready.remote()] = index
        if not self._booting and self.all_ready_seconds is None:
            self.all_ready_seconds = time.perf_counter() - self._t0

    @property
    def worker_info(self) -> list[dict]:
        return [slot.info for slot in self.slots if slot.info]

    def _join(self, indexes) -> None:
        handles = [s.handle for s in self.slots]
        for i in indexes:
            self.slots[i].handle.join.remote(handles, i)

    def __enter__(self) -> "RayEngine":
        t0 = self._t0 = time.perf_counter()
        contact = FirstContact(self.config.client)
        contact.start()  # while Ray and its workers start
        self._init_ray()
        try:
            self._start_workers()
            self._after_first_contact(contact)
        except BaseException:
            self.close(cancel=True)
            raise
        self.startup_seconds = time.perf_counter() - t0
        self.dashboard_url = _State.dashboard_url if _State.connected_here else None
        if self.config.ray_dashboard:
            print(dashboard_help(self.dashboard_url, kept=reusing()), flush=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)

    def _after_first_contact(self, contact: "FirstContact") -> None:
        """A service that refused the driver's first request in a way more requests will not change stops the
        run before any worker sends; one that answered lets every worker send at once (no probe gate: on a
        time-scaled run the gate's wait was a tenth of the scoring). Not answered yet: workers probe."""
        kind = contact.result(wait=0.0)
        if kind == "ok":
            for slot in self.slots:
                slot.handle.open_gate.remote()  # an actor runs its calls in order: before any chunk
        elif contact.failure is not None and contact.failure.fatal_if_unanimous:
            from ..pipeline import key_hint

            raise ServiceUnusable(f"service unusable: {kind} on the first request, sent while Ray started "
                                  f"({contact.error}){key_hint(contact.failure, self.config.client)}; nothing written")

    # -- Dispatcher ---------------------------------------------------------------------------------
    def room(self) -> int:
        if self._booting and (now := time.monotonic()) >= self._next_boot_check:
            self._next_boot_check = now + BOOT_CHECK_SECONDS
            self._check_booting()
        return sum(s.limit - s.outstanding for s in self.slots if s.info)

    def _send(self, chunk: list[WorkItem], failures: int = 0) -> None:
        # Workers that just failed rest a while (a lost node takes all its workers with it, and Ray
        # restarts them elsewhere): a rescored chunk goes to one that is up.
        now = time.monotonic()
        up = [i for i, slot in enumerate(self.slots) if slot.info] or list(range(len(self.slots)))
        candidates = [i for i in up if now - self._failed_at.get(i, -RESTING_SECONDS) >=
                      RESTING_SECONDS] or [min(up, key=lambda i: self._failed_at.get(i, 0.0))]
        index = max(candidates, key=lambda i: self.slots[i].limit - self.slots[i].outstanding)
        slot = self.slots[index]
        slot.outstanding += len(chunk)
        self._pending[slot.handle.score_chunk.remote(chunk)] = (index, chunk, failures)

    def submit(self, items: list[WorkItem]) -> None:
        for start in range(0, len(items), self.chunk_size):
            self._send(items[start:start + self.chunk_size])

    def poll(self, timeout: float) -> list[Result]:
        ray = self.ray
        if not self._pending:
            time.sleep(timeout)
            return []
        refs = list(self._pending)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        out: list[Result] = []
        for ref in ready:
            index, chunk, failures = self._pending.pop(ref)
            self.slots[index].outstanding -= len(chunk)
            try:
                out.extend(ray.get(ref))
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
                # The worker's process or node died with the chunk: give it to another worker.
                if failures + 1 >= MAX_CHUNK_FAILURES:
                    raise RuntimeError(f"a chunk's worker died {failures + 1} times: {exc}") from None
                self.rescored_chunks += 1
                self._failed_at[index] = time.monotonic()
                self._join([index])  # a restarted worker starts without its peers
                self._send(chunk, failures + 1)
        return out

    def info(self) -> dict:
        self._check_booting()
        return {
            "mode": "async",
            "workers": len(self.slots),
            "threads_per_worker": [w["threads"] for w in self.worker_info],
            "slots_per_worker": [w["slots"] for w in self.worker_info],
            "in_flight_limit": sum(self._slots_per_worker),
            "sessions": len(self.worker_info),
            "nodes": len({w.get("node_id") for w in self.worker_info}),
            "share_per_worker": [s.share for s in self.slots],
            "chunk_size": self.chunk_size,
            "rescored_chunks": self.rescored_chunks,
            "cluster": "joined" if self.config.ray_address else "local",
            "startup_seconds": self.startup_seconds,
            "workers_ready": len(self.worker_info),
            "all_ready_seconds": None if self.all_ready_seconds is None else round(self.all_ready_seconds, 3),
            "limits": self._limit_stats(),
            "reused_workers": self.reused,
        }

    def _limit_stats(self) -> dict:
        try:
            return merge_stats(self.ray.get([s.handle.limit_stats.remote() for s in self.slots if s.info], timeout=30))
        except Exception:  # a worker died or the cluster is gone: the record goes without
            return {}

    def close(self, cancel: bool = False) -> None:
        ray = self.ray
        slots, self.slots = self.slots, []
        self._pending.clear()
        if reusing() and not cancel and slots:
            _State.kept = _Kept(self._shape(), slots)  # the next run of this shape starts here
            return
        _kill(ray, slots)
        if not reusing() and _State.connected_here and ray.is_initialized():
            # A local Ray started here stops; a joined cluster keeps running, only this driver leaves.
            release()


class FirstContact:
    """One request to the service from the driver, in a thread, while Ray and its workers start: a dead or
    misconfigured service is found before any worker sends, and a live one needs no probing later.
    It costs one request per Ray run (a probe text, not a line of the input)."""

    def __init__(self, client: ClientConfig) -> None:
        import threading

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
        import asyncio

        from ..client import ScoringClient
        from ..probe import PROBE_TEXTS

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


def dashboard_help(url: str | None, kept: bool, sweep: bool = False) -> str:
    """How to open Ray's dashboard (Ray >= 2.5x asks for its auth token), and for how long it lasts."""
    if not url:
        return ("Ray dashboard: this run joined a Ray it did not start; the dashboard is that cluster's "
                "(see `ray status`) and lasts as long as the cluster.")
    if os.environ.get("RAY_AUTH_MODE", "token") != "token":
        token = "no token needed (RAY_AUTH_MODE is not token)"
    elif os.environ.get("RAY_AUTH_TOKEN"):
        token = "it asks for Ray's auth token: the value of $RAY_AUTH_TOKEN"
    else:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
        token = f"it asks for Ray's auth token: `ray get-auth-token` prints it (it is kept in {path})"
    if sweep:
        lasts = "it lasts until the sweep ends (the sweep's Ray cluster serves all its Ray points)"
    elif kept:
        lasts = ("it lasts while this kernel keeps Ray (until scoring_lib.engines.ray_engine.release() "
                 "or the kernel ends)")
    else:
        lasts = ("it ends with this run; for one that lasts, run a sweep (one Ray cluster for all its "
                 "points) or `ray start --head` and pass --ray-address")
    return f"Ray dashboard: http://{url} - {token}; {lasts}."


def _use_local_token() -> None:
    """Clusters started by `ray start` (Ray >= 2.5x) require the token that `ray start` saved in
    ~/.ray/auth_token; `address="auto"` finds it but an explicit host:port does not unless token
    mode is asked for. Only the mode is set here: the token itself never leaves Ray."""
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if "RAY_AUTH_MODE" not in os.environ and ("RAY_AUTH_TOKEN" in os.environ or os.path.exists(token_file)):
        os.environ["RAY_AUTH_MODE"] = "token"


def _check_joinable(address: str, timeout: float = 25.0) -> None:
    """Join once from a child process, with a deadline: ray.init against a wrong address retries
    for minutes and cannot be interrupted from inside, so a bad address would hang the run."""
    import subprocess
    import sys

    code = ("import logging, sys, ray; ray.init(address=sys.argv[1], logging_level=logging.ERROR, "
            "log_to_driver=False); ray.shutdown()")
    try:
        proc = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClusterConnectError(f"cannot join Ray cluster at {address}: no answer within {timeout:g} s") from None
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        raise ClusterConnectError(f"cannot join Ray cluster at {address}: {reason}")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not minutes) when an explicit host:port cannot be reached at all."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterConnectError(f"Ray address must be host:port or auto, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterConnectError(f"cannot reach Ray cluster at {address}: {exc.strerror or exc}") from None


class LocalCluster:
    """A local single-node Ray cluster on loopback for a sweep: started once (`ray start --head`),
    joined by every Ray point's kernel, stopped at the end. Its own temp dir and ports, so it never
    joins (or is joined by) another Ray on the machine; its dashboard lasts as long as it does."""

    def __init__(self, dashboard: bool = False, num_cpus: int | None = None) -> None:
        self.dashboard = dashboard
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self.address: str | None = None
        self.dashboard_url: str | None = None
        self.startup_seconds = 0.0
        self._temp_dir: str | None = None
        self._env: dict = {}

    def _ray(self, *args: str, timeout: float = 120) -> "subprocess.CompletedProcess":
        import subprocess

        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_bin] if os.path.exists(ray_bin) else [sys.executable, "-m", "ray.scripts.scripts"]
        return subprocess.run(cmd + list(args), env=self._env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> "LocalCluster":
        import tempfile

        import_ray()  # a clear error when Ray is missing
        t0 = time.perf_counter()
        self._temp_dir = tempfile.mkdtemp(prefix="ray-sweep-", dir="/tmp")  # short: Ray's socket paths
        self._env = os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        port, client_port, dash_port, agent_port, metrics_port = _free_ports(5)
        args = ["start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}",
                f"--temp-dir={self._temp_dir}", f"--ray-client-server-port={client_port}",
                f"--dashboard-agent-listen-port={agent_port}", f"--metrics-export-port={metrics_port}",
                f"--object-store-memory={LOCAL_OBJECT_STORE_BYTES}", "--disable-usage-stats"]
        args += ([f"--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}"]
                 if self.dashboard else ["--include-dashboard=false"])
        proc = self._ray(*args)
        if proc.returncode != 0:
            self.stop()
            lines = [l for l in (proc.stderr or proc.stdout).strip().splitlines() if l.strip()]
            raise ClusterConnectError(f"cannot start a local Ray cluster: {lines[-1] if lines else proc.returncode}")
        self.address = f"127.0.0.1:{port}"
        self.dashboard_url = f"127.0.0.1:{dash_port}" if self.dashboard else None
        self.startup_seconds = time.perf_counter() - t0
        return self

    def env(self) -> dict[str, str]:
        """What a process that should join this cluster needs in its environment (kernels inherit it)."""
        assert self.address, "start the cluster first"
        return {"RAY_ADDRESS": self.address, SWEEP_CLUSTER_ENV: self.address}

    def stop(self) -> None:
        import shutil

        if self._temp_dir is None:
            return
        _stop_session([self._temp_dir] + ([f"={self.address}"] if self.address else []))
        shutil.rmtree(self._temp_dir, ignore_errors=True)
        self._temp_dir = None
        self.address = None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_session(marks: list[str], timeout: float = 30.0) -> None:
    """End the processes of one Ray session (named by its temp dir or address), their children too, and
    only those: `ray stop` would stop every Ray on the machine, other users' as well."""
    import psutil

    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if any(mark in cmd for mark in marks):
                found[p.pid] = p
                found.update((c.pid, c) for c in p.children(recursive=True))
        except (psutil.Error, TypeError):
            continue
    procs = list(found.values())
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
