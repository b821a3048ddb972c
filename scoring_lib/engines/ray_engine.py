"""Ray engine: oversubscribed worker actors, each running a pool of event-loop threads.

Workers ask Ray for zero CPUs (the work is waiting on the network, not computing), so 32 of them run
on a 2-core machine. The run's max_concurrent_tasks is split into fixed per-worker shares and each
worker splits its share over its threads: the total in flight never exceeds it. The driver streams
chunks to workers and gets results back per chunk; the shared pipeline caches and writes them.
A chunk whose worker died is given to another worker, so no line is lost.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import time
from dataclasses import dataclass

from ..config import ClientConfig, RunConfig, split_evenly
from ..errors import ClusterConnectError, MissingDependencyError
from ..limits import merge_stats, settings_for
from . import Result, WorkItem

MAX_CHUNK = 64
MAX_CHUNK_FAILURES = 5
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
    """The body of one Ray actor: a LoopPool of `threads` event loops with `concurrency` in flight."""

    def __init__(self, client: ClientConfig, concurrency: int, threads: int, api_key: str | None,
                 limits=None) -> None:
        from .asyncio_engine import LoopPool

        self.pool = LoopPool(client, concurrency, threads, api_key=api_key, limits=limits)
        self.pool.start()

    def limit_stats(self) -> dict:
        return self.pool.limit_stats()

    def ready(self) -> dict:
        return {"pid": os.getpid(), "threads": self.pool.thread_count, "host": socket.gethostname()}

    def score_chunk(self, items: list[WorkItem]) -> list[Result]:
        reply: queue.Queue = queue.Queue()
        self.pool.submit(items, reply)
        out: list[Result] = []
        while len(out) < len(items):
            out.extend(reply.get())
        return out


@dataclass
class _Slot:
    handle: object
    share: int
    limit: int
    outstanding: int = 0


class RayEngine:
    """The Ray engine as a Dispatcher."""

    name = "ray"

    def __init__(self, config: RunConfig) -> None:
        self.ray = import_ray(config.ray_address)
        self.config = config
        self.workers = config.resolved_workers
        self.threads = config.resolved_threads
        shares = split_evenly(config.concurrency_ceiling, self.workers)
        self.chunk_size = config.chunk_size or max(1, min(MAX_CHUNK, max(shares) // 2))
        self.slots: list[_Slot] = []
        self._shares = shares
        self._pending: dict = {}  # ObjectRef -> (slot index, chunk, failures)
        self._connected_here = False  # ray.init was called by this engine (not by the caller)
        self.startup_seconds = 0.0
        self.rescored_chunks = 0
        self.dashboard_url: str | None = None
        self.worker_info: list[dict] = []

    # -- start-up ---------------------------------------------------------------------------------
    def _init_ray(self) -> None:
        ray, cfg = self.ray, self.config
        if ray.is_initialized():
            return
        verbose = cfg.ray_verbose
        common = dict(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR,
                      configure_logging=True)
        if cfg.ray_address:
            _check_reachable(cfg.ray_address)
            _check_joinable(cfg.ray_address)
            try:
                ray.init(address=cfg.ray_address, **common)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                raise ClusterConnectError(f"cannot join Ray cluster at {cfg.ray_address}: "
                                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        else:
            ctx = ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=cfg.ray_dashboard,
                           dashboard_host="127.0.0.1", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                           _node_ip_address="127.0.0.1", **common)
            self.dashboard_url = getattr(ctx, "dashboard_url", None) or None
        self._connected_here = True

    def __enter__(self) -> "RayEngine":
        t0 = time.perf_counter()
        self._init_ray()
        try:
            ray = self.ray
            actor = ray.remote(ScoringWorker)
            api_key = self.config.client.api_key()
            # Each worker adapts its own share of the limit, rate and probe (limits.py): no coordinator on the hot path.
            limits = settings_for(self.config)
            for index, share in enumerate(self._shares):
                threads = min(self.threads, share)
                max_calls = (2 * share) // self.chunk_size + 2
                handle = actor.options(num_cpus=0, max_restarts=-1, max_task_retries=0,
                                       max_concurrency=max_calls).remote(self.config.client, share, threads, api_key,
                                                                         limits.share(index, len(self._shares)))
                self.slots.append(_Slot(handle, share, 2 * share))
            self.worker_info = ray.get([s.handle.ready.remote() for s in self.slots], timeout=120)
        except BaseException:
            self.close(cancel=True)
            raise
        self.startup_seconds = time.perf_counter() - t0
        if self.dashboard_url:
            print(f"Ray dashboard: http://{self.dashboard_url}", flush=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)

    # -- Dispatcher ---------------------------------------------------------------------------------
    def room(self) -> int:
        return sum(s.limit - s.outstanding for s in self.slots)

    def _send(self, chunk: list[WorkItem], failures: int = 0, avoid: int | None = None) -> None:
        candidates = [i for i in range(len(self.slots)) if i != avoid] or [avoid]
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
            except ray.exceptions.RayActorError as exc:
                if failures + 1 >= MAX_CHUNK_FAILURES:
                    raise RuntimeError(f"a chunk's worker died {failures + 1} times: {exc}") from None
                self.rescored_chunks += 1
                self._send(chunk, failures + 1, avoid=index)
        return out

    def info(self) -> dict:
        return {
            "mode": "threads",
            "workers": len(self.slots),
            "threads_per_worker": [w["threads"] for w in self.worker_info],
            "sessions": sum(w["threads"] for w in self.worker_info),
            "share_per_worker": [s.share for s in self.slots],
            "chunk_size": self.chunk_size,
            "rescored_chunks": self.rescored_chunks,
            "cluster": "joined" if self.config.ray_address else "local",
            "startup_seconds": self.startup_seconds,
            "limits": self._limit_stats(),
        }

    def _limit_stats(self) -> dict:
        try:
            return merge_stats(self.ray.get([s.handle.limit_stats.remote() for s in self.slots], timeout=30))
        except Exception:  # a worker died or the cluster is gone: the record goes without
            return {}

    def close(self, cancel: bool = False) -> None:
        ray = self.ray
        for slot in self.slots:
            try:
                ray.kill(slot.handle)
            except Exception:  # already dead or the cluster is gone
                pass
        self.slots = []
        self._pending.clear()
        if self._connected_here and ray.is_initialized():
            # A local Ray started here stops; a joined cluster keeps running, only this driver leaves.
            ray.shutdown()


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
