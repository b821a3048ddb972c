"""bench says what it missed: targets marked met or missed, a closing count, --strict exits 1 on a miss.
The logic is checked on Measurement objects; no case runs here except the driver-only one, small."""

from __future__ import annotations

import pytest

import scoring_lib.bench as bench
from scoring_lib.bench import Measurement, Target, tally
from scoring_lib.bench.run import closing
from scoring_lib.cli import main


def _m(setting: str, wall: float, bound: float | None = None, targets=(), **extra) -> Measurement:
    return Measurement("z", setting, 100, wall, bound, extra=extra, targets=list(targets))


def test_each_target_is_marked_met_or_missed_on_its_line():
    m = _m("score", 10.0, speed_vs_bare=0.84, targets=[Target("speed_vs_bare", ">=", 0.85)])
    assert m.line().endswith("[speed_vs_bare >= 0.85: MISSED]")
    m.extra["speed_vs_bare"] = 0.85
    assert m.line().endswith("[speed_vs_bare >= 0.85: met]")


def test_a_target_can_name_a_field_such_as_wall_over_bound():
    fast, slow = (_m("x", w, bound=10.0, targets=[Target("ratio", "<=", 1.05)]) for w in (10.4, 10.6))
    assert (fast.missed, slow.missed) == (0, 1)


def test_a_figure_that_was_not_measured_misses_its_target():
    m = _m("score", 1.0, scoring_phase_vs_bound=None, targets=[Target("scoring_phase_vs_bound", "<=", 1.05)])
    assert m.missed == 1


def test_a_target_compares_only_with_at_most_or_at_least():
    with pytest.raises(ValueError):
        Target("ratio", "<", 1)


def test_the_closing_count_and_the_missed_targets():
    results = [_m("a", 1.0, speed_vs_bare=0.9, targets=[Target("speed_vs_bare", ">=", 0.85)]),
               _m("b", 1.0, peak_rss_mb=320, targets=[Target("peak_rss_mb", "<=", 300)]),
               _m("no target", 1.0)]
    assert tally(results) == (1, 1)
    text = closing(results)
    assert text.splitlines()[0] == "targets: 1 met, 1 missed"
    assert "missed: z b: peak_rss_mb <= 300 (measured 320)" in text


@pytest.mark.parametrize("strict, missed, code", [(False, True, 0), (True, False, 0), (True, True, 1)])
def test_strict_exits_non_zero_only_on_a_miss(monkeypatch, strict, missed, code):
    measured = [_m("x", 1.0, speed_vs_bare=0.5 if missed else 1.0, targets=[Target("speed_vs_bare", ">=", 0.85)])]
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: measured)
    assert main(["bench", "--cases", "z", *(["--strict"] if strict else [])]) == code


def test_the_driver_case_hands_the_pipeline_its_instant_engine(tmp_path):
    (m_none, m_cache) = bench.case_driver(tmp_path, n=500)
    assert m_none.lines == m_cache.lines == 500 and m_none.extra["lines_per_s"] > 0


@pytest.mark.parametrize("lean", [False, True])
def test_both_bare_baselines_score_every_line_as_the_service_does(tmp_path, lean):
    """Case z's two baselines (aiohttp's json paths, and bytes in and out) do the same work: every line's
    score, in order; a baseline that skipped work would flatter it."""
    import json
    import subprocess

    from scoring_lib import ServerConfig, deterministic_score
    from scoring_lib.bench.measure import bare_args
    from scoring_lib.server import ServiceProcess

    texts = [f"line {i}" for i in range(50)]
    (tmp_path / "in.txt").write_text("".join(t + "\n" for t in texts))
    with ServiceProcess(ServerConfig(latency=0, capacity=0)) as svc:
        subprocess.run(bare_args(tmp_path / "in.txt", svc.url, 8, tmp_path / "o.jsonl", lean=lean), check=True,
                       timeout=120)
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 51))
    assert [r["score"] for r in rows] == pytest.approx([deterministic_score(t) for t in texts])
