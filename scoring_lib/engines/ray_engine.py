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

import dataclasses
import logging
import math
import os
import statistics
import time

from ..config import RunConfig, split_evenly
from ..errors import ClusterConnectError, ServiceUnusable
from ..failures import key_hint
from ..limits import merge_stats, settings_for
from . import Result, WorkItem, ray_boot
from .ray_cluster import (LOCAL_OBJECT_STORE_BYTES, SWEEP_CLUSTER_ENV, LocalCluster, check_joinable,
                          check_reachable, dashboard_help, import_ray, route_messages)
from .ray_contact import FirstContact
from .ray_reuse import Kept, Slot, State, kill_actors, release, reusing, set_reuse
from .ray_worker import ScoringWorker

__all__ = ["RayEngine", "LocalCluster", "SWEEP_CLUSTER_ENV", "dashboard_help", "import_ray", "release",
           "set_reuse"]

MAX_CHUNK = 64
# Scoring starts once every worker is ready, or this many seconds after the first one is, whichever
# comes first; the rest join the run as they come up (a straggling node does not hold the run back).
# Not shorter: Ray boots all worker processes at once, so on a small machine the first of 32 is ready
# long before the last, and workers still booting take the CPU the scoring needs (starting a few seconds
# after the first shortened a whole 32 x 64 run but halved its scoring efficiency: bench case r shows it).
ALL_READY_WAIT = 60.0
READY_TIMEOUT = 120.0  # no worker ready within this: the cluster cannot run workers
BOOT_CHECK_SECONDS = 0.05  # how often booting workers are looked for while scoring
MAX_CHUNK_FAILURES = 5
RESTING_SECONDS = 10.0  # a worker whose chunk failed gets no new chunk for this long, if others are up
# `auto`: a worker holds at most HEADROOM x what it sends in a round trip (its limit, or its rate's share over a
# round trip when that binds; chunks come back and refill it as it grows) plus one
# chunk of small ADAPTIVE_CHUNK lines; the rest of the input waits in the driver for whichever worker has room.
HEADROOM = 1.5
ADAPTIVE_CHUNK = 4


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
        self.adaptive = config.adaptive
        self.chunk_size = config.chunk_size or (ADAPTIVE_CHUNK if self.adaptive else
                                                max(1, min(MAX_CHUNK, max(self._slots_per_worker) // 2)))
        self.slots: list[Slot] = []
        self._pending: dict = {}  # ObjectRef -> (slot index, chunk, failures)
        self._failed_at: dict[int, float] = {}  # slot index -> when a chunk of it last failed (monotonic)
        self.startup_seconds = 0.0
        # Start-up split: ray.init (0 when Ray was up), workers (actors asked for -> scoring starts),
        # first request (scoring starts -> the first result back).
        self.ray_init_seconds = 0.0
        self.workers_seconds = 0.0
        self.first_request_seconds: float | None = None
        self._workers_asked = 0.0  # wall clock, to compare with the workers' own time stamps
        self._scoring_from: float | None = None
        self.all_ready_seconds: float | None = None  # since start-up began; None until every worker is ready
        self._booting: dict = {}  # ObjectRef of ready() -> slot index
        self._warming: list = []  # ObjectRefs of warm(): each ready worker opens its connections
        self._t0 = time.perf_counter()
        self._next_boot_check = 0.0
        self.rescored_chunks = 0
        self.reused = False
        self.dashboard_url: str | None = None

    # -- start-up ---------------------------------------------------------------------------------
    def _init_ray(self) -> None:
        ray, cfg = self.ray, self.config
        if ray.is_initialized():
            if not State.connected_here or State.address == cfg.ray_address:
                return  # the caller's Ray, or the one this module made for an earlier run
            release()  # kept for another address
        t0 = time.perf_counter()
        verbose = cfg.ray_verbose
        common = dict(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR,
                      configure_logging=True)
        if cfg.ray_address:
            self._join_cluster(cfg.ray_address, common)
        else:
            # address="local": a new Ray of our own, never one found on the machine (ray.init() without an
            # address joins the last cluster `ray start` announced in /tmp/ray, someone else's perhaps).
            with ray_boot.in_environ():  # its processes boot lean (ray_boot)
                ctx = ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=cfg.ray_dashboard,
                               dashboard_host="127.0.0.1", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                               _node_ip_address="127.0.0.1", **common)
            State.dashboard_url = getattr(ctx, "dashboard_url", None) or None
        State.connected_here = True
        State.address = cfg.ray_address
        State.messages_log = route_messages(ray, verbose)
        self.ray_init_seconds = time.perf_counter() - t0

    def _join_cluster(self, address: str, common: dict) -> None:
        check_reachable(address)
        if address != os.environ.get(SWEEP_CLUSTER_ENV):  # a sweep's own cluster is known to answer
            check_joinable(address)
        try:
            self.ray.init(address=address, **common)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise ClusterConnectError(f"cannot join Ray cluster at {address}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def _shape(self) -> tuple:
        return (self.config.client, tuple(self._slots_per_worker), self.config.client.api_key(),
                settings_for(self.config))

    def _start_workers(self) -> None:
        ray = self.ray
        kept, State.kept = State.kept, None
        if kept is not None and kept.shape == self._shape():
            limits = settings_for(self.config)
            for index, slot in enumerate(kept.slots):
                slot.handle.new_run.remote()  # an actor runs its calls in order: before any chunk of this run
                slot.info = None
                slot.learnt = limits.share(index, len(kept.slots)).initial if self.adaptive else None
            self.slots, self.reused = kept.slots, True
            try:
                self._wait_ready(timeout=30)
                return
            except Exception:  # a kept worker is gone for good: start afresh
                self.slots, self.reused, self._booting = [], False, {}
        if kept is not None:
            kill_actors(ray, kept.slots)
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
            self.slots.append(Slot(handle, share, 2 * slots, learnt=mine.initial if self.adaptive else None,
                                   slots=slots))
        self._join(range(len(self.slots)))  # before `ready` (calls to an actor run in order): no extra round trip
        self._wait_ready(timeout=READY_TIMEOUT)

    def _wait_ready(self, timeout: float) -> None:
        """Wait for the first worker, then up to ALL_READY_WAIT more seconds for the others; those still
        booting join the run when ready (`_check_booting`)."""
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
                # While the others boot, it opens the connections its first requests take (sending nothing).
                self._warming.append(self.slots[index].handle.warm.remote())
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                # Died while booting (Ray restarts it, max_restarts=-1, without its peers): ask again.
                self._join([index])
                self._booting[self.slots[index].handle.ready.remote()] = index
        if not self._booting and self.all_ready_seconds is None:
            self.all_ready_seconds = time.perf_counter() - self._t0

    def _reboot(self, index: int) -> None:
        """A worker whose chunk was lost takes no chunk until Ray has restarted it and it says it is ready
        (on a loaded machine a restart takes longer than RESTING_SECONDS)."""
        slot = self.slots[index]
        if slot.info is not None:
            slot.info = None
            self._booting[slot.handle.ready.remote()] = index

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
            t_workers, self._workers_asked = time.perf_counter(), time.time()
            self._start_workers()
            self.workers_seconds = time.perf_counter() - t_workers
            self._after_first_contact(contact)
        except BaseException:
            self.close(cancel=True)
            raise
        self._scoring_from = time.perf_counter()
        self.startup_seconds = self._scoring_from - t0
        self.dashboard_url = State.dashboard_url if State.connected_here else None
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
            raise ServiceUnusable(f"service unusable: {kind} on the first request, sent while Ray started "
                                  f"({contact.error}){key_hint(contact.failure, self.config.client)}; nothing written")

    # -- Dispatcher ---------------------------------------------------------------------------------
    def room(self) -> int:
        if self._booting and (now := time.monotonic()) >= self._next_boot_check:
            self._next_boot_check = now + BOOT_CHECK_SECONDS
            self._check_booting()
        return sum(max(0, self._room(s)) for s in self.slots if s.info)

    def _room(self, slot: Slot) -> int:
        """Lines this worker may be given now: up to twice its slots, and with `auto` about as many as
        its own limit and rate will let it send before its next chunk comes back (its `per_round_trip`)."""
        cap = slot.limit if slot.learnt is None else min(slot.limit, math.ceil(HEADROOM * slot.learnt) + self.chunk_size)
        return cap - slot.outstanding

    def _free(self, slot: Slot) -> int:
        """Request slots of this worker that no line holds now (with `auto`, of those its limit lets it
        use): lines given to it start at once, where lines beyond them wait in it for a slot."""
        return (slot.slots if slot.learnt is None else min(slot.slots, slot.learnt)) - slot.outstanding

    def _pick(self) -> int:
        """The worker with the most free slots among those up, then the one with the most room: a line goes
        to a worker that can send it now before it queues behind a busy one (a 16-line remainder given
        whole to one worker whose slots were full waited there a wave, with 16 slots free elsewhere).
        Workers that just failed rest a while (a lost node takes all its workers with it, and Ray
        restarts them elsewhere)."""
        now = time.monotonic()
        up = [i for i, slot in enumerate(self.slots) if slot.info] or list(range(len(self.slots)))
        candidates = [i for i in up if now - self._failed_at.get(i, -RESTING_SECONDS) >=
                      RESTING_SECONDS] or [min(up, key=lambda i: self._failed_at.get(i, 0.0))]
        return max(candidates, key=lambda i: (max(0, self._free(self.slots[i])), self._room(self.slots[i])))

    def _send(self, chunk: list[WorkItem], failures: int = 0, index: int | None = None) -> None:
        index = self._pick() if index is None else index
        slot = self.slots[index]
        slot.outstanding += len(chunk)
        self._pending[slot.handle.score_chunk.remote(chunk)] = (index, chunk, failures)

    def submit(self, items: list[WorkItem]) -> None:
        """Chunks of at most chunk_size, each to the worker `_pick` chooses, cut to its free slots (when it
        has any) or else to its room."""
        start = 0
        while start < len(items):
            index = self._pick()
            slot = self.slots[index]
            free = self._free(slot)
            size = max(1, min(self.chunk_size, free if free > 0 else self._room(slot)))
            self._send(items[start:start + size], index=index)
            start += size

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
        if self.first_request_seconds is None and self._scoring_from is not None:
            self.first_request_seconds = time.perf_counter() - self._scoring_from
        out: list[Result] = []
        for ref in ready:
            index, chunk, failures = self._pending.pop(ref)
            self.slots[index].outstanding -= len(chunk)
            try:
                results, learnt = ray.get(ref)
                out.extend(results)
                if self.slots[index].learnt is not None:
                    self.slots[index].learnt = learnt
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
                # The worker's process or node died with the chunk: give it to another worker.
                if failures + 1 >= MAX_CHUNK_FAILURES:
                    raise RuntimeError(f"a chunk's worker died {failures + 1} times: {exc}") from None
                self.rescored_chunks += 1
                self._failed_at[index] = time.monotonic()
                self._join([index])  # a restarted worker starts without its peers
                self._reboot(index)
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
            "ray_init_seconds": round(self.ray_init_seconds, 3),
            "workers_seconds": round(self.workers_seconds, 3),
            "first_request_seconds": None if self.first_request_seconds is None else round(self.first_request_seconds, 3),
            "worker_boot": self._worker_boot(),
            "warm_connections": self._warm_stats(),
            "ray_messages_log": State.messages_log if State.connected_here else None,
        }

    def _worker_boot(self) -> dict:
        """What the workers did before their first request, in seconds (medians and the slowest): their
        process start (interpreter, Ray's and this package's imports) to the actor's __init__, and from
        the driver asking for them to each one ready. Kept workers say nothing new."""
        booted = [w for w in self.worker_info if w.get("actor_init", 0.0) >= self._workers_asked]
        if not booted:
            return {}
        imports = sorted(w["actor_init"] - w["process_started"] for w in booted)
        ready = sorted(w["ready"] - self._workers_asked for w in booted)
        cpu = {key: [w[key] for w in booted if key in w] for key in ("cpu_to_init", "cpu_to_ready")}
        return {"workers": len(booted), "process_to_actor_median": round(statistics.median(imports), 3),
                "process_to_actor_max": round(imports[-1], 3), "ready_first": round(ready[0], 3),
                "ready_median": round(statistics.median(ready), 3), "ready_last": round(ready[-1], 3),
                **{f"{key}_median": round(statistics.median(v), 3) for key, v in cpu.items() if v},
                "cpu_to_ready_total": round(sum(cpu["cpu_to_ready"]), 2) if cpu["cpu_to_ready"] else None}

    def _warm_stats(self) -> dict:
        """Connections the workers opened before their first request (`warm`), and the slowest one's seconds."""
        if not self._warming:
            return {}
        try:
            done, _ = self.ray.wait(self._warming, num_returns=len(self._warming), timeout=0)
            warmed = self.ray.get(done, timeout=5)
        except Exception:  # a worker died or the cluster is gone: the record goes without
            return {}
        return {"workers": len(warmed), "connections": sum(w["connections"] for w in warmed),
                "slowest_seconds": max((w["seconds"] for w in warmed), default=None)}

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
            State.kept = Kept(self._shape(), slots)  # the next run of this shape starts here
            return
        kill_actors(ray, slots)
        if not reusing() and State.connected_here and ray.is_initialized():
            # A local Ray started here stops; a joined cluster keeps running, only this driver leaves.
            release()
