"""Default event-loop threads are chosen per run from what is known, and the record says what and why."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from scoring_lib import ServerConfig, SimulatedService, score_file
from scoring_lib.settings import IN_FLIGHT_PER_LOOP, choose_threads
from scoring_lib.pipeline import known_latency

from conftest import run_config


@pytest.mark.parametrize("lines, concurrency, latency, cores", [
    (40_000, 100, None, 2),  # bench case z: zero latency, C=100
    (10_000, 1000, None, 2),  # bench case b: 1 s, C=1,000
    (10_000, 1000, 1.0, 2),
    (10**6, 10_000, 0.0, 8),  # a fast service: one loop whatever the wave
    (3, 10_000, 1.0, 8),  # 3 lines cannot make a wave
    (None, 10_000, 1.0, 1),  # one core
])
def test_one_loop_unless_waves_are_large(lines, concurrency, latency, cores):
    threads, reason = choose_threads(lines, concurrency, latency, cores)
    assert threads == 1 and reason


def test_large_waves_of_a_slow_service_get_a_loop_per_share_at_most_one_per_core():
    assert choose_threads(None, 2 * IN_FLIGHT_PER_LOOP, None, 8)[0] == 2
    assert choose_threads(10**6, 100 * IN_FLIGHT_PER_LOOP, 1.0, 4)[0] == 4


@settings(deadline=None)
@given(st.none() | st.integers(0, 10**7), st.integers(1, 10**6), st.none() | st.floats(0, 100),
       st.none() | st.integers(1, 256))
def test_never_more_loops_than_cores_or_shares_of_the_wave(lines, concurrency, latency, cores):
    threads, reason = choose_threads(lines, concurrency, latency, cores)
    assert 1 <= threads <= (cores or 1) and isinstance(reason, str)
    assert threads == 1 or threads * IN_FLIGHT_PER_LOOP <= concurrency


def test_known_latency_from_a_profile_or_the_simulator():
    assert known_latency({"profile": {"latency": {"value": 0.5, "source": "probed"}}}) == 0.5
    assert known_latency({"kind": "embedded", "latency": 4.15, "time_scale": 0.01}) == pytest.approx(0.0415)
    assert known_latency({"kind": "external", "url": "http://x/"}) is None
    assert known_latency(None) is None


def test_a_default_run_records_the_threads_it_chose_and_why(make_input, tmp_path):
    path = make_input([f"line {i}" for i in range(20)])
    with SimulatedService(ServerConfig(latency=0, capacity=0)) as svc:
        chosen = score_file(run_config(path, svc.url, tmp_path, threads=None))
        given_ = score_file(run_config(path, svc.url, tmp_path, threads=2, cache=None))
    info = chosen.record["engine_info"]
    assert chosen.record["threads"] == info["threads_chosen"] == info["threads_used"] == 1
    assert "in flight" in info["threads_reason"]
    assert given_.record["threads"] == given_.record["engine_info"]["threads_used"] == 2  # --threads overrides
    assert "threads_chosen" not in given_.record["engine_info"]


@pytest.mark.parametrize("concurrency", [100, 256, 10_000])
def test_the_config_states_the_threads_the_run_chooses_one_definition(monkeypatch, tmp_path, concurrency):
    from scoring_lib import settings
    from scoring_lib.config import ClientConfig, RunConfig
    from scoring_lib.pipeline import resolve_threads

    monkeypatch.setattr(settings.os, "cpu_count", lambda: 8)
    config = RunConfig(input=tmp_path / "in.txt", client=ClientConfig(url="http://127.0.0.1:9/"),
                       max_concurrent_tasks=concurrency)
    assert config.resolved_threads == choose_threads(None, concurrency, None, 8)[0]  # a stream, latency unknown
    for lines, latency in ((None, None), (50, 1.0), (10**6, 2.0), (10**6, 0.0)):
        resolved, reason = resolve_threads(config, lines, {"latency": latency} if latency is not None else None)
        assert (resolved.threads, reason) == choose_threads(lines, concurrency, latency, 8)
    given = RunConfig(input=tmp_path / "in.txt", client=ClientConfig(url="http://127.0.0.1:9/"), threads=3)
    assert given.resolved_threads == 3 and resolve_threads(given, 10, None) == (given, None)
