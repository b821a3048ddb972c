"""The send rate of `auto` runs in the report: the in-flight figure's rate panel (drawn only from records
that have a rate history; older records keep the one panel), the table's final rate and cuts (only
where some setting has them), the record's rate history validated and in scoring-phase seconds."""

import copy
import math
import re
from types import SimpleNamespace

import pytest
from test_report import SCALE, record

from scoring_lib.plots import inflight_timeline
from scoring_lib.record import RecordError, _limits_section, parse_record
from scoring_lib.records import save_record
from scoring_lib.report import build_report

RATE_HISTORY = [[0.0, None], [0.5, 40.0], [1.0, 28.0], [1.6, 33.5]]


def auto_record(i: int, scoring: float = 2.2, point_id: str = "asyncio-t1-cauto-poolauto", history=RATE_HISTORY):
    rec = record(i, "asyncio", scoring, 400, "auto", 1)
    rec["concurrency"] = "auto"
    rec["extra"]["point_id"] = point_id
    rec["limits"] = {"mode": "adaptive", "final_limit": 180.0, "limit_history": [[0.0, 20], [1.0, 180]],
                     "rate_history": history, "final_rate": 33.5, "rate_cuts": 2, "rate_limit": None}
    return rec


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_the_figure_draws_an_auto_runs_rate_below_its_in_flight():
    fig = inflight_timeline([auto_record(1), record(2, "asyncio", 4.3, 100, 100, 1)], SCALE)
    top, rate = fig.axes[:2]
    assert any(label.startswith("send rate (auto), ended 33.5/s, 2 cut(s)") for label in _labels(rate))
    [line] = [line for line in rate.get_lines() if line.get_label().startswith("send rate")]
    assert math.isnan(line.get_ydata()[0]) and list(line.get_ydata()[1:]) == [40.0, 28.0, 33.5, 33.5]  # None: no line
    assert line.get_xdata()[-1] == 2.2  # the last rate held to the run's end
    assert line.get_color() == next(l for l in top.get_lines() if "C=auto" in l.get_label()).get_color()
    assert "limit (auto)" in _labels(top) and "time into the scoring phase" in rate.get_xlabel()
    [limit] = [line for line in top.get_lines() if line.get_label() == "limit (auto)"]
    assert list(limit.get_xdata()) == [0.0, 1.0, 2.2] and list(limit.get_ydata()) == [20, 180, 180]  # to the end


@pytest.mark.parametrize("limits", [None, {"limit_history": [[0.0, 20], [1.0, 180]]},
                                    {"rate_history": [[0.0, None], [1.0, None]], "final_rate": None},
                                    {"rate_history": []}])
def test_records_without_a_rate_keep_the_one_panel(limits):
    """Older records (no rate history, or no limits at all) and runs whose rate stayed unbounded."""
    rec = auto_record(1)
    if limits is None:
        rec.pop("limits")
    else:
        rec["limits"] = limits
    fig = inflight_timeline([rec, record(2, "asyncio", 4.3, 100, 100, 1)], SCALE)
    assert len([ax for ax in fig.axes if ax.get_ylabel()]) == 1
    assert not any(label.startswith("send rate") for ax in fig.axes for label in _labels(ax))
    assert fig.axes[0].get_xlabel().startswith("time into the scoring phase")


def test_the_record_validates_its_rate_history():
    parse_record(auto_record(1))
    for bad in ([["x", 3.0]], [[0.0, -5.0]], [[0.0, "fast"]], "lots"):
        with pytest.raises(RecordError, match="rate_history"):
            parse_record(auto_record(1, history=bad))
    rec = auto_record(1)
    rec["limits"]["final_rate"] = "fast"
    with pytest.raises(RecordError, match="final_rate"):
        parse_record(rec)


def test_the_rate_history_is_in_scoring_phase_seconds_like_the_limits():
    info = {"limits": {"started_at": 100.0, "limit_history": [[0.0, 20], [2.0, 40]],
                       "rate_history": [[0.0, None], [2.0, 50.0]]}}
    limits = _limits_section(SimpleNamespace(scoring_started=101.5), copy.deepcopy(info))
    assert limits["limit_history"] == [[-1.5, 20], [0.5, 40]]
    assert limits["rate_history"] == [[-1.5, None], [0.5, 50.0]]


def _report(tmp_path, records):
    runs = tmp_path / "runs"
    for rec in records:
        save_record(rec, runs)
    return build_report(runs, tmp_path / "report")


def test_the_table_shows_the_final_rate_and_cuts_where_there_are_any_and_stays_escaped(tmp_path):
    hostile = "asyncio-cauto-<script>alert(1)</script>"
    report = _report(tmp_path, [auto_record(1, point_id=hostile), auto_record(2, 2.4, point_id=hostile),
                                record(3, "asyncio", 4.3, 100, 100, 1)])
    row = report.points.set_index("point_id").loc[hostile]
    assert (row["final_rate"], row["rate_cuts"]) == (33.5, 2)
    html, page = report.html.read_text(), report.page.read_text()
    assert "final_<wbr>rate" in html and "rate_<wbr>cuts" in html
    assert re.search(r"\|\s+final_rate\s+\|\s+rate_cuts\s+\|", page)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (report.out_dir / "inflight_timeline.png").is_file()
    assert "send rate" in report.page.read_text()  # the caption says what the lower panel is


def test_a_report_of_older_records_has_no_rate_columns(tmp_path):
    old = auto_record(1)
    for key in ("rate_history", "final_rate", "rate_cuts"):
        old["limits"].pop(key)
    report = _report(tmp_path, [old, record(2, "asyncio", 4.3, 100, 100, 1)])
    assert "final_<wbr>rate" not in report.html.read_text() and "rate_cuts" not in report.page.read_text()
    assert "final_limit" in report.page.read_text()


def test_a_record_with_a_damaged_rate_is_skipped_with_one_warning(tmp_path, capsys):
    import json

    runs = tmp_path / "runs"
    save_record(record(2, "asyncio", 4.3, 100, 100, 1), runs)
    bad = auto_record(1)
    bad["limits"]["rate_history"] = [[0.0, "<script>"], [1.0, 5.0]]
    (runs / "damaged.json").write_text(json.dumps(bad))
    report = build_report(runs, tmp_path / "report")
    assert len(report.points) == 1 and "rate_cuts" not in report.page.read_text()
    [warning] = [line for line in capsys.readouterr().err.splitlines() if "damaged.json" in line]
    assert warning.startswith("warning: skipped record") and "limits.rate_history" in warning


def test_a_report_of_one_auto_run_alone_is_drawn(tmp_path):
    """`score --max-concurrent-tasks auto` then `report --adhoc`: no fixed asyncio setting beside it
    (the asyncio panel raised ValueError on its empty fixed settings)."""
    report = _report(tmp_path, [auto_record(1)])
    assert len(report.points) == 1 and (report.out_dir / "wall_vs_concurrency.png").is_file()
    assert "final_<wbr>rate" in report.html.read_text()
