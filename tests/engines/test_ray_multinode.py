"""The Ray engine on a multi-node cluster simulated on this machine (ray.cluster_utils.Cluster: one
head and worker nodes, each its own raylet, all on 127.0.0.1 with their own temp dir and ports)."""

import shutil
import threading
import time

import psutil
import pytest

pytest.importorskip("ray")

from scoring_lib import ServerConfig, SimulatedService, score_file
from scoring_lib.engines import ray_boot, ray_engine
from scoring_lib.engines.ray_cluster import free_ports
from scoring_lib.engines.ray_engine import import_ray

from conftest import read_rows, run_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path_factory, monkeypatch):
    """Head (no CPUs) + two worker nodes; the driver (this test) connected to it."""
    ray = import_ray()
    from ray import cluster_utils

    # Cluster would record its address in /tmp/ray for `address="auto"`: other people's Ray runs on this
    # machine must never find it, so that convenience is switched off.
    monkeypatch.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
    temp = tempfile_dir()
    common = dict(node_ip_address="127.0.0.1", include_dashboard=False, temp_dir=temp)
    # Ray's defaults are fixed ports (8265 for the API server it starts even without a dashboard, 52365 for
    # the head's agent): a second suite on the machine would fail to bind them. Free ones instead.
    dashboard, agent, metrics = free_ports(3)
    head = common | {"num_cpus": 0, "dashboard_port": dashboard, "dashboard_agent_listen_port": agent,
                     "metrics_export_port": metrics}
    with ray_boot.in_environ():  # the nodes' processes boot lean, as the engine's own Ray's do
        c = cluster_utils.Cluster(initialize_head=True, head_node_args=head)
        nodes = [c.add_node(num_cpus=1, **common) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    _wait_until_the_cluster_sees_every_node(ray, 3, cpus=2)
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_until_the_cluster_sees_every_node(ray, nodes: int, cpus: float, timeout: float = 120.0) -> None:
    """Nodes are registered before their resources reach the cluster's view; SPREAD places actors from that
    view, so on a loaded machine every worker could land on the one node seen so far. Scoring starts once
    every node and its CPUs are seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) >= nodes and ray.cluster_resources().get("CPU", 0) >= cpus:
            return
        time.sleep(0.2)
    raise AssertionError(f"the cluster did not show {nodes} nodes and {cpus:g} CPUs within {timeout:g} s")


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="ray-mn-", dir="/tmp")  # short: Ray's socket paths have a length limit


def _a_node_with_workers(nodes):
    """A worker node that hosts at least one scoring worker (its raylet's child process)."""
    for node in nodes:
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        if any("ScoringWorker" in " ".join(child.cmdline()) for child in raylet.children(recursive=True)):
            return node
    raise AssertionError("no worker node hosts a scoring worker")


def _listeners_are_loopback(ray_pids: set[int]) -> None:
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    assert listening
    assert all(c.laddr.ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for c in listening), listening


def _ray_pids() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True)}


def test_workers_spread_over_nodes_and_rows_match(cluster, make_input, tmp_path, monkeypatch):
    # Scoring waits for every worker (on a loaded machine some come up more than a minute after the first):
    # `nodes` counts the nodes of the workers that are up.
    monkeypatch.setattr(ray_engine, "ALL_READY_WAIT", ray_engine.READY_TIMEOUT)
    c, nodes = cluster
    texts = [f"spread {i % 90}" for i in range(300)]
    path = make_input(texts)
    with SimulatedService(ServerConfig(latency=0.05, capacity=0)) as svc:
        result = score_file(run_config(path, svc.url, tmp_path, engine="ray", workers=4, threads=4,
                                       max_concurrent_tasks=16, cache=None))
        assert svc.stats().requests == 90 + 1  # + the driver's first contact
    info = result.record["engine_info"]
    assert info["nodes"] >= 2  # SPREAD: 4 workers over the 3 nodes, not all on the first
    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["line"] for r in rows] == list(range(1, 301)) and all(r["status"] == "ok" for r in rows)
    _listeners_are_loopback(_ray_pids())


def test_a_node_removed_mid_run_has_its_chunks_rescored(cluster, make_input, tmp_path):
    c, nodes = cluster
    lines = 400
    path = make_input([f"node loss {i}" for i in range(lines)])
    with SimulatedService(ServerConfig(latency=0.1, capacity=0)) as svc:
        box = {}
        run = threading.Thread(target=lambda: box.setdefault("r", score_file(run_config(
            path, svc.url, tmp_path, engine="ray", workers=4, threads=4, max_concurrent_tasks=16, chunk_size=4,
            cache=None))))
        run.start()
        deadline = time.monotonic() + 120
        while svc.stats().ok < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert svc.stats().ok >= 60, "the run did not start"
        c.remove_node(_a_node_with_workers(nodes), allow_graceful=False)  # a machine gone, chunks in flight on it
        run.join(240)
        assert not run.is_alive()
        requests = svc.stats().requests
    result = box["r"]
    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["line"] for r in rows] == list(range(1, lines + 1))  # every line exactly one row, in order
    assert all(r["status"] == "ok" for r in rows)
    assert result.record["engine_info"]["rescored_chunks"] >= 1
    assert requests >= lines  # the lost node's chunks were sent again
