"""`auto` against every zoo behaviour (issue 16): every line scored, nothing lost. Timing belongs to
`bench --cases o`; these only check that the control holds (no thresholds on time)."""

from __future__ import annotations

import pytest

from scoring_lib import ServerConfig, score_file
from scoring_lib.bench.zoo import PROFILED, behaviours
from scoring_lib.server import ServiceProcess

from conftest import read_rows, run_config

RATE = dict(latency=0.02, capacity=0, rate_limit=60.0)
CAPACITY = dict(latency=4.15, capacity=16, time_scale=0.01)
ZOO = {
    "shedding 503 + Retry-After": ServerConfig(**CAPACITY, shed=True, shed_retry_after=1.0),
    "429 + Retry-After, burst rate/10": ServerConfig(**RATE, rate_burst=6, retry_after="whole"),
    "429 without Retry-After": ServerConfig(**RATE, rate_burst=6, retry_after="none"),
    "quota": ServerConfig(latency=0.02, capacity=0, quota=40, quota_window=1.0),
    "capacity halves": ServerConfig(**CAPACITY, halve_after=50),
    "warm-up": ServerConfig(**CAPACITY, warmup=20),
    "proxy queue": ServerConfig(latency=0.05, capacity=8, queue_limit=8),
}


def _auto(make_input, tmp_path, config: ServerConfig, n: int, **run):
    path = make_input([f"zoo line {i}" for i in range(n)])
    with ServiceProcess(config) as svc:
        result = score_file(run_config(path, svc.url, tmp_path, cache=None, max_concurrent_tasks="auto",
                                       max_retries=20, backoff_base=0.1, backoff_cap=2.0, **run))
    return result, read_rows(tmp_path / "out.jsonl")


def test_a_flaky_but_alive_service_gets_every_line_scored(make_input, tmp_path):
    result, rows = _auto(make_input, tmp_path, ServerConfig(latency=0, capacity=0, flaky=3), 60)
    assert result.exit_code == 0 and [r["status"] for r in rows] == ["ok"] * 60
    assert all(r["attempts"] == 4 for r in rows)  # three mixed failures, then the score


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_auto_scores_every_line_of_every_zoo_behaviour(make_input, tmp_path, name):
    result, rows = _auto(make_input, tmp_path, ZOO[name], 150)
    assert result.exit_code == 0 and all(r["status"] == "ok" for r in rows), (name, result.record["limits"])


def test_the_zoo_bench_names_every_behaviour_of_issue_16():
    names = [b.name for b in behaviours(0.05)]
    for word in ("queueing", "shedding 503", "shedding 503 + Retry-After", "burst rate/10", "burst rate",
                 "429 without Retry-After", "quota", "halves", "warm-up", "flaky", "proxy queue"):
        assert any(word in n for n in names), word
    assert all(b.bound > 0 and b.lines > 0 for b in behaviours(0.05))


def test_the_zoo_also_runs_auto_from_a_probed_profile_on_capacity_services():
    profiled = [b for b in behaviours(0.05) if PROFILED in dict(b.runs())]
    assert {b.name for b in profiled} >= {"queueing capacity", "shedding 503", "proxy queue (16 + 16, then 503)"}
    for b in profiled:
        assert b.server_info("auto") is None
        info = b.server_info(PROFILED)
        assert info["profile"]["capacity"] == {"value": b.probed, "source": "probed"}


def _zoo_row(name: str, label: str, auto_wall: float, best_wall: float = 1.0, refused: float = 0.0, lost: int = 0):
    from scoring_lib.bench.zoo import ZooRun, zoo_measurement

    b = next(b for b in behaviours(0.05) if b.name.startswith(name))
    return b, zoo_measurement(b, label, ("C=8", ZooRun("C=8", best_wall, 0.0, 0)),
                              ZooRun("auto", auto_wall, refused, lost))


def test_a_zoo_row_is_a_bench_measurement_held_to_issue_16s_targets():
    from scoring_lib.bench.measure import tally

    b, m = _zoo_row("429 without", "asyncio", auto_wall=1.1 * b_bound(), best_wall=b_bound(), refused=0.04)
    assert m.case == "o" and m.bound_seconds == b.bound and m.extra["auto/best"] == 1.1
    assert {str(t) for t in m.targets} == {"auto/best <= 1.15", "ratio <= 1.25", "refused_pct <= 5", "lost <= 0"}
    assert m.missed == 0 and tally([m]) == (4, 0)
    _, slow = _zoo_row("429 without", "asyncio", auto_wall=1.2 * b_bound(), best_wall=b_bound(), refused=0.06)
    missed = {str(t) for t, _, met in slow.verdicts() if not met}
    assert missed == {"auto/best <= 1.15", "refused_pct <= 5"} and "MISSED" in slow.line()


def test_a_ray_zoo_row_is_held_to_auto_within_1_3x_and_nothing_lost():
    _, m = _zoo_row("quota", "ray x4", auto_wall=1.25, refused=0.2)
    assert {str(t) for t in m.targets} == {"auto/best <= 1.3", "lost <= 0"} and m.missed == 0
    _, lost = _zoo_row("quota", "ray x4", auto_wall=1.5, lost=3)
    assert lost.missed == 2


def test_the_flaky_zoo_row_is_judged_on_lines_lost_alone():
    _, m = _zoo_row("flaky", "asyncio", auto_wall=9.0, refused=0.7)
    assert [str(t) for t in m.targets] == ["lost <= 0"] and m.missed == 0
    _, lost = _zoo_row("flaky", "ray x4", auto_wall=1.0, lost=1)
    assert lost.missed == 1


def test_a_zoo_row_that_could_not_run_misses_every_target():
    from scoring_lib.bench.zoo import zoo_measurement

    b = behaviours(0.05)[0]
    m = zoo_measurement(b, "ray x4", None, None, error="ClusterConnectError: no Ray worker was ready")
    assert m.missed == len(m.targets) == 2 and "ClusterConnectError" in m.extra["error"]


def b_bound() -> float:
    return next(b for b in behaviours(0.05) if b.name.startswith("429 without")).bound
