"""Ray's start-up paid once: a kernel keeps its Ray and workers between runs of one shape, a sweep
runs all its Ray points on one local cluster, and the dashboard says how to get in."""

import os
import time

import psutil
import pytest

pytest.importorskip("ray")

from scoring_lib import ServerConfig, SimulatedService, score_file
from scoring_lib.engines import ray_boot, ray_engine, ray_reuse
from scoring_lib.engines.ray_engine import LocalCluster, dashboard_help

from conftest import read_rows, run_config

pytestmark = pytest.mark.ray


@pytest.fixture
def reuse():
    ray_engine.set_reuse(True)
    try:
        yield
    finally:
        ray_engine.set_reuse(None)
        ray_engine.release()


def _workers_alive() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any("ScoringWorker" in part for part in (p.info["cmdline"] or []))
            and p.pid in {c.pid for c in psutil.Process().children(recursive=True)}]


def test_a_kernel_reuses_its_workers_for_runs_of_the_same_shape(reuse, make_input, tmp_path):
    path = make_input([f"reused {i}" for i in range(60)])
    with SimulatedService(ServerConfig(time_scale=0.005)) as svc:
        kw = dict(engine="ray", workers=2, threads=4, max_concurrent_tasks=8, cache=None)
        first = score_file(run_config(path, svc.url, tmp_path, **kw))
        second = score_file(run_config(path, svc.url, tmp_path, output=tmp_path / "second.jsonl", **kw))
        third = score_file(run_config(path, svc.url, tmp_path, output=tmp_path / "third.jsonl",
                                      **(kw | {"threads": 2})))
    assert not first.record["engine_info"]["reused_workers"]
    assert second.record["engine_info"]["reused_workers"]
    assert second.stats.startup_seconds < first.stats.startup_seconds
    assert not third.record["engine_info"]["reused_workers"]  # another shape: new workers
    assert read_rows(tmp_path / "out.jsonl") == read_rows(tmp_path / "second.jsonl")
    assert len(read_rows(tmp_path / "third.jsonl")) == 60
    assert len(_workers_alive()) == 2  # the third run's workers, kept; the first shape's were ended
    ray_engine.release()
    import ray

    assert not ray.is_initialized()


def test_outside_a_kernel_nothing_is_kept(make_input, tmp_path):
    path = make_input([f"not kept {i}" for i in range(20)])
    with SimulatedService(ServerConfig(time_scale=0.005)) as svc:
        score_file(run_config(path, svc.url, tmp_path, engine="ray", workers=2, threads=2, cache=None))
    import ray

    assert not ray.is_initialized() and ray_reuse.State.kept is None


def test_the_sweep_cluster_is_joined_and_stopped(make_input, tmp_path):
    path = make_input([f"sweep cluster {i}" for i in range(40)])
    with SimulatedService(ServerConfig(time_scale=0.005)) as svc:
        with LocalCluster() as cluster:
            address, temp = cluster.address, cluster.temp_dir
            env = cluster.env()
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                for i in range(2):
                    result = score_file(run_config(path, svc.url, tmp_path, engine="ray", workers=2, threads=2,
                                                   cache=None, ray_address=address))
                    assert result.record["engine_info"]["cluster"] == "joined"
                    assert result.stats.counts["ok"] == 40
            finally:
                for k, v in old.items():
                    os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            host, port = address.split(":")
            listening = [c.laddr.ip for c in psutil.net_connections(kind="tcp")
                         if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)]
            assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening)
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if temp in " ".join(p.info["cmdline"] or [])]
    assert left == [] and not os.path.exists(temp)


def test_dashboard_help_says_how_to_get_in_and_how_long_it_lasts(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/somewhere/token")
    text = dashboard_help("127.0.0.1:8265", kept=False)
    assert "http://127.0.0.1:8265" in text and "ray get-auth-token" in text and "/somewhere/token" in text
    assert "ends with this run" in text
    assert "until the sweep ends" in dashboard_help("127.0.0.1:8265", kept=False, sweep=True)
    assert "release()" in dashboard_help("127.0.0.1:8265", kept=True)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret-value")
    assert "secret-value" not in dashboard_help("127.0.0.1:8265", kept=False)  # never the token itself


@pytest.mark.slow
def test_a_sweep_runs_all_its_ray_points_on_one_cluster_and_stops_it(tmp_path, monkeypatch):
    from scoring_lib.records import read_records
    from scoring_lib.sweep import parse_grid, run_sweep

    from conftest import REPO

    grid = parse_grid({"name": "onecluster", "input": str(REPO / "data/sample.txt"), "lines": 20,
                       "service": {"latency": 4.15, "capacity": 200, "time_scale": 0.005},
                       "points": [{"engine": "ray", "workers": [1, 2], "threads": 2, "max_concurrent_tasks": 4}]})
    started = []  # this sweep's cluster only: another suite's `ray-sweep-` processes may run beside it
    real_start = LocalCluster.start
    monkeypatch.setattr(LocalCluster, "start", lambda self: started.append(real_start(self).temp_dir) or self)
    summary = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    assert summary.exit_code == 0, summary.failed
    assert summary.ray_startup_seconds and "one Ray cluster for all Ray points" in summary.line()
    records = read_records(tmp_path / "runs")
    assert len(records) == 2 and all(r["engine_info"]["cluster"] == "joined" for r in records)
    assert "RAY_ADDRESS" not in os.environ
    [temp] = started
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if temp in " ".join(p.info["cmdline"] or [])]
    assert left == [] and not os.path.exists(temp)


def test_ray_dashboard_prints_how_to_get_in(make_input, tmp_path):
    from conftest import cli

    make_input([f"dash {i}" for i in range(10)], "in.txt")
    proc = cli("score", "in.txt", "--engine", "ray", "--workers", "1", "--threads", "2", "--ray-dashboard",
               "--server-time-scale", "0.005", "--no-cache", "--no-record", cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("Ray dashboard:"))
    assert "http://127.0.0.1:" in line and "ends with this run" in line
    assert "ray get-auth-token" in line or "no token needed" in line


def test_scoring_starts_before_every_worker_is_up_and_the_late_ones_join(monkeypatch, make_input, tmp_path):
    # 8 workers boot a few at a time on 2 cores: with no wait beyond the first, scoring starts at once,
    # the others take chunks as they come up, and every line still gets exactly one row.
    monkeypatch.setattr(ray_engine, "ALL_READY_WAIT", 0.0)
    lines = 400
    path = make_input([f"early start {i}" for i in range(lines)])
    with SimulatedService(ServerConfig(latency=0.1, capacity=0)) as svc:
        result = score_file(run_config(path, svc.url, tmp_path, engine="ray", workers=8, threads=2,
                                       max_concurrent_tasks=16, chunk_size=2, cache=None))
    info = result.record["engine_info"]
    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["line"] for r in rows] == list(range(1, lines + 1)) and all(r["status"] == "ok" for r in rows)
    assert info["all_ready_seconds"] is not None, "the late workers never joined (8 x 2 slots, 400 lines)"
    assert info["startup_seconds"] < info["all_ready_seconds"]
    assert info["workers_ready"] == 8 and len(info["slots_per_worker"]) == 8


def test_a_dead_service_stops_a_ray_run_at_the_first_contact(make_input, tmp_path):
    from scoring_lib.errors import ServiceUnusable

    path = make_input([f"nobody home {i}" for i in range(100)])
    with SimulatedService(ServerConfig(latency=0.05, time_scale=1, require_api_key="right")) as svc:
        with pytest.raises(ServiceUnusable, match="HTTP 401 on the first request"):
            score_file(run_config(path, svc.url, tmp_path, engine="ray", workers=4, threads=4, cache=None))
        assert svc.stats().requests == 1  # the driver's one request; no worker sent anything
    assert not (tmp_path / "out.jsonl").exists()


def test_a_live_service_lets_ray_workers_send_at_once(monkeypatch, make_input, tmp_path):
    # 16 workers x 2 slots, one wave of 32 lines at 1 s. Each worker's probe share is one request, and with
    # a long grace a probing worker sends its second only after its first succeeded (a second wave). The
    # driver's first contact succeeded while the workers booted, so every worker sends both at once.
    import dataclasses

    real = ray_engine.settings_for
    monkeypatch.setattr(ray_engine, "settings_for", lambda config: dataclasses.replace(real(config), grace=5.0))
    path = make_input([f"at once {i}" for i in range(32)])
    with SimulatedService(ServerConfig(latency=1.0, capacity=0, time_scale=1)) as svc:
        result = score_file(run_config(path, svc.url, tmp_path, engine="ray", workers=16, threads=2,
                                       max_concurrent_tasks=32, chunk_size=1, cache=None))
        stats = svc.stats()
    assert result.exit_code == 0 and stats.requests == 32 + 1
    assert stats.peak_in_flight >= 24
    assert result.stats.scoring_seconds < 1.8  # one wave (1 s) and dispatch; probing would take two (2 s)


def test_a_ray_worker_imports_only_what_scoring_needs(make_input, tmp_path):
    # A worker is a Ray process plus this package's client: no data-frame, plotting, notebook or report
    # stack, and not jsonschema's optional format checkers (CPU in every process; ray_boot keeps them out).
    from scoring_lib.engines.ray_engine import RayEngine

    path = make_input(["unused"])
    modules_of = eval("lambda self: sorted(__import__('sys').modules)", {})  # by value: not this test module
    with SimulatedService(ServerConfig(time_scale=0.005)) as svc:
        config = run_config(path, svc.url, tmp_path, engine="ray", workers=1, threads=2, cache=None)
        with RayEngine(config) as engine:
            loaded = set(engine.ray.get(engine.slots[0].handle.__ray_call__.remote(modules_of), timeout=120))
    assert "scoring_lib.engines.ray_worker" in loaded
    unwanted = {"pandas", "matplotlib", "papermill", "IPython", "lark", "arrow", "scoring_lib.report",
                "scoring_lib.plots", "scoring_lib.sweep", "scoring_lib.bench", *ray_boot.KEPT_OUT}
    assert unwanted & loaded == set()


def test_rays_own_messages_stay_out_of_the_terminal_and_start_up_is_split(make_input, tmp_path):
    # 24 workers on this machine's few cores: the raylet says "WARNING: N PYTHON worker processes have been
    # started"; it goes to a log the record names, not to the terminal (unless --ray-verbose).
    from conftest import cli

    make_input([f"quiet {i}" for i in range(48)], "in.txt")
    proc = cli("score", "in.txt", "--engine", "ray", "--workers", "24", "--threads", "1", "--no-cache",
               "--server-time-scale", "0.005", "--records-dir", "runs", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    assert "WARNING" not in said and "(raylet)" not in said, said
    import json

    [record] = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("*.json")]
    info = record["engine_info"]
    assert info["ray_messages_log"] and "scoring-driver-" in info["ray_messages_log"]
    assert info["ray_init_seconds"] > 0 and info["workers_seconds"] > 0 and info["first_request_seconds"] is not None
    assert info["ray_init_seconds"] + info["workers_seconds"] <= record["startup_seconds"]
    assert info["worker_boot"]["workers"] == 24
    boot = info["worker_boot"]
    assert 0 < boot["cpu_to_init_median"] <= boot["cpu_to_ready_median"] <= boot["cpu_to_ready_total"]
    warm = info["warm_connections"]  # each ready worker opened its connection before its first request
    assert 1 <= warm["workers"] <= 24 and 1 <= warm["connections"] <= 24


def test_rays_messages_to_the_driver_go_to_the_log(capsys):
    from scoring_lib.engines.ray_cluster import import_ray, route_messages

    ray = import_ray()
    path = route_messages(ray, verbose=False)
    try:
        ray._private.worker.print_to_stdstream({"lines": ["WARNING: 32 PYTHON worker processes"], "pid": "raylet",
                                                "is_err": False}, ignore_prefix=False)
        assert capsys.readouterr().out == ""
        with open(path, encoding="utf-8") as log:
            assert "(raylet) WARNING: 32 PYTHON worker processes" in log.read()
        assert route_messages(ray, verbose=True) is None
        ray._private.worker.print_to_stdstream({"lines": ["shown"], "pid": "raylet", "is_err": False},
                                                ignore_prefix=False)
        assert "shown" in capsys.readouterr().out
    finally:
        os.remove(path)


def test_the_driver_imports_ray_without_rfc3987_syntax_and_can_still_import_it_later():
    import subprocess
    import sys

    code = ("import sys; from scoring_lib.engines.ray_cluster import import_ray; import_ray(); "
            "from scoring_lib.engines.ray_boot import KEPT_OUT; "
            "print('jsonschema' in sys.modules, any(m in sys.modules for m in KEPT_OUT)); "
            "import rfc3987_syntax; print('rfc3987_syntax' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False", "True"]


def test_a_local_ray_s_monitor_is_gone_before_ray_shutdown_waits_on_it(make_input, tmp_path, monkeypatch):
    # Told to stop after its GCS, the autoscaler monitor outlasts the second ray.shutdown() gives it: killed first.
    import ray

    from scoring_lib.engines.ray_engine import RayEngine

    path = make_input(["unused"])
    with SimulatedService(ServerConfig(time_scale=0.005)) as svc:
        config = run_config(path, svc.url, tmp_path, engine="ray", workers=1, threads=1, cache=None)
        with RayEngine(config):
            monitor = ray._private.worker._global_node.all_processes["monitor"][0].process
            seen = []
            real_shutdown = ray.shutdown
            monkeypatch.setattr(ray, "shutdown", lambda **kw: seen.append(monitor.wait(timeout=5)) or real_shutdown(**kw))
    assert seen and seen[0] is not None and not ray.is_initialized()
