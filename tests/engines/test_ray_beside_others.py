"""Our local Ray clusters beside other Rays on the same machine: every listener on a port of its own, and
a failed Ray point keeps its cluster's logs (the temp dir they are in goes with the cluster)."""

import shutil
import subprocess
import sys
import threading

import pytest

pytest.importorskip("ray")

from scoring_lib.engines import ray_cluster
from scoring_lib.engines.ray_cluster import LocalCluster, save_ray_logs

from conftest import cli

# Every listener `ray start --head` opens; left to Ray, some take fixed ports (the dashboard agent's 52365),
# so a second Ray on the machine collides with them.
PORT_OPTIONS = ("--port", "--ray-client-server-port", "--dashboard-agent-listen-port", "--metrics-export-port",
                "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--node-manager-port",
                "--object-manager-port")


def test_a_local_cluster_names_a_distinct_free_port_for_every_listener(monkeypatch, tmp_path):
    asked = []

    def fake_ray(self, *args, timeout=120):
        asked.append(args)
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(LocalCluster, "_ray", fake_ray)
    monkeypatch.setattr(ray_cluster, "reap_orphans", lambda root=None: [])  # other clusters are left alone
    monkeypatch.setattr(ray_cluster, "stop_cluster", lambda temp_dir, address=None: shutil.rmtree(temp_dir))
    cluster = LocalCluster(watchdog=False).start()
    try:
        (args,) = asked
        ports = {a.split("=", 1)[0]: int(a.split("=", 1)[1]) for a in args if a.split("=", 1)[0] in PORT_OPTIONS}
        assert set(ports) == set(PORT_OPTIONS)
        assert len(set(ports.values())) == len(ports) and 0 not in ports.values()
        assert f"--temp-dir={cluster.temp_dir}" in args
        assert {"--min-worker-port=0", "--max-worker-port=0"} <= set(args)  # not `ray start`'s shared range
    finally:
        cluster.stop()


def test_saved_logs_are_the_tails_of_the_session_logs(tmp_path):
    logs = tmp_path / "ray-sweep-x" / "session_2026-12-02_06-00-00_000000_1" / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.out").write_text("".join(f"line {i}\n" for i in range(500)))
    (logs / "worker-abc-01000000-42.err").write_text("Traceback: boom\n")
    (logs / "events").mkdir()
    (tmp_path / "ray-sweep-x" / "session_latest").symlink_to(logs.parent)
    kept = save_ray_logs(tmp_path / "ray-sweep-x", tmp_path / "kept", lines=10)
    assert kept == tmp_path / "kept"
    files = sorted(p.name for p in kept.iterdir())
    assert len(files) == 2  # session_latest is the same session: not copied twice
    raylet = next(p for p in kept.iterdir() if p.name.endswith("raylet.out")).read_text().splitlines()
    assert raylet == [f"line {i}" for i in range(490, 500)]
    assert save_ray_logs(tmp_path / "nothing", tmp_path / "none") is None
    assert not (tmp_path / "none").exists()


def test_a_failed_ray_point_keeps_its_cluster_logs_and_says_where(monkeypatch, tmp_path):
    from scoring_lib import sweep

    class Cluster:
        def save_logs(self, dest):
            dest.mkdir(parents=True)
            (dest / "raylet.out").write_text("why\n")
            return dest

    def failing(*a, **k):
        raise RuntimeError("ClusterConnectError: no Ray worker was ready within 120 s")

    monkeypatch.setattr(sweep, "execute_notebook", failing)
    saved = []
    monkeypatch.setattr("scoring_lib.records.save_record", lambda record, records: saved.append(record))
    grid = sweep.load_grid(_tiny_ray_grid(tmp_path))
    summary = sweep.SweepSummary(grid, tmp_path / "runs")
    summary.ray_cluster = Cluster()
    point = grid.points[0]
    sweep._run_repeat(summary, point, 0, "http://127.0.0.1:1/score", tmp_path / "nb")
    (pid, failure), = summary.failed
    where = tmp_path / "runs" / f"{point.id}-r0-ray-logs"
    assert (where / "raylet.out").read_text() == "why\n"
    assert f"(Ray logs: {where})" in failure
    assert saved and str(where) in saved[0].failure


def _tiny_ray_grid(tmp_path):
    (tmp_path / "in.txt").write_text("a\nb\n")
    path = tmp_path / "g.yaml"
    path.write_text(f"name: g\ninput: {tmp_path / 'in.txt'}\nrepeats: 1\nwarmup: 0\ncalibration_lines: 0\n"
                    "points:\n  - engine: ray\n    workers: 1\n    threads: 1\n")
    return path


@pytest.mark.ray
@pytest.mark.slow
def test_two_of_our_clusters_and_a_plain_ray_start_at_once_and_all_score_every_line(make_input, tmp_path):
    """What broke `make run`: other Rays started on the machine within seconds of the sweep's."""
    make_input([f"beside {i}" for i in range(40)], "in.txt")
    plain = subprocess.Popen([sys.executable, "-c", (
        "import ray; ray.init(address='local', num_cpus=1, include_dashboard=False); "
        "print(sum(ray.get([ray.remote(lambda x: x).remote(i) for i in range(20)]))); ray.shutdown()")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clusters, errors = [None, None], []

    def start(i):
        try:
            clusters[i] = LocalCluster(num_cpus=2).start()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert len({c.address for c in clusters}) == 2
        procs = [subprocess.Popen([sys.executable, "-m", "scoring_lib", "score", "in.txt", "--engine", "ray",
                                   "--workers", "2", "--threads", "2", "--ray-address", c.address,
                                   "--server-time-scale", "0.01", "--no-cache", "--output", f"out{i}.jsonl"],
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_env())
                 for i, c in enumerate(clusters)]
        for proc in procs:
            out, err = proc.communicate(timeout=400)
            assert proc.returncode == 0, err
            assert "40 lines: 40 ok" in out
        out, err = plain.communicate(timeout=400)
        assert plain.returncode == 0 and out.split() == ["190"], err
    finally:
        for c in clusters:
            if c is not None:
                c.stop()
        if plain.poll() is None:
            plain.kill()


def _env():
    import os
    return dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")

