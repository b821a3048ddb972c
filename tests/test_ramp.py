"""probe --ramp against loopback services whose capacity and rate limit the probe is not told:
one that queues above its capacity, one that sheds load (503), one with a rate limit (429 +
Retry-After); and services that make more load pointless."""

import json
import math
import os

import pytest

from scoring_lib.config import ClientConfig, ServerConfig
from scoring_lib.ramp import ProbeError, predict_seconds, ramp, recommend
from scoring_lib.server import ServiceProcess, SimulatedService
from scoring_lib.service import load_profile

from conftest import cli

LATENCY = 0.2


def _ramp(config: ServerConfig, **kw):
    with ServiceProcess(config) as svc:
        return ramp(ClientConfig(url=svc.url, timeout=30), **kw)


@pytest.mark.slow
@pytest.mark.parametrize("shed", [False, True], ids=["queue", "shed-503"])
def test_ramp_recovers_capacity(shed):
    result = _ramp(ServerConfig(latency=LATENCY, capacity=40, shed=shed))
    assert result.latency == pytest.approx(LATENCY, rel=0.15)
    assert result.capacity == pytest.approx(40, rel=0.15), "\n".join(result.lines())
    assert result.rate_limit is None
    assert result.probing_seconds < 60
    assert result.recommended.max_concurrent_tasks == pytest.approx(40, rel=0.15)
    saturated = [s for s in result.steps if s.saturated]
    assert saturated and (all(s.shed > 0 for s in saturated) if shed else all(s.shed == 0 for s in saturated))


@pytest.mark.slow
def test_ramp_recovers_rate_limit():
    result = _ramp(ServerConfig(latency=LATENCY, capacity=0, rate_limit=50))
    assert result.rate_limit == pytest.approx(50, rel=0.15), "\n".join(result.lines())
    assert result.capacity is None  # the rate limit bound first: no capacity is made up
    assert result.probing_seconds < 60
    assert any(s.retry_after is not None for s in result.steps if s.rate_limited)
    # C = rate x latency (+10%) fills the rate limit without asking for much more
    assert 10 <= result.recommended.max_concurrent_tasks <= 13
    assert result.recommended.rate_limit == pytest.approx(50, rel=0.15)


@pytest.mark.slow
def test_ramp_never_exceeds_the_ceiling():
    with ServiceProcess(ServerConfig(latency=LATENCY, capacity=0)) as svc:
        result = ramp(ClientConfig(url=svc.url), ceiling=24)
        peak = svc.stats().peak_in_flight
    assert max(s.concurrency for s in result.steps) == 24 and peak <= 24
    assert result.capacity is None and "reached the ceiling" in result.stopped
    assert result.recommended.max_concurrent_tasks == 24


@pytest.mark.slow
def test_embedded_simulator_capacity_is_found_without_being_told(tmp_path):
    """The CLI's embedded service is built with capacity 200 (at time scale 0.25: 1.04 s per request)."""
    out = cli("probe", "--ramp", "--json", "--server-time-scale", "0.25", "--save-profile",
              tmp_path / "emb.yaml", "--input", "data/sample.txt", "--figure", tmp_path / "ramp.png", timeout=400)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["capacity"] == pytest.approx(200, rel=0.15), out.stderr
    assert data["latency"] == pytest.approx(4.15 * 0.25, rel=0.15)
    assert set(data["recommended"]) >= {"max_concurrent_tasks", "connector_limit", "engine"}
    # 2,000 lines at about 200 at once: ceil(2000 / C) x latency
    assert data["predicted_seconds"] == pytest.approx(10 * 4.15 * 0.25, rel=0.25)
    assert (tmp_path / "ramp.png").stat().st_size > 10_000
    prof = load_profile(tmp_path / "emb.yaml")
    assert prof.capacity.source == "probed" and prof.capacity.value == data["capacity"]
    assert prof.rate_limit.source == "unknown"


def test_refused_connection_stops_at_once():
    with SimulatedService(ServerConfig(latency=0)) as svc:
        url = svc.url
    out = cli("probe", "--ramp", "--url", url, timeout=60)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "cannot probe" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("server,client", [
    (dict(require_api_key="sekret"), {}),  # 401
    (dict(score_field="value"), {}),  # wrong shape: 200 without the score field
    ({}, dict(url_path="/nope")),  # 404
])
def test_errors_no_load_will_fix_stop_the_ramp(server, client):
    with SimulatedService(ServerConfig(latency=0.01, **server)) as svc:
        url = svc.base_url + client.get("url_path", "/score")
        with pytest.raises(ProbeError) as err:
            ramp(ClientConfig(url=url))
    assert "\n" not in str(err.value)
    if "score_field" in server:
        assert "wrong shape" in str(err.value) and "'score'" in str(err.value)


def test_a_ramp_that_meets_only_errors_reports_them_and_no_capacity():
    with SimulatedService(ServerConfig(latency=0.01, error_rate=1.0)) as svc:
        result = ramp(ClientConfig(url=svc.url, backoff_base=0.01), step_seconds=0.5)
    assert result.capacity is None and result.latency is None and result.recommended is None
    assert "no request succeeded" in result.stopped and "503" in result.stopped


def test_recommendation_and_prediction():
    rec = recommend(latency=4.15, capacity=200, rate_limit=None, ceiling=1024)
    assert (rec.max_concurrent_tasks, rec.engine) == (200, "asyncio")
    assert predict_seconds(2000, 4.15, 200, 200, None) == pytest.approx(41.5)
    assert predict_seconds(2000, 4.15, 100, 200, None) == pytest.approx(83.0)
    assert predict_seconds(2000, 0.2, 11, None, 50) == pytest.approx(40.0)  # N / rate binds
    assert recommend(0.2, None, None, 64).max_concurrent_tasks == 64


# A service that spends CPU on every request (one event loop: at most one core, about 1/BURN requests/s),
# in its own process on loopback, as the simulator does when its time scale leaves it short of CPU.
CPU_SERVICE = r"""
import asyncio, sys, time
BURN = float(sys.argv[1])

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            end = time.process_time() + BURN
            while time.process_time() < end:
                pass
            body = b'{"score": 0.5}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # ends with the test (its pipe closes)

asyncio.run(main())
"""


@pytest.fixture
def cpu_bound_service():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", CPU_SERVICE, "0.02"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    yield proc, f"http://127.0.0.1:{port}/score"
    proc.stdin.close()
    proc.wait(10)


def test_a_cpu_bound_service_on_this_machine_is_named_in_the_warning(cpu_bound_service):
    """The knee of a service short of CPU is not its capacity: the ramp finds the listening process from
    the loopback url, measures its CPU per step, and says the measurement is CPU-bound, naming the
    service's process (this process, the client, stays far below a core at some 50 requests/s)."""
    proc, url = cpu_bound_service
    result = ramp(ClientConfig(url=url, timeout=30), ceiling=16, step_seconds=1.0)
    assert result.service_pid == proc.pid
    saturated = [s for s in result.steps if s.saturated]
    assert saturated and all(s.service_cpu is not None for s in result.steps), "\n".join(result.lines())
    # The service burns the CPU (all of a core, or what a busy machine leaves it); this process does not.
    # Compared with each other, not with a fixed share: another suite on the machine takes its share of both.
    assert max(s.service_cpu for s in saturated) > 2 * max(s.client_cpu for s in saturated)
    warning = result.client_bound()
    assert warning and f"the service's process (pid {proc.pid}, on this machine) used" in warning
    text = "\n".join(result.lines())
    assert "(CPU-bound: see the warning)" in text and "warning: CPU-bound at the knee" in text
    assert result.to_dict()["warning"] == warning and "CPU-bound" in result.profile.notes


def test_probe_ramp_watches_its_embedded_simulators_cpu(tmp_path):
    """The CLI's simulator is a child process whose pid the ramp is given: every step has its CPU."""
    out = cli("probe", "--ramp", "--json", "--server-time-scale", "0.01", "--max-concurrent-tasks", "2",
              "--step-seconds", "0.3", timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert isinstance(data["service_pid"], int) and data["service_pid"] != os.getpid()
    assert all(s["service_cpu"] is not None and s["machine_cpu"] is not None for s in data["steps"])


def test_a_remote_or_in_process_service_has_no_process_to_watch():
    from scoring_lib.ramp import service_process

    assert service_process("http://10.1.2.3:8000/score") is None  # not looked up, never contacted
    with SimulatedService(ServerConfig(latency=0)) as svc:  # served by this very process
        assert service_process(svc.url) is None


def test_recommendation_rounds_up_so_no_wave_is_added():
    """A probed capacity just under the service's whole capacity (199.4 for 200): C = 200, so 2,000 lines
    take the 10 waves capacity 200 allows (rounded to nearest, C = 199 took 11); the prediction counts
    the waves the recommended run makes."""
    rec = recommend(latency=4.15, capacity=199.4, rate_limit=None, ceiling=1024)
    assert rec.max_concurrent_tasks == rec.connector_limit == 200
    assert predict_seconds(2000, 4.15, rec.max_concurrent_tasks, 199.4, None) == pytest.approx(41.5)
    for capacity in (40.2, 99.5, 150.01, 199.4, 200.0):
        c = recommend(1.0, capacity, None, 4096).max_concurrent_tasks
        for n in (100, 1000, 2000, 12345):  # never more waves than the estimated capacity allows
            assert math.ceil(n / c) <= math.ceil(n / capacity)
    assert recommend(0.2, None, 50.0, 1024).max_concurrent_tasks == 11  # 50/s x 0.2 s x 1.1, float noise aside


@pytest.mark.slow
def test_ramp_reads_capacity_and_latency_with_the_mean_when_latency_is_skewed():
    """Lognormal service times (the explore notebook's service): their median is 0.88 x their mean, and
    Little's law needs the mean; read with the median, capacity 40 came out 30-34 and the latency
    0.15-0.17 s (three seeds), and the notebook's capacity 200 came out 148-161."""
    result = _ramp(ServerConfig(latency=LATENCY, capacity=40, latency_dist="lognormal"))
    assert result.latency == pytest.approx(LATENCY, rel=0.10), "\n".join(result.lines())
    assert result.capacity == pytest.approx(40, rel=0.12), "\n".join(result.lines())
    assert result.recommended.max_concurrent_tasks >= result.capacity


# -- issue 16: the proxy queue, the kind of limit; issue 17 class 9: the advice follows the data ------------
def _step(c, *, ok=100, sent=100, rate_limited=0, shed=0, occupancy=0.0, latency=0.3, saturated=False):
    from scoring_lib.ramp import Step

    return Step(concurrency=c, sent=sent, ok=ok, rate_limited=rate_limited, shed=shed, occupancy=occupancy,
                steady_latency=latency, latency={"p50": latency, "mean": latency}, saturated=saturated,
                throughput=ok / 2, late_ok_rate=ok / 2)


def test_a_proxy_queue_that_sheds_reads_as_its_replicas_not_replicas_plus_queue():
    from scoring_lib.ramp import limit_kind, served_at_once

    # 16 served, 16 queued (latency doubled), the rest refused with 503 at once
    shedding = _step(64, sent=200, ok=100, shed=100, occupancy=32, latency=0.6, saturated=True)
    assert served_at_once(shedding, 0.3) == pytest.approx(16)
    assert limit_kind([_step(16), shedding], 0.3, 0.25) == "queueing, then shedding"
    assert limit_kind([_step(16), _step(32, occupancy=32, latency=0.6, saturated=True)], 0.3, 0.25) == "queueing"
    assert limit_kind([_step(16), _step(32, shed=50, sent=150, occupancy=16, saturated=True)], 0.3, 0.25) == "shedding"
    assert limit_kind([_step(16), _step(32, rate_limited=50, sent=150, saturated=True)], 0.3, 0.25) == "rate"
    assert limit_kind([_step(1), _step(2)], 0.3, 0.25) is None


def test_no_success_at_a_step_means_no_recommendation():
    from scoring_lib.ramp import _conclude

    steps = [_step(1), _step(2, ok=0, sent=40, rate_limited=40)]
    broken = _conclude("http://x/score", steps, 0.3, 1024, 5.0, "no request succeeded at 2 in flight", 0.25, True)
    assert broken.recommended is None
    assert any(line.startswith("recommended: none") for line in broken.lines())
    assert _conclude("http://x/score", steps[:1], 0.3, 1024, 5.0, "done", 0.25).recommended is not None


def test_429s_seen_never_read_as_no_rate_limit():
    from scoring_lib.ramp import _conclude

    steps = [_step(1), _step(2, ok=50, sent=2535, rate_limited=2485)]
    result = _conclude("http://x/score", steps, 0.3, 1024, 5.0, "done", 0.25)
    rate = next(line for line in result.lines() if line.startswith("rate limit:"))
    assert "none seen" not in rate and "2485 x 429" in rate


@pytest.mark.slow
def test_the_ramp_finds_a_proxy_queues_replicas_and_says_what_kind_of_limit(tmp_path):
    """A Ray Serve-like proxy: 16 served at once, 16 more queued, then 503: capacity within 15% of 16."""
    with ServiceProcess(ServerConfig(latency=0.3, capacity=16, queue_limit=16)) as svc:
        result = ramp(ClientConfig(url=svc.url), step_seconds=1.5)
    assert result.capacity is not None and abs(result.capacity - 16) <= 0.15 * 16, result.lines()
    assert result.limit_kind == "queueing, then shedding", result.lines()


def test_a_ramp_that_measured_nothing_saves_no_profile(tmp_path):
    """A service whose every attempt fails (flaky beyond the client's 5 retries) stops the ramp at 1 in
    flight: rc 1, and no profile of unknown figures written as if the probe had worked."""
    with SimulatedService(ServerConfig(latency=0.01, flaky=6)) as svc:
        out = cli("probe", "--ramp", "--url", svc.url, "--save-profile", tmp_path / "flaky.yaml",
                  "--backoff-base", "0.01", timeout=120)
    assert out.returncode == 1, out.stderr
    assert not (tmp_path / "flaky.yaml").exists()
    assert "not saved" in out.stdout


def test_a_flaky_but_alive_service_is_said_too_unreliable_to_ramp_with_its_latency_and_no_capacity():
    """Each text's first 2 attempts fail (503, 429, reset, non-JSON 200, 500), then it is scored. The ramp
    retries a text as the client does, so it sees the service alive (its latency measured); failures at
    1 in flight are no limit's, so it reads no capacity from them and says why in one line."""
    with SimulatedService(ServerConfig(latency=0.05, flaky=2)) as svc:
        result = ramp(ClientConfig(url=svc.url, backoff_base=0.01), step_seconds=1.0)
    assert result.stopped.startswith("too unreliable to ramp") and "\n" not in result.stopped, result.lines()
    assert "with 1 in flight" in result.stopped and "other errors" in result.stopped
    assert result.latency == pytest.approx(0.05, rel=0.5)
    assert result.capacity is None and result.rate_limit is None and result.recommended is None
