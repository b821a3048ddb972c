"""A sweep's local Ray cluster never outlives the sweep: its owner is killed (SIGHUP, SIGKILL) and the
cluster's processes and temp dir are gone soon after, by its watchdog or by the next cluster started.
Only this test's own cluster is looked at (its temp dir), never another suite's Ray on the machine."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytest.importorskip("ray")

from scoring_lib.engines import ray_reap

from conftest import REPO

pytestmark = pytest.mark.ray

OWNER = """
import sys, time
from scoring_lib.engines.ray_cluster import LocalCluster
cluster = LocalCluster(num_cpus=1, watchdog=sys.argv[1] == "watchdog").start()
print(cluster.temp_dir, cluster.address, flush=True)
time.sleep(600)
"""
GONE_WITHIN = 120.0  # generous: stopping Ray's processes on a loaded machine


def _start_owner(watchdog: bool) -> tuple[subprocess.Popen, str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, "watchdog" if watchdog else "none"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, text=True)
    line = owner.stdout.readline().split()
    if not line:
        owner.kill()
        pytest.fail(f"the owner could not start its cluster (exit {owner.wait()})")
    temp_dir, _address = line
    assert _session_pids(temp_dir), "no process of the cluster found"
    return owner, temp_dir


def _session_pids(temp_dir: str) -> list[int]:
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(p.info["cmdline"] or []):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def _wait_gone(temp_dir: str) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while (_session_pids(temp_dir) or os.path.exists(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _session_pids(temp_dir) == [], "the cluster outlived its owner"
    assert not os.path.exists(temp_dir)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_the_watchdog_stops_a_cluster_whose_owner_was_killed(sig):
    owner, temp_dir = _start_owner(watchdog=True)
    try:
        owner.send_signal(sig)
        owner.wait(timeout=60)
        _wait_gone(temp_dir)
    finally:
        owner.kill()
        ray_reap.stop_cluster(temp_dir)


def test_the_next_cluster_stops_one_whose_owner_and_watchdog_are_gone():
    owner, temp_dir = _start_owner(watchdog=False)
    try:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=60)
        time.sleep(2)
        assert _session_pids(temp_dir), "without a watchdog the cluster is still up (the case to reap)"
        assert temp_dir in ray_reap.reap_orphans()  # what LocalCluster.start does first
        _wait_gone(temp_dir)
    finally:
        owner.kill()
        ray_reap.stop_cluster(temp_dir)


def test_a_cluster_whose_owner_lives_or_is_unknown_is_left_alone(tmp_path):
    mine, unknown, dead = (tmp_path / f"{ray_reap.SWEEP_PREFIX}{name}" for name in ("mine", "unknown", "dead"))
    for d in (mine, unknown, dead):
        d.mkdir()
    ray_reap.write_owner(str(mine), ray_reap.Owner.me())
    (unknown / ray_reap.OWNER_FILE).write_text(json.dumps({"pid": "1; rm -rf /", "started": 0}))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    ray_reap.write_owner(str(dead), ray_reap.Owner(gone.pid, psutil.Process(gone.pid).create_time()))
    gone.wait()
    assert ray_reap.reap_orphans(str(tmp_path)) == [str(dead)]
    assert mine.exists() and unknown.exists() and not dead.exists()
