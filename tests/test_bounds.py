"""Honest bounds: from the profile's unloaded latency and capacity, never from a run's own latency.

The trap this guards against: a service of 0.5 s per request serving 50 at once, run at C=100
without a known capacity. The service queues half the requests, the run's median latency doubles,
and a bound made from that median doubles with it: efficiency reads ~1 while the run took twice
what it should. Here such a run gets either no bound (nothing known) or the pool/C bound from
the probed latency alone, labelled so, and its efficiency shows the queueing."""

import math

import pytest

from scoring_lib.bounds import honest_bound
from scoring_lib.pipeline import score_file
from scoring_lib.records import tidy_row
from scoring_lib.server import ServiceProcess, service_info
from scoring_lib.config import ServerConfig
from scoring_lib.service import Known, ServiceProfile

from conftest import run_config


def test_unknown_latency_draws_no_bound():
    assert honest_bound(1000, math.inf, 100, None, None) == (None, "unknown")


def test_known_latency_unknown_capacity_is_the_pool_C_bound_labelled_so():
    seconds, source = honest_bound(1000, 100, 500, 0.5, None, latency_source="probed")
    assert (seconds, source) == (10 * 0.5, "pool/C only")


def test_sources_take_the_weakest_figure():
    assert honest_bound(2000, math.inf, 1000, 4.15, 200, None, "configured", "configured")[1] == "configured"
    assert honest_bound(2000, math.inf, 1000, 4.15, 200, None, "configured", "probed")[1] == "probed"
    seconds, _ = honest_bound(2000, math.inf, 1000, 0.2, 200, 50, "probed", "probed", "probed")
    assert seconds == pytest.approx(40)  # N / rate binds


def _record(profile: ServiceProfile | None, kind: str = "external") -> dict:
    svc = service_info("http://127.0.0.1:1/score", kind, profile=profile)
    return {"schema": 1, "status": "ok", "engine": "asyncio", "max_concurrent_tasks": 100, "connector_limit": "auto",
            "service": svc, "unique_requested": 1000, "scoring_seconds": 10.0, "engine_info": {"sessions": 2},
            "latency": {"p50": 1.0}, "extra": {}}


def test_a_record_without_a_profile_gets_no_bound_even_with_a_latency_median():
    row = tidy_row(_record(None))
    assert row["bound_seconds"] is None and row["efficiency"] is None and row["bound_source"] == "unknown"


def test_a_record_with_a_probed_profile_is_bounded_by_it():
    prof = ServiceProfile(latency=Known(0.5, "probed"), capacity=Known(50, "probed"))
    row = tidy_row(_record(prof))
    assert row["bound_seconds"] == pytest.approx(20 * 0.5) and row["bound_source"] == "probed"
    assert row["capacity_source"] == "probed" and row["service_capacity"] == 50


@pytest.mark.slow
def test_queueing_run_with_unknown_capacity_shows_its_true_efficiency(tmp_path, make_input):
    """0.5 s per request (time scale 0.2 of 2.5 s), 50 at once, run at C=100, capacity not told."""
    path = make_input([f"line {i}" for i in range(400)])
    with ServiceProcess(ServerConfig(latency=2.5, time_scale=0.2, capacity=50)) as svc:
        probed = ServiceProfile(url=svc.url, latency=Known(0.5, "probed"))  # latency known, capacity not
        cfg = run_config(path, svc.url, tmp_path, max_concurrent_tasks=100, threads=1, cache=None)
        blind = score_file(cfg, server_info=service_info(svc.url, "external")).record
        honest = score_file(cfg, server_info=service_info(svc.url, "external", profile=probed)).record
    assert blind["latency"]["p50"] > 0.8  # the service queued: the run's own median doubled
    row = tidy_row(blind)
    assert row["bound_seconds"] is None and row["efficiency"] is None
    row = tidy_row(honest)
    assert row["bound_source"] == "pool/C only" and row["bound_seconds"] == pytest.approx(4 * 0.5)
    assert row["efficiency"] < 0.65  # about 0.5: half the time was queueing, and the table says so


def test_a_probed_fractional_capacity_is_rounded_up_so_the_bound_stays_a_lower_bound():
    from scoring_lib.bounds import honest_bound

    # 2,000 requests at a probed 199.4: a service of 200 does it in 10 waves; rounded down to 199, 11
    seconds, source = honest_bound(2000, math.inf, 500, 1.0, 199.4, latency_source="configured",
                                   capacity_source="probed")
    assert (seconds, source) == (10.0, "probed")
