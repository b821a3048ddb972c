"""A local Ray cluster never outlives the process that started it (its owner).

Three ways, so every end of the owner is covered:
- the owner stops it (a `finally`, which Ctrl-C and the CLI's SIGTERM reach);
- a watchdog: a tiny process of its own session (a terminal's SIGHUP or Ctrl-C does not reach it) that
  holds a pipe from the owner; the pipe closes when the owner ends in any way (SIGKILL and SIGHUP too),
  and the watchdog then stops that cluster and removes its temp dir;
- the next local cluster started on the machine (by this user) first stops every cluster whose owner is
  gone, found by the owner file in each cluster's temp dir (a watchdog killed along with its owner).

Only that cluster's processes are stopped: found by its session (its temp dir or its address on their
command line) with their children, this user's only; `ray stop` would stop every Ray on the machine.
This module uses only the standard library and psutil: the watchdog runs it as a script
(`python -I ray_reap.py`), without importing the package.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

SWEEP_PREFIX = "ray-sweep-"  # the temp dirs of local clusters (short: Ray's socket paths have a length limit)
OWNER_FILE = "scoring-owner.json"
RELEASE = b"release\n"  # what an owner that stopped its cluster itself tells the watchdog
WATCH_ENV = "SCORING_RAY_WATCH"  # [temp dir, address, owner pid] for the watchdog
WATCH_SECONDS = 1.0  # how often the watchdog also checks that its parent is still the owner


@dataclass(frozen=True)
class Owner:
    """The process a cluster belongs to: its pid and start time (a reused pid is another process)."""

    pid: int
    started: float

    @classmethod
    def me(cls) -> "Owner":
        return cls(os.getpid(), psutil.Process().create_time())

    def alive(self) -> bool:
        try:
            return psutil.Process(self.pid).create_time() == self.started
        except psutil.Error:
            return False


def write_owner(temp_dir: str, owner: Owner) -> None:
    """Mark the cluster in `temp_dir` as `owner`'s (written before the cluster starts)."""
    Path(temp_dir, OWNER_FILE).write_text(json.dumps({"pid": owner.pid, "started": owner.started}))


def read_owner(temp_dir: str) -> Owner | None:
    """The owner recorded in `temp_dir`, or None if there is none that reads as one."""
    try:
        data = json.loads(Path(temp_dir, OWNER_FILE).read_text())
        pid, started = data["pid"], data["started"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if type(pid) is not int or type(started) not in (int, float):
        return None
    return Owner(pid, float(started))


def stop_session(marks: list[str], timeout: float = 30.0) -> None:
    """End the processes of one Ray session (named by its temp dir or address), their children too, and
    only those of this user: `ray stop` would stop every Ray on the machine, other users' as well."""
    me, uid = os.getpid(), os.getuid()
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline", "uids"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.pid != me and p.info["uids"].real == uid and any(mark in cmd for mark in marks):
                found[p.pid] = p
                found.update((c.pid, c) for c in p.children(recursive=True) if c.pid != me)
        except (psutil.Error, TypeError, AttributeError):
            continue
    for bucket in stop_order(list(found.values())):
        for p in bucket:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(bucket, timeout=timeout / 3)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass


def stop_order(procs: list[psutil.Process]) -> list[list[psutil.Process]]:
    """The order `ray stop` ends a node's processes in: the raylet first, gcs_server last, the rest between.
    Ended all at once, gcs_server waits out its whole grace period (its peers vanished under it), so a
    cluster whose owner was killed outlived it by that long."""
    def rank(p: psutil.Process) -> int:
        try:
            name = p.name()
        except psutil.Error:
            return 1
        return 0 if name == "raylet" else 2 if name == "gcs_server" else 1

    buckets: list[list[psutil.Process]] = [[], [], []]
    for p in procs:
        buckets[rank(p)].append(p)
    return [b for b in buckets if b]


def stop_cluster(temp_dir: str, address: str | None = None) -> None:
    """Stop the local cluster of `temp_dir` (and `address`) and remove its temp dir."""
    stop_session([temp_dir] + ([f"={address}"] if address else []))
    shutil.rmtree(temp_dir, ignore_errors=True)


def reap_orphans(root: str | None = None) -> list[str]:
    """Stop this user's local clusters whose owner is gone; the temp dirs of those stopped.
    A dir without an owner file is left alone (a cluster of another program, or one being made)."""
    reaped = []
    for path in sorted(Path(root or tempfile.gettempdir()).glob(f"{SWEEP_PREFIX}*")):
        try:
            if path.stat().st_uid != os.getuid() or not path.is_dir():
                continue
        except OSError:
            continue
        owner = read_owner(str(path))
        if owner is not None and not owner.alive():
            stop_cluster(str(path))
            reaped.append(str(path))
    return reaped


def start_watchdog(temp_dir: str, address: str) -> subprocess.Popen:
    """A process that stops this cluster once this process ends (any way); `release_watchdog` ends it."""
    # What to watch goes in the environment, not the command line, where stop_session looks for the cluster.
    env = os.environ | {WATCH_ENV: json.dumps([temp_dir, address, os.getpid()])}
    return subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def release_watchdog(proc: subprocess.Popen) -> None:
    """The owner stopped its cluster itself: the watchdog leaves without doing anything."""
    try:
        proc.stdin.write(RELEASE)
        proc.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def watch(temp_dir: str, address: str, owner_pid: int) -> None:
    """Wait until the owner ends (the pipe from it closes, or this process is handed to another parent),
    then stop its cluster; leave quietly if the owner says it stopped the cluster itself."""
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    while os.getppid() == owner_pid:
        ready, _, _ = select.select([stdin], [], [], WATCH_SECONDS)
        if ready:
            if stdin.readline() == RELEASE:
                return
            break  # end of file: the owner is gone
    stop_cluster(temp_dir, address or None)


if __name__ == "__main__":
    watch(*json.loads(os.environ[WATCH_ENV]))
