"""The report on a fixed set of records gives the expected table values and figures."""

import math
import re
from pathlib import Path

import pytest

from scoring_lib.records import save_record
from scoring_lib.errors import ReportError
from scoring_lib.report import build_report

SCALE = 0.05


def record(i, engine, scoring, c, pool, sessions, threads=1, workers=None):
    return {"schema": 1, "status": "ok", "run_id": f"{i:032d}", "created": f"2026-01-01T00:00:{i:02d}+00:00",
            "engine": engine, "threads": threads, "workers": workers, "max_concurrent_tasks": c,
            "connector_limit": pool, "unique_requested": 2000, "lines": 2000, "ok": 2000,
            "service": {"kind": "embedded", "latency": 4.15, "capacity": 200, "time_scale": SCALE},
            "scoring_seconds": scoring, "startup_seconds": 0.1, "engine_info": {"sessions": sessions},
            "latency": {"p50": 0.2075, "p90": 0.21, "p99": 0.22, "max": 0.23},
            "timeline": [[0.0, 0], [1.0, min(c, 200)], [2.0, 0]],
            "extra": {"sweep": "fixed", "point_id": f"{engine}-{workers}-{threads}-{c}-{pool}"},
            "machine": {"hostname": "h", "cpu_count": 2, "os": "Linux", "python": "3.11"},
            "versions": {"scoring-workbench": "0.1.0", "aiohttp": "3", "ray": "2"}, "git_commit": "abc"}


@pytest.fixture
def fixed_records(tmp_path):
    runs = tmp_path / "runs"
    rows = [
        ("asyncio", 4.30, 100, 100, 1), ("asyncio", 4.40, 100, 100, 1),   # plateau: C=100, pool 100
        ("asyncio", 4.35, 400, 100, 1),                                      # C=400, still pool 100
        ("asyncio", 2.20, 200, "auto", 1), ("asyncio", 2.25, 400, "auto", 1),
    ]
    for i, (engine, s, c, pool, sessions) in enumerate(rows):
        save_record(record(i, engine, s, c, pool, sessions), runs)
    for i, s in enumerate([2.20, 2.30, 2.25]):
        save_record(record(10 + i, "ray", s, 2048, 100, 2048, threads=64, workers=32), runs)
    failed = record(20, "ray", None, 256, "auto", 0, threads=8, workers=4) | {"status": "failed", "failure": "boom"}
    save_record(failed, runs)
    warm = record(21, "asyncio", 99.0, 100, 100, 1)
    warm["extra"]["warmup"] = True
    save_record(warm, runs)
    return runs


def test_seed_table_values(fixed_records, tmp_path):
    report = build_report(fixed_records, tmp_path / "report")
    seed = report.seed.set_index("setting")
    asy = seed.loc["asyncio, aiohttp's default pool of 100"]
    assert asy["predicted_s"] == pytest.approx(83.0)
    assert asy["seed_over_predicted"] == pytest.approx(83.97 / 83.0)
    # median of the two pool-100 settings' medians (4.35 and 4.35) scaled back: 4.35 / 0.05
    assert asy["measured_full_scale_s"] == pytest.approx(87.0)
    assert asy["runs"] == 3
    ray = seed.loc["Ray 32 workers x 64 threads"]
    assert ray["predicted_s"] == pytest.approx(41.5) and ray["measured_full_scale_s"] == pytest.approx(45.0)
    assert ray["runs"] == 3 and ray["note"] == ""
    auto = seed.loc["asyncio, pool auto (this workbench's default)"]
    assert auto["measured_full_scale_s"] == pytest.approx(44.5) and math.isnan(auto["seed_s"])


def test_verdicts_follow_the_numbers(fixed_records, tmp_path):
    report = build_report(fixed_records, tmp_path / "report")
    text = "\n".join(report.verdicts)
    assert "Plateau at 100 comes from aiohttp's pool: supported" in text
    assert "Ray's win was the pool, not Ray: supported" in text


def test_warmups_and_failures_stay_out_of_the_figures_but_failures_are_listed(fixed_records, tmp_path):
    report = build_report(fixed_records, tmp_path / "report")
    assert report.points["wall_max"].max() < 10  # the 99 s warm-up is left out
    assert len(report.points) == 5
    page = report.page.read_text()
    assert "## Failed runs" in page and "boom" in page


def test_figures_and_tables_are_written(fixed_records, tmp_path):
    out = tmp_path / "report"
    report = build_report(fixed_records, out)
    for name in ("wall_vs_concurrency", "ray_heatmap", "efficiency", "latency_percentiles", "inflight_timeline"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"({name}.png)" in report.page.read_text()
    assert (out / "runs.csv").read_text().count("\n") == 11  # header + 10 records, warm-up and failed included
    assert (out / "points.csv").exists()


def test_report_cli_on_a_missing_directory_is_exit_2(tmp_path):
    from conftest import cli
    proc = cli("report", "--runs", tmp_path / "nothing", "--out", tmp_path / "r", cwd=tmp_path)
    assert proc.returncode == 2 and "no run records" in proc.stderr and not (tmp_path / "r").exists()


def adhoc_record(i, scale=1.0, scoring=42.0):
    rec = record(i, "asyncio", scoring, 256, "auto", 1)
    rec["extra"] = {}
    rec["service"] = dict(rec["service"], time_scale=scale)
    return rec


def test_plain_score_runs_stay_out_unless_asked(fixed_records, tmp_path):
    save_record(adhoc_record(30), fixed_records / "adhoc")
    report = build_report(fixed_records, tmp_path / "report")
    assert report.sweeps == ["fixed"] and "nan" not in "".join(report.points["point_id"])
    assert not (report.runs["sweep"].isna()).any()
    with pytest.raises(ReportError, match="2 different services or time scales"):
        build_report(fixed_records, tmp_path / "report", sweeps="fixed", adhoc=True)


def test_default_is_the_sweep_run_last_and_all_takes_every_sweep(fixed_records, tmp_path):
    later = record(40, "asyncio", 2.5, 200, "auto", 1)
    later["created"] = "2026-02-01T00:00:00+00:00"
    later["extra"]["sweep"] = "later"
    save_record(later, fixed_records / "later")
    assert build_report(fixed_records, tmp_path / "a").sweeps == ["later"]
    assert build_report(fixed_records, tmp_path / "b", sweeps="all").sweeps == ["fixed", "later"]
    with pytest.raises(ReportError, match="no records of sweep 'nope'.*recorded sweeps: fixed, later"):
        build_report(fixed_records, tmp_path / "c", sweeps=["nope"])


def test_adhoc_runs_alone_are_named_like_sweep_points(tmp_path):
    save_record(adhoc_record(1), tmp_path / "runs")
    report = build_report(tmp_path / "runs", tmp_path / "report", adhoc=True)
    assert list(report.points["point_id"]) == ["asyncio-t1-c256-poolauto"]
    assert report.time_scale == 1.0 and "All times are full-scale seconds" in report.page.read_text()


def test_settings_whose_intervals_overlap_are_said_to_tie(fixed_records, tmp_path):
    report = build_report(fixed_records, tmp_path / "report")
    assert list(report.points["wall_median"]) == sorted(report.points["wall_median"])
    first = [line for line in report.page.read_text().splitlines() if line.strip()][1]
    best = report.points.iloc[0]
    assert first.startswith("**No single fastest setting:") and f"`{best['point_id']}`" in first
    assert "Fastest setting" not in report.page.read_text()
    assert f"({best['wall_median'] / SCALE:.3g} s at full scale)" in first


def test_the_fastest_setting_is_named_when_its_interval_clears_the_next(tmp_path):
    runs = tmp_path / "runs"
    walls = {100: [4.30, 4.32, 4.31], 200: [2.20, 2.21, 2.22], 400: [2.40, 2.41, 2.42]}
    for c, times in walls.items():
        for j, s in enumerate(times):
            save_record(record(c + j, "asyncio", s, c, "auto", 1), runs)
    report = build_report(runs, tmp_path / "report")
    first = [line for line in report.page.read_text().splitlines() if line.strip()][1]
    best = report.points.iloc[0]
    assert first.startswith(f"**Fastest setting: `{best['point_id']}`**") and "clears the next" in first
    assert f"{best['wall_median'] / best['bound_seconds']:.2f}x the bound" in first
    assert best["ci95_low"] < 2.21 < best["ci95_high"] < report.points.iloc[1]["ci95_low"]
    assert "ci95_low" in report.page.read_text() and "t-interval" in report.page.read_text()


def test_two_close_settings_tie_and_the_page_says_two_repeats_are_wide(tmp_path):
    runs = tmp_path / "runs"
    for c, times in {200: [2.20, 2.30], 400: [2.25, 2.35]}.items():
        for j, s in enumerate(times):
            save_record(record(c + j, "asyncio", s, c, "auto", 1), runs)
    text = build_report(runs, tmp_path / "report").page.read_text()
    assert "**No single fastest setting: 2 tie.**" in text and "with 2 repeats an interval is wide" in text


def test_html_is_one_self_contained_file(fixed_records, tmp_path):
    report = build_report(fixed_records, tmp_path / "report")
    html = report.html.read_text()
    assert html.count('src="data:image/png;base64,') == len(report.figures) == 5
    assert ".png\"" not in html and "<table>" in html and "fastest setting" in html.lower()


def test_figures_say_their_time_scale_draw_bounds_as_steps_and_use_whole_counts(fixed_records, tmp_path):
    from scoring_lib import plots

    report = build_report(fixed_records, tmp_path / "report")
    pts = report.points
    fig = plots.wall_vs_concurrency(pts, SCALE)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(":")[0] for ax in titled] == ["asyncio", "Ray"]  # one panel per engine
    labels = " ".join(a.get_ylabel() for ax in fig.axes for a in [ax, *ax.child_axes])
    assert "at time scale 0.05" in labels and "full scale" in labels
    stairs = [line for line in titled[0].get_lines() if line.get_drawstyle().startswith("steps")]
    assert len(stairs) == 2  # one bound staircase per pool
    heat = plots.ray_heatmap(pts, SCALE)
    images = [im for ax in heat.axes for im in ax.get_images()]
    assert images and all(im.get_clim()[0] == 0 for im in images)
    timeline = plots.inflight_timeline(report.runs.pipe(lambda _: []), SCALE)
    assert "time scale 0.05" in timeline.axes[0].get_xlabel()
    ticks = plots.inflight_timeline([{"engine": "asyncio", "threads": 1, "max_concurrent_tasks": 3,
                                      "connector_limit": "auto", "timeline": [[0, 0], [1, 3], [2, 1]]}])
    ticks.canvas.draw()
    assert all(float(t).is_integer() for t in ticks.axes[0].get_yticks())


def test_report_cli_exit_2_with_one_line_when_nothing_to_report(tmp_path):
    from conftest import cli
    (tmp_path / "runs").mkdir()
    save_record(adhoc_record(1), tmp_path / "runs")
    proc = cli("report", "--runs", tmp_path / "runs", "--out", tmp_path / "r", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "no sweep recorded" in proc.stderr and "--adhoc" in proc.stderr and not (tmp_path / "r").exists()
    ok = cli("report", "--runs", tmp_path / "runs", "--adhoc", "--out", tmp_path / "r", cwd=tmp_path)
    assert ok.returncode == 0 and "report.html" in ok.stdout and (tmp_path / "r" / "report.html").exists()


def auto_record(i, engine, scoring, final_limit, threads=1, workers=None, sessions=1):
    """A `max_concurrent_tasks: auto` run as records keep it: C is its ceiling, the limit's end in `limits`."""
    rec = record(i, engine, scoring, 2000, "auto", sessions, threads=threads, workers=workers)
    rec["concurrency"] = "auto"
    rec["limits"] = {"mode": "adaptive", "ceiling": 2000, "final_limit": final_limit, "http_429": 0, "http_503": 0,
                     "limit_history": [[0.0, 20], [0.5, 160], [1.0, final_limit]]}
    w = f"-w{workers}" if engine == "ray" else ""
    rec["extra"]["point_id"] = f"{engine}{w}-t{threads}-cauto-poolauto"
    return rec


def test_without_an_auto_run_the_report_says_so(fixed_records, tmp_path):
    report = build_report(fixed_records, tmp_path / "report")
    assert report.verdicts[-2].startswith("**`auto` beside the fixed settings:** no `auto` run")
    assert "no `auto` run in these records" in report.page.read_text()


@pytest.fixture
def auto_records(fixed_records):
    save_record(auto_record(50, "asyncio", 2.31, 196.0), fixed_records)
    save_record(auto_record(51, "asyncio", 2.33, 204.0), fixed_records)
    save_record(auto_record(52, "ray", 2.60, 188.0, threads=8, workers=4, sessions=32), fixed_records)
    return fixed_records


def test_auto_is_reported_beside_the_best_fixed_setting_of_its_engine(auto_records, tmp_path):
    report = build_report(auto_records, tmp_path / "report")
    pts = report.points.set_index("point_id")
    auto = pts.loc["asyncio-t1-cauto-poolauto"]
    assert auto["concurrency"] == "auto" and auto["runs"] == 2 and auto["final_limit"] == pytest.approx(200.0)
    # Its bound takes the ceiling (2000) as C: the capacity's bound, the same as any fixed C >= 200 with no pool.
    assert auto["bound_seconds"] == pytest.approx(10 * 4.15 * SCALE)
    assert auto["bound_seconds"] == pytest.approx(pts.loc["asyncio-None-1-400-auto", "bound_seconds"])
    line = next(v for v in report.verdicts if v.startswith("**`auto` beside the best fixed setting:**"))
    assert ("`asyncio-t1-cauto-poolauto` took 2.32 s (median of 2), 1.05x the best fixed asyncio setting "
            "`asyncio-None-1-200-auto` (2.2 s): 5% slower than it; its limit ended at 200 (ceiling 2000, "
            "service capacity 200)") in line
    assert ("`ray-w4-t8-cauto-poolauto` took 2.6 s (median of 1), 1.16x the best fixed ray setting "
            "`ray-32-64-2048-100` (2.25 s): 16% slower than it; its limit ended at 188") in line
    assert "ceiling as C" in line and line in report.page.read_text()
    # The fixed settings' verdicts and the seed table are made of fixed settings only, as before.
    assert "Plateau at 100 comes from aiohttp's pool: supported" in "\n".join(report.verdicts)
    seed = report.seed.set_index("setting")
    assert seed.loc["asyncio, pool auto (this workbench's default)", "measured_full_scale_s"] == pytest.approx(44.5)
    assert seed.loc["Ray 32 workers x 64 threads", "runs"] == 3
    table = report.page.read_text().split("## Every setting, fastest first")[1].split("##")[0]
    cells = {row.split("|")[1].strip(): row.split("|")[2].strip() for row in table.strip().splitlines()}
    assert cells["point_id"] == "final_limit" and cells["asyncio-t1-cauto-poolauto"] == "200"
    assert cells["asyncio-None-1-400-100"] == "400"  # a fixed setting's limit is its C


def test_auto_is_drawn_as_its_own_marker_at_its_final_limit(auto_records, tmp_path):
    from scoring_lib import plots

    report = build_report(auto_records, tmp_path / "report")
    for name in report.figures:
        png = tmp_path / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    fig = plots.wall_vs_concurrency(report.points, SCALE)
    asyncio_ax, ray_ax = [ax for ax in fig.axes if ax.get_title()]
    stars = [line for line in asyncio_ax.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [200.0]
    assert stars[0].get_ydata()[0] == pytest.approx(2.32)
    assert "final limit 200 (ceiling 2000)" in " ".join(asyncio_ax.get_legend_handles_labels()[1])
    # The fixed series' staircases still span only fixed C values (the ceiling 2000 is no point on the axis).
    assert max(asyncio_ax.get_xticks()) == 400
    assert "auto->188" in " ".join(t.get_text() for t in ray_ax.get_xticklabels())
    heat = plots.ray_heatmap(report.points, SCALE)
    assert "C = auto, pool auto" in [ax.get_title() for ax in heat.axes]
    # The timeline draws the fastest auto run with its limit over time.
    from scoring_lib.records import read_records
    from scoring_lib.report import _timeline_records

    picks = _timeline_records(read_records(auto_records))
    assert [r.concurrency for r in picks] == ["fixed", "fixed", "fixed", "auto"]
    assert picks[-1].scoring_seconds == 2.31 and picks[0].max_concurrent_tasks == 400
    labels = plots.inflight_timeline(picks, SCALE).axes[0].get_legend_handles_labels()[1]
    assert "limit (auto)" in labels and any("C=auto" in label for label in labels)


def test_no_table_prints_nan_where_a_figure_does_not_exist(fixed_records, tmp_path):
    """The seed table has no seed figure for the pool-auto row: an em dash, as every table prints."""
    report = build_report(fixed_records, tmp_path / "report")
    assert math.isnan(report.seed.set_index("setting").loc["asyncio, pool auto (this workbench's default)", "seed_s"])
    page = report.page.read_text()
    seed_rows = [line for line in page.splitlines() if line.startswith("| asyncio, pool auto")]
    assert len(seed_rows) == 1 and seed_rows[0].count("\u2014") == 2  # seed_s and seed_over_predicted
    html = re.sub(r"data:image/png;base64,[^\"]+", "", report.html.read_text())
    assert not re.search(r"\bnan\b", page, re.I) and not re.search(r"\bnan\b", html, re.I)
    assert "2e+03" not in page and "2.05e+03" not in page  # counts are whole numbers


REFERENCE_RUNS = Path(__file__).resolve().parents[1] / "results/reference/runs"


@pytest.mark.browser
def test_report_html_is_no_wider_than_the_page_in_chromium(tmp_path):
    """The committed reference records (its settings table has 15 columns), rendered by
    headless Chromium: at 1280 px every table fits the page's 1100 px column; at 800 px the page
    itself still does not scroll sideways (a wide table scrolls inside its own box)."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file():
        pytest.skip("browser test skipped: no Chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    report = build_report(REFERENCE_RUNS, tmp_path / "report", sweeps=["reference"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            for width, tables_fit in ((1280, True), (800, False)):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(report.html.as_uri())
                doc = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
                assert doc[0] <= doc[1], f"the page scrolls sideways at {width} px: {doc}"
                boxes = page.evaluate("[...document.querySelectorAll('table')].map(t => [t.getBoundingClientRect()"
                                      ".right, document.body.getBoundingClientRect().right])")
                assert len(boxes) == 4
                if tables_fit:
                    assert all(right <= body + 1 for right, body in boxes), boxes
                page.close()
        finally:
            browser.close()


def test_legends_cover_no_bar_and_no_marker(fixed_records, tmp_path):
    """efficiency.png and latency_percentiles.png: the legend sits where it hides nothing, whatever the
    data (here the slowest settings, drawn at the bottom, reach 0.95 of their bound)."""
    import matplotlib.pyplot as plt

    from scoring_lib import plots

    points = build_report(fixed_records, tmp_path / "report").points
    assert points["efficiency"].max() > 0.9
    for fig in (plots.efficiency(points), plots.latency_percentiles(points, SCALE)):
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent()
        bars = [patch.get_window_extent() for patch in ax.patches]
        markers = [xy for c in ax.collections for xy in c.get_offset_transform().transform(c.get_offsets())]
        assert bars or markers
        assert not [b for b in bars if legend.overlaps(b)], fig.axes[0].get_title()
        assert not [m for m in markers if legend.contains(*m)], fig.axes[0].get_title()
        plt.close(fig)


def test_every_setting_is_inside_the_shared_wall_time_axis():
    import pandas as pd

    from scoring_lib.plots import wall_vs_concurrency

    rows = [dict(engine="asyncio", workers=None, threads=1, max_concurrent_tasks=c, connector_limit="auto",
                 sessions=1, effective_pool=float("inf"), wall_median=2.0, wall_min=1.9, wall_max=2.1,
                 bound_seconds=2.0, concurrency="fixed", final_limit=c, point_id=f"a{c}") for c in (200, 400)]
    rows += [dict(engine="ray", workers=w, threads=t, max_concurrent_tasks=256, connector_limit="auto",
                  sessions=w * t, effective_pool=float("inf"), wall_median=wall, wall_min=wall, wall_max=wall * 1.01,
                  bound_seconds=wall / 1.1, concurrency="fixed", final_limit=w * t, point_id=f"r{w}x{t}")
             for w, t, wall in ((2, 8, 26.3), (4, 64, 2.4))]
    fig = wall_vs_concurrency(pd.DataFrame(rows))
    for ax in fig.axes[:2]:
        assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 26.3 * 1.01  # the slowest Ray setting is on the figure


def test_rays_verdict_counts_only_settings_with_200_in_flight():
    # 2 workers x 8 threads at C=256 keeps 16 in flight: it says nothing about Ray against the pool
    import pandas as pd

    from scoring_lib.report import verdicts

    base = dict(connector_limit="auto", effective_pool=float("inf"), concurrency="fixed", bound_seconds=2.0)
    rows = [dict(base, engine="asyncio", workers=None, threads=1, max_concurrent_tasks=400, final_limit=400,
                 wall_median=2.44)]
    rows += [dict(base, engine="ray", workers=w, threads=t, max_concurrent_tasks=256, final_limit=w * t,
                  wall_median=wall) for w, t, wall in ((2, 8, 26.3), (4, 8, 13.3), (4, 64, 2.42))]
    [line] = [v for v in verdicts(pd.DataFrame(rows)) if "Ray's win" in v]
    assert "supported" in line and "not supported" not in line and "2.42 s" in line


def test_a_sweeps_calibration_splits_each_gap_into_client_and_service(fixed_records, tmp_path):
    """With the sweep's calibration beside its records, the page states the client's measured cost and
    the points table says which share of each setting's gap to its bound that cost explains."""
    from scoring_lib.calibration import Calibration, save_calibration

    before = build_report(fixed_records, tmp_path / "before")
    assert before.points["client_share_of_gap"].isna().all()
    assert "No calibration of the client's own cost" in before.page.read_text()
    cal = Calibration(sweep="fixed", concurrency=2048, lines=4096, cpu_seconds=1.0, wall_seconds=1.2,
                      cpu_per_request=1.0 / 4096, wall_per_wave=0.6, cores=2, measured_at="2026-01-01T00:00:00+00:00",
                      latency=4.15, time_scale=SCALE)
    save_calibration(cal, fixed_records)
    report = build_report(fixed_records, tmp_path / "after")
    shares = report.points["client_share_of_gap"]
    assert shares.notna().any() and ((shares.dropna() >= 0) & (shares.dropna() <= 1)).all()
    page = report.page.read_text()
    assert "Client CPU per request on this machine: 244 us" in page and "client_share_of_gap" in page


def test_an_interval_of_wall_times_never_goes_below_zero():
    from scoring_lib.points import mean_interval

    mean, low, high = mean_interval([0.17, 0.23])  # two repeats: t = 12.7, the linear interval reached -0.13 s
    assert 0 < low < 0.17 and 0.23 < high and mean == 0.2
    assert all(map(math.isnan, mean_interval([0.2])[1:]))
