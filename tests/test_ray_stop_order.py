"""A local Ray cluster is stopped in the order `ray stop` uses: raylet first, gcs_server last. Ended all at
once, gcs_server waited out the whole grace period, and a sweep's cluster outlived its killed owner by it.
Checked on this test's own child processes, named as Ray's are; no Ray is started."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from scoring_lib.engines import ray_reap

# On SIGTERM: the raylet stand-in takes a moment to go; the others note whether the raylet is still there.
CHILD = """
import os, signal, sys, time
name, log, raylet = sys.argv[1], sys.argv[2], int(sys.argv[4])
def on_term(*_):
    if name == "raylet":
        time.sleep(1.0)
        seen = "-"
    else:
        try:
            os.kill(raylet, 0)
            seen = "raylet alive"
        except ProcessLookupError:
            seen = "raylet gone"
    with open(log, "a") as f:
        f.write(f"{name}: {seen}\\n")
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def _child(tmp_path, name: str, log, mark: str, raylet_pid: int = 0) -> subprocess.Popen:
    exe = tmp_path / name  # the process's name is its executable's: raylet, gcs_server, python
    if not exe.exists():
        os.symlink(os.path.realpath(sys.executable), exe)
    proc = subprocess.Popen([str(exe), "-I", "-c", CHILD, name, str(log), mark, str(raylet_pid)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_the_raylet_is_stopped_before_the_others_and_gcs_server_last(tmp_path):
    log, mark = tmp_path / "log.txt", f"scoring-test-session-{uuid.uuid4().hex}"
    raylet = _child(tmp_path, "raylet", log, mark)
    others = [_child(tmp_path, "gcs_server", log, mark, raylet.pid), _child(tmp_path, "python", log, mark, raylet.pid)]
    procs = [raylet, *others]
    try:
        ray_reap.stop_session([mark], timeout=60)
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    lines = log.read_text().splitlines()
    assert lines[0] == "raylet: -" and lines[-1] == "gcs_server: raylet gone", lines
    assert "python: raylet gone" in lines
