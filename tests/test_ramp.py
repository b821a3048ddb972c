"""probe --ramp against loopback services whose capacity and rate limit the probe is not told:
one that queues above its capacity, one that sheds load (503), one with a rate limit (429 +
Retry-After); and services that make more load pointless."""

import json

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
