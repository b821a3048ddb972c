"""Ray's side of the machine: importing Ray for loopback, joining a cluster (checked first, with a
deadline), the local cluster a sweep starts once for all its Ray points, and how to open its dashboard.

A local cluster has its own temp dir and ports, so it never joins (or is joined by) another Ray on the
machine, and it is stopped alone: `ray stop` would stop every Ray on the machine, other users' as well.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClusterConnectError, MissingDependencyError
from . import ray_boot
from .ray_reap import SWEEP_PREFIX, Owner, reap_orphans, release_watchdog, start_watchdog, stop_cluster, write_owner

LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SWEEP_CLUSTER_ENV = "SCORING_RAY_SWEEP_CLUSTER"  # the address of the local cluster a sweep started
LOG_TAIL_LINES = 60  # of each log save_ray_logs keeps
RAY_LOG_PATTERNS = ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err", "dashboard_agent.log",
                    "runtime_env_agent.log", "worker-*.err", "python-core-worker-*.log")


def import_ray(address: str | None = None):
    """Import Ray. For a local cluster (or one on loopback) Ray's single-node mode keeps every
    listener on 127.0.0.1. Ray reads that switch from the environment when first imported, and
    its processes read it from theirs, so it is set in both places: Ray may already have been
    imported (a notebook, a test) before this engine was asked for."""
    local = not address or address == "auto" or address.rpartition(":")[0].strip("[]") in LOOPBACK
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address:
        use_local_token()
    try:
        with ray_boot.lean_import():
            import ray  # optional dependency (the `ray` extra)
            from ray._private import ray_constants
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    if local and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


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



def use_local_token() -> None:
    """Clusters started by `ray start` (Ray >= 2.5x) require the token that `ray start` saved in
    ~/.ray/auth_token; `address="auto"` finds it but an explicit host:port does not unless token
    mode is asked for. Only the mode is set here: the token itself never leaves Ray."""
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if "RAY_AUTH_MODE" not in os.environ and ("RAY_AUTH_TOKEN" in os.environ or os.path.exists(token_file)):
        os.environ["RAY_AUTH_MODE"] = "token"


def check_joinable(address: str, timeout: float = 25.0) -> None:
    """Join once from a child process, with a deadline: ray.init against a wrong address retries
    for minutes and cannot be interrupted from inside, so a bad address would hang the run."""

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


def check_reachable(address: str, timeout: float = 5.0) -> None:
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


def route_messages(ray, verbose: bool) -> str | None:
    """Ray's own messages to this driver (raylet warnings such as "N PYTHON worker processes have been
    started", errors of workers) go to a log file in Ray's session dir unless `verbose`; its path, or None
    when they go to the terminal. Ray prints them from a listener thread through one function of its
    worker module (no option turns them off), so that function is swapped for one writing to the log."""
    module = ray._private.worker
    original = getattr(module, "_scoring_print_to_stdstream", None) or module.print_to_stdstream
    module._scoring_print_to_stdstream = original
    if verbose:
        module.print_to_stdstream = original
        return None
    try:
        logs = ray._private.worker._global_node.get_logs_dir_path()
    except AttributeError:
        logs = None
    path = os.path.join(logs if logs and os.path.isdir(logs) else tempfile.gettempdir(),
                        f"scoring-driver-{os.getpid()}.log")

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        with open(path, "a", encoding="utf-8") as log:
            log.writelines(f"({data.get('pid', 'ray')}) {line}\n" for line in data.get("lines", ()))

    module.print_to_stdstream = to_log
    return path


class LocalCluster:
    """A local single-node Ray cluster on loopback for a sweep: started once (`ray start --head`),
    joined by every Ray point's kernel, stopped at the end. Its own temp dir and ports, so it never
    joins (or is joined by) another Ray on the machine; its dashboard lasts as long as it does.
    It never outlives this process (ray_reap): a watchdog stops it if this process ends without
    stopping it, and starting one first stops the clusters whose owner is gone."""

    def __init__(self, dashboard: bool = False, num_cpus: int | None = None, watchdog: bool = True) -> None:
        self.dashboard = dashboard
        self.watchdog = watchdog
        self._watchdog: subprocess.Popen | None = None
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self.address: str | None = None
        self.dashboard_url: str | None = None
        self.startup_seconds = 0.0
        self.temp_dir: str | None = None  # its own temp dir while it runs
        self._env: dict = {}

    def _ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_bin] if os.path.exists(ray_bin) else [sys.executable, "-m", "ray.scripts.scripts"]
        return subprocess.run(cmd + list(args), env=self._env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> "LocalCluster":
        import_ray()  # a clear error when Ray is missing
        t0 = time.perf_counter()
        reap_orphans("/tmp")
        self.temp_dir = tempfile.mkdtemp(prefix=SWEEP_PREFIX, dir="/tmp")  # short: Ray's socket paths
        write_owner(self.temp_dir, Owner.me())
        self._env = ray_boot.environ(os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        # Every listener on a port of its own: a Ray left to its defaults takes fixed ones (the dashboard
        # agent's 52365, the dashboard's 8265), so two on one machine collide.
        (port, client_port, dash_port, agent_port, metrics_port, agent_grpc_port, runtime_env_port,
         node_manager_port, object_manager_port) = free_ports(9)
        if self.watchdog:
            self._watchdog = start_watchdog(self.temp_dir, f"127.0.0.1:{port}")
        args = ["start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}",
                f"--temp-dir={self.temp_dir}", f"--ray-client-server-port={client_port}",
                f"--dashboard-agent-listen-port={agent_port}", f"--metrics-export-port={metrics_port}",
                f"--dashboard-agent-grpc-port={agent_grpc_port}", f"--runtime-env-agent-port={runtime_env_port}",
                f"--node-manager-port={node_manager_port}", f"--object-manager-port={object_manager_port}",
                # Workers on ports the system gives them: `ray start` otherwise hands every cluster the same
                # range (10002-19999), each raylet knowing only its own workers' ports.
                "--min-worker-port=0", "--max-worker-port=0",
                f"--object-store-memory={LOCAL_OBJECT_STORE_BYTES}", "--disable-usage-stats"]
        args += ([f"--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}"]
                 if self.dashboard else ["--include-dashboard=false"])
        proc = self._ray(*args)
        if proc.returncode != 0:
            kept = self.save_logs(Path(tempfile.gettempdir()) / f"{Path(self.temp_dir).name}-logs")
            self.stop()
            lines = [l for l in (proc.stderr or proc.stdout).strip().splitlines() if l.strip()]
            where = f" (its Ray logs: {kept})" if kept else ""
            raise ClusterConnectError(
                f"cannot start a local Ray cluster: {lines[-1] if lines else proc.returncode}{where}")
        self.address = f"127.0.0.1:{port}"
        self.dashboard_url = f"127.0.0.1:{dash_port}" if self.dashboard else None
        self.startup_seconds = time.perf_counter() - t0
        return self

    def env(self) -> dict[str, str]:
        """What a process that should join this cluster needs in its environment (kernels inherit it)."""
        assert self.address, "start the cluster first"
        return {"RAY_ADDRESS": self.address, SWEEP_CLUSTER_ENV: self.address}

    def save_logs(self, dest: Path, lines: int = LOG_TAIL_LINES) -> Path | None:
        """Copy the last `lines` lines of this cluster's raylet, GCS, agent and worker logs (the ones a
        failure is read from) to `dest`, before stop() removes its temp dir; `dest`, or None if there
        were none."""
        return save_ray_logs(self.temp_dir, dest, lines) if self.temp_dir else None

    def stop(self) -> None:
        if self.temp_dir is None:
            return
        stop_cluster(self.temp_dir, self.address)
        if self._watchdog is not None:
            release_watchdog(self._watchdog)
        self.temp_dir = self._watchdog = None
        self.address = None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def save_ray_logs(temp_dir: str | os.PathLike, dest: str | os.PathLike, lines: int = LOG_TAIL_LINES) -> Path | None:
    """The tails of the logs of the Ray session(s) under `temp_dir` (raylet, GCS, agents, workers), copied
    to `dest`: what tells why workers never came up, kept after the temp dir is removed. None: no logs."""
    dest = Path(dest)
    saved = 0
    for logs in sorted(Path(temp_dir).glob("session_*/logs")):
        if Path(logs).parent.is_symlink():
            continue  # session_latest: the same session again
        for pattern in RAY_LOG_PATTERNS:
            for log in sorted(logs.glob(pattern)):
                try:
                    with open(log, "rb") as f:
                        tail = f.readlines()[-lines:]
                except OSError:
                    continue
                if not tail:
                    continue
                dest.mkdir(parents=True, exist_ok=True)
                (dest / f"{logs.parent.name[-12:]}-{log.name}").write_bytes(b"".join(tail))
                saved += 1
    return dest if saved else None


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on loopback now (bound together, so never the same one twice)."""
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


@dataclass
class SweepRay:
    """The Ray a sweep's kernels join: its address (None: each Ray point starts its own) and, for a
    local cluster started here, how long it took to start."""

    address: str | None = None
    startup_seconds: float | None = None
    cluster: LocalCluster | None = None  # the local cluster started for the sweep (its logs on a failure)


@contextmanager
def sweep_ray(address: str | None, dashboard: bool = False) -> Iterator[SweepRay]:
    """Point every kernel at one Ray (through $RAY_ADDRESS, which kernels inherit): the given one,
    or a local cluster started here and stopped when the sweep ends."""
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", SWEEP_CLUSTER_ENV)}
    cluster = None
    env = {"RAY_ADDRESS": address} if address else {}
    try:
        if not address:
            cluster, env = _local_cluster_for_a_sweep(dashboard)
        os.environ.update(env)
        yield SweepRay(env.get("RAY_ADDRESS"), cluster.startup_seconds if cluster else None, cluster)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if cluster is not None:
            cluster.stop()


def _local_cluster_for_a_sweep(dashboard: bool) -> tuple[LocalCluster | None, dict[str, str]]:
    try:
        cluster = LocalCluster(dashboard=dashboard).start()
    except MissingDependencyError:
        return None, {}  # each Ray point fails (and is recorded) on its own; the other points run
    except ClusterConnectError as exc:
        print(f"warning: {exc}; each Ray point starts its own Ray", file=sys.stderr, flush=True)
        return None, {}
    if dashboard:
        print(dashboard_help(cluster.dashboard_url, kept=False, sweep=True), flush=True)
    return cluster, cluster.env()
