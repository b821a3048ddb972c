"""The report's seed section runs the hypothesis on a profile and says whether the seed's numbers fit."""

import pandas as pd

from scoring_lib.report import bound_sources_line, seed_from_profile
from scoring_lib.service import Known, ServiceProfile


def test_a_capacity_of_200_explains_both_seed_figures():
    [line] = seed_from_profile(ServiceProfile(name="emb", latency=Known(1.04, "probed"), capacity=Known(200, "probed")))
    assert "**fit**" in line and "83.0 s" in line and "41.5 s" in line and "probed" in line
    [line] = seed_from_profile(ServiceProfile(latency=Known(1.04, "probed"), capacity=Known(198, "probed")))
    assert "**fit**" in line and "45.7 s" in line  # 11 waves of 198, still within 10% of 43 s


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
