"""The Ray engine on a real local Ray (a few workers, so CI stays quick)."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

pytest.importorskip("ray")

from scoring_lib import ServerConfig, SimulatedService, score_file
from scoring_lib.server import ServiceProcess

from conftest import REPO, cli, read_rows, run_config

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # keeps `ray start` on 127.0.0.1
pytestmark = pytest.mark.ray  # the Ray engine's tests: out of `make test-fast`

pytestmark = pytest.mark.ray


def ray_config(path, url, tmp_path, **kw):
    return run_config(path, url, tmp_path, **({"engine": "ray", "workers": 3, "threads": 2} | kw))


def test_ray_rows_are_identical_to_asyncio_rows(make_input, tmp_path):
    texts = [f"identical {i % 50}" for i in range(150)] + ["", "\t", "end"]
    path = make_input(texts)
    with SimulatedService(ServerConfig(time_scale=0.005)) as svc:
        score_file(run_config(path, svc.url, tmp_path, output=tmp_path / "a.jsonl", cache=None))
        asyncio_requests = svc.stats().requests
        svc.reset_stats()
        result = score_file(ray_config(path, svc.url, tmp_path, output=tmp_path / "r.jsonl", cache=None))
        assert svc.stats().requests == asyncio_requests + 1 == 52  # Ray's driver makes one first contact
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "r.jsonl").read_text()
    assert result.record["engine"] == "ray" and result.record["engine_info"]["mode"] == "async"
    assert result.record["engine_info"]["startup_seconds"] > 0


def test_oversubscribed_workers_and_the_total_in_flight_bound(make_input, tmp_path):
    workers = (os.cpu_count() or 1) * 3
    path = make_input([f"bounded {i}" for i in range(120)])
    with SimulatedService(ServerConfig(latency=0.2, capacity=0)) as svc:
        result = score_file(ray_config(path, svc.url, tmp_path, workers=workers, threads=4, max_concurrent_tasks=10))
        stats = svc.stats()
    info = result.record["engine_info"]
    assert info["workers"] == workers and result.stats.counts["ok"] == 120
    assert stats.peak_in_flight <= 10
    assert stats.peak_in_flight >= 8  # the bound is reached, not just respected
    assert sum(info["share_per_worker"]) == 10


def _worker_pids(since: float = 0.0, mine: bool = True) -> list[int]:
    """Ray worker processes started after `since` (an earlier test's may still be exiting). `mine`: only
    descendants of this process (its local Ray), never another run's workers on the same machine."""
    pids = []
    procs = psutil.Process().children(recursive=True) if mine else psutil.process_iter()
    for p in procs:
        try:
            if any("ScoringWorker" in part for part in p.cmdline()) and p.create_time() >= since:
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def _assert_ray_listens_on_loopback_only() -> None:
    # This test's own Ray (the local Ray its run started: descendants of this process), not another suite's.
    ray_pids = {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    assert listening, "found no Ray listener to check"
    assert all(c.laddr.ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for c in listening), listening


def test_a_killed_worker_loses_no_line(make_input, tmp_path):
    lines = 200
    path = make_input([f"survivor {i}" for i in range(lines)])
    with SimulatedService(ServerConfig(latency=0.1, capacity=0)) as svc:
        box = {}
        t0 = time.time() - 1
        run = threading.Thread(target=lambda: box.setdefault("r", score_file(
            ray_config(path, svc.url, tmp_path, workers=2, threads=2, max_concurrent_tasks=8, chunk_size=4))))
        run.start()
        deadline = time.monotonic() + 60
        while svc.stats().ok < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = _worker_pids(since=t0)
        assert pids, "no Ray worker found"
        _assert_ray_listens_on_loopback_only()
        os.kill(pids[0], signal.SIGKILL)
        run.join(120)
    result = box["r"]
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == lines and all(r["status"] == "ok" for r in rows)
    assert result.record["engine_info"]["rescored_chunks"] >= 1


def test_a_killed_ray_run_resumes_from_the_cache(make_input, tmp_path):
    import sqlite3
    lines = 200
    make_input([f"ray resumable {i}" for i in range(lines)], "in.txt")
    args = [sys.executable, "-m", "scoring_lib", "score", str(tmp_path / "in.txt"), "--engine", "ray", "--workers",
            "2", "--threads", "2", "--max-concurrent-tasks", "8", "--cache", str(tmp_path / "c.sqlite"),
            "--output", str(tmp_path / "out.jsonl"), "--records-dir", str(tmp_path / "runs")]

    def cached():
        if not (tmp_path / "c.sqlite").exists():
            return 0
        db = sqlite3.connect(tmp_path / "c.sqlite")
        try:
            return db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    with ServiceProcess(ServerConfig(latency=0.1, capacity=0)) as svc:
        first = subprocess.Popen(args + ["--url", svc.url], cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180  # Ray's start-up on a loaded 2-core machine
        while cached() < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        done_before = cached()
        assert done_before >= 40, "the first run did not get going within the deadline"
        # Ray ends the dead driver's workers within moments; until then they may send what they held.
        deadline = time.monotonic() + 60
        while (_worker_pids(mine=False) or svc.stats().in_flight) and time.monotonic() < deadline:
            time.sleep(0.1)
        requests_before = svc.stats().requests
        assert 40 <= done_before < lines
        # Lost to the kill: at most what workers held, in flight (8) or queued beside it (8 more).
        assert requests_before - done_before <= 16
        second = subprocess.run(args + ["--url", svc.url], cwd=REPO, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stderr
        assert svc.stats().requests - requests_before == lines - done_before + 1  # + the first contact
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == lines and all(r["status"] == "ok" for r in rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A `ray start --head` cluster of this test's own (temp dir, ports), stopped alone at the end:
    `ray stop` would stop every Ray on the machine, other people's runs too."""
    from scoring_lib.engines.ray_engine import LocalCluster

    with LocalCluster(num_cpus=2) as cluster:
        yield cluster.address


def test_joins_an_existing_cluster_by_address_and_leaves_it_running(ray_cluster, make_input, tmp_path):
    make_input([f"clustered {i}" for i in range(30)], "in.txt")
    for attempt in range(2):  # the second join proves the first left the cluster running
        proc = cli("score", "in.txt", "--engine", "ray", "--workers", "2", "--threads", "2", "--ray-address",
                   ray_cluster, "--server-time-scale", "0.01", "--no-cache", cwd=tmp_path, env=RAY_ENV, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "30 lines: 30 ok" in proc.stdout
    host, port = ray_cluster.split(":")
    socket.create_connection((host, int(port)), timeout=5).close()
    listening = [c.laddr.ip for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)]
    assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in listening)


def test_an_unreachable_cluster_is_one_line_and_exit_2_quickly(make_input, tmp_path):
    make_input(["x"], "in.txt")
    t0 = time.monotonic()
    proc = cli("score", "in.txt", "--engine", "ray", "--ray-address", f"127.0.0.1:{_free_port()}", cwd=tmp_path)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot reach Ray cluster" in proc.stderr
    assert not (tmp_path / "results" / "scores").exists()


def test_missing_ray_names_the_install_command(make_input, tmp_path):
    fake = tmp_path / "no_ray"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    make_input(["x"], "in.txt")
    proc = cli("score", "in.txt", "--engine", "ray", cwd=tmp_path, env={"PYTHONPATH": str(fake)})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "pip install" in proc.stderr and "[ray]" in proc.stderr


@pytest.mark.parametrize("flag", ["--workers", "--threads"])
def test_non_positive_workers_or_threads_are_exit_2(make_input, tmp_path, flag):
    make_input(["x"], "in.txt")
    proc = cli("score", "in.txt", "--engine", "ray", flag, "0", cwd=tmp_path)
    assert proc.returncode == 2 and "at least 1" in proc.stderr
