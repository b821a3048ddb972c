"""A signal stops a sweep: Ctrl-C, SIGTERM and SIGHUP end the whole sweep with one line and exit 128 + N,
the running kernel stopped, no later point run (papermill's own handler only shut the kernel down, and the
sweep went on with the next point)."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from scoring_lib.records import read_records

from conftest import REPO

# Three points of 40 lines at 4 in flight and a 0.6 s latency: about 6 s each, long enough to be caught
# in the middle of the first one.
GRID = {"name": "sig", "input": str(REPO / "data/sample.txt"), "lines": 40, "repeats": 1, "calibration_lines": 0,
        "service": {"latency": 4.15, "capacity": 200, "time_scale": 0.15},
        "points": [{"engine": "asyncio", "threads": 1, "max_concurrent_tasks": [4, 5, 6]}, {"engine": "ray", "workers": 1, "threads": 2}]}


def _kernels(proc: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in proc.children(recursive=True):
        try:
            if any("ipykernel_launcher" in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow  # runs a notebook through papermill
@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGHUP, 129, "hung up")])
def test_a_signal_stops_the_whole_sweep_and_its_kernel(tmp_path, sig, code, line):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    runs = tmp_path / "runs"
    sweep = subprocess.Popen([sys.executable, "-m", "scoring_lib", "sweep", str(grid), "--records-dir", str(runs),
                              "--notebooks-dir", str(tmp_path / "nb"), "--no-progress"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        me = psutil.Process(sweep.pid)
        kernels: list[psutil.Process] = []
        deadline = time.monotonic() + 120
        while not kernels and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            kernels = _kernels(me)
        assert kernels, "no kernel started"
        time.sleep(2.0)  # the first point is running in it
        os.kill(sweep.pid, sig)
        _out, err = sweep.communicate(timeout=240)  # a hang guard, not a speed check
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {line}: the runs recorded so far are kept") and "--resume" in last, err
    assert "Traceback" not in err
    assert read_records(runs) == []  # the first point did not finish, and no later point ran
    gone, alive = psutil.wait_procs(kernels, timeout=10)
    assert not alive, f"kernels left running: {[p.pid for p in alive]}"
