"""The report's seed section runs the hypothesis on a profile and says whether the seed's numbers fit."""

import pandas as pd

from scoring_lib.report import bound_sources_line, seed_from_profile
from scoring_lib.service import Known, ServiceProfile


def test_a_capacity_of_200_explains_both_seed_figures():
    [line] = seed_from_profile(ServiceProfile(name="emb", latency=Known(1.04, "probed"), capacity=Known(200, "probed")))
    assert "**fit**" in line and "83.0 s" in line and "41.5 s" in line and "probed" in line
    [line] = seed_from_profile(ServiceProfile(latency=Known(1.04, "probed"), capacity=Known(198, "probed")))
    assert "**fit**" in line and "45.7 s" in line  # 11 waves of 198, still within 10% of 43 s


def test_a_probed_capacity_just_under_200_counts_as_200_as_the_ramp_recommends():
    """A Little's-law estimate of 199.4 for a service of 200: rounded up, as the ramp's recommendation
    and prediction round it, so the lifted time is 10 waves (41.5 s), not 11 (45.7 s, 6% off the seed)."""
    [line] = seed_from_profile(ServiceProfile(latency=Known(4.15, "probed"), capacity=Known(199.4, "probed")))
    assert "ceil(2000 / 200) x 4.15 = 41.5 s" in line and "45.7 s" not in line


def test_a_capacity_of_50_does_not():
    [line] = seed_from_profile(ServiceProfile(latency=Known(1.0, "probed"), capacity=Known(50, "probed")))
    assert "do not fit" in line or "partly fit" in line


def test_unknown_capacity_predicts_nothing():
    [line] = seed_from_profile(ServiceProfile(latency=Known(1.0, "probed")))
    assert "no capacity" in line and "s with the pool lifted" not in line
    assert "probe --ramp" in seed_from_profile(None)[0]


def test_bound_sources_are_counted():
    pts = pd.DataFrame({"bound_source": ["configured", "pool/C only", "unknown", "unknown"]})
    line = bound_sources_line(pts)
    assert "2 setting(s) no bound" in line and "pool/C only" in line and "1 setting(s) from configured" in line


def test_report_of_an_external_service_with_unknown_capacity_claims_no_efficiency(tmp_path):
    """A url: sweep against a service nobody described: no bound, no efficiency; with a probed
    latency only: the pool/C bound, labelled so, and the efficiency it supports."""
    from scoring_lib.records import save_record
    from scoring_lib.report import build_report
    from scoring_lib.server import service_info

    base = {"schema": 1, "status": "ok", "created": "2026-01-01T00:00:00+00:00", "engine": "asyncio", "threads": 1,
            "max_concurrent_tasks": 100, "connector_limit": "auto", "unique_requested": 1000,
            "scoring_seconds": 10.0, "startup_seconds": 0.1, "engine_info": {"sessions": 1},
            "latency": {"p50": 1.0, "p90": 1.0, "p99": 1.0}, "machine": {"cpu_count": 2}, "versions": {}}
    url = "http://127.0.0.1:1/score"
    save_record(base | {"run_id": "a" * 32, "service": service_info(url, "external"),
                        "extra": {"sweep": "url-sweep", "point_id": "blind"}}, tmp_path / "runs")
    probed = ServiceProfile(url=url, latency=Known(0.5, "probed"))
    save_record(base | {"run_id": "b" * 32, "service": service_info(url, "external", profile=probed),
                        "extra": {"sweep": "url-sweep", "point_id": "probed"}}, tmp_path / "runs")
    report = build_report(tmp_path / "runs", tmp_path / "report")
    pts = report.points.set_index("point_id")
    assert pd.isna(pts.loc["blind", "efficiency"]) and pts.loc["blind", "bound_source"] == "unknown"
    assert pts.loc["probed", "bound_source"] == "pool/C only"
    assert pts.loc["probed", "efficiency"] == 0.5  # ceil(1000 / 100) x 0.5 s = 5 s of 10 s
    page = report.page.read_text()
    assert "no bound (service latency unknown)" in page and "pool/C only" in page
