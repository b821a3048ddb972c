"""The performance report: every run record as one tidy table, figures beside the physical limit,
and the seed study's figures explained (or not) by the measurements.

With no sweep of one's own recorded, the report shows the committed reference and says so."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import paths
from .calibration import Calibration, calibration_note, gap_explained, load_calibration
from .errors import ReportError
from .page import make_table, render, replaced_whole
from .points import (INTERVAL, fastest_line, is_auto, measured_runs, rate_columns,  # noqa: F401 - is_auto re-exported
                     summarize)
from .runs import is_measured, read_records, select_records, sweeps_in, tidy_frame
from .seed_check import bound_sources_line, seed_from_profile, seed_table, verdicts  # noqa: F401 - re-exported
from .service import load_profile
from .studies.seed import SEED

SERVICE_KEYS = ["service_kind", "service_latency", "service_capacity", "latency_dist", "time_scale"]
MAKE_YOUR_OWN = "`python -m scoring_lib sweep quick` then `python -m scoring_lib report`"

CAPTIONS = {
    "wall_vs_concurrency": "Wall time per setting, one panel per engine, beside its bound (the staircase "
                           "`ceil(N / min(pool, C, capacity)) x latency`). Asyncio: against C, one line per "
                           "pool; the pool-100 line stays flat above C = 100, the seed's plateau; an `auto` "
                           "setting is a star at the limit it ended at (it has no single C). Ray: one column per "
                           f"workers x threads. Markers are medians; bars span the {INTERVAL} (the fastest and "
                           "slowest repeat where a setting ran once).",
    "ray_heatmap": "Ray: median wall time over workers x threads, one map per (C, pool), colour from zero.",
    "efficiency": "Efficiency (bound / measured) of every setting, fastest setting at the top.",
    "latency_percentiles": "Request latency as the client saw it (service time plus queueing): p50, p90 and "
                           "p99 per setting, fastest setting at the top.",
    "inflight_timeline": "Requests in flight over time, as the client saw them (the service queues what is "
                         "above its capacity): asyncio at its highest C with pool 100 and with the pool lifted, "
                         "the fastest Ray run, and the fastest `auto` run with its limit over time (dotted) and, "
                         "below, its send rate over time (absent while unbounded, and in records older than it).",
}


@dataclass
class Report:
    out_dir: Path
    runs: pd.DataFrame      # every selected record, warm-ups and failures included
    points: pd.DataFrame    # one row per setting, fastest first
    seed: pd.DataFrame
    verdicts: list
    sweeps: list = field(default_factory=list)
    adhoc: bool = False
    time_scale: float = 1.0
    figures: dict = field(default_factory=dict)
    page: Path | None = None
    html: Path | None = None
    reference: str = ""     # set when the records are the committed reference, not the user's own
    calibrations: dict = field(default_factory=dict)  # sweep -> Calibration: the client's own cost, measured

    def fastest(self) -> str:
        return fastest_line(self.points, self.time_scale)

    def line(self) -> str:
        where = paths.shown(self.page) if self.page else "(not written)"
        html = f" and {paths.shown(self.html)}" if self.html else ""
        ref = (f" (the committed reference: no sweep of your own recorded yet; make one with "
               f"{MAKE_YOUR_OWN.replace('`', '')})" if self.reference else "")
        return (f"report: {len(measured_runs(self.runs))} runs, {len(self.points)} settings, "
                f"{len(self.figures)} figures from {_scope(self.sweeps, self.adhoc)}{ref} -> {where}{html}")


def _scope(sweeps: list, adhoc: bool) -> str:
    parts = [f"sweep{'s' if len(sweeps) > 1 else ''} {', '.join(sweeps)}"] if sweeps else []
    return " and ".join(parts + (["ad-hoc runs"] if adhoc else [])) or "nothing"


def _whole_or(value, missing: str) -> str:
    return missing if value is None or pd.isna(value) else f"{float(value):.0f}"


def _service_text(row) -> str:
    if row["service_kind"] == "external":
        return f"external service {row.get('service_url') or '(url not recorded)'}"
    kind = "simulated" if row["service_kind"] == "simulated" else f"{row['service_kind']} simulated"
    return (f"{kind} service (latency {row['service_latency']} s "
            f"{row['latency_dist'] or ''}, capacity {_whole_or(row['service_capacity'], 'unknown')}) at time scale "
            f"{row['time_scale'] if not pd.isna(row['time_scale']) else 1:g}")


def check_one_service(runs: pd.DataFrame) -> None:
    """Refuse runs against different services or time scales: one figure would mix their seconds."""
    keyed = runs.assign(service_url=runs["service_url"].where(runs["service_kind"] == "external", ""))
    keys = [k for k in SERVICE_KEYS + ["service_url"] if k in keyed]
    groups = keyed[keys].astype(str).drop_duplicates()
    if len(groups) > 1:
        described = "; ".join(sorted({_service_text(r) for _, r in keyed.loc[groups.index].iterrows()}))
        raise ReportError(f"these runs were measured against {len(groups)} different services or time scales "
                          f"({described}): report them apart, e.g. with --sweep NAME")


def _timeline_records(records: list) -> list:
    """Runs to draw in flight over time: asyncio at its highest fixed C with pool 100 (the plateau)
    and with the pool lifted, the fastest fixed Ray run, and the fastest `auto` run (with its limit)."""
    ok = [r for r in records if is_measured(r) and r.timeline and r.scoring_seconds is not None]
    fixed = [r for r in ok if r.concurrency != "auto"]
    picks = []
    for pooled in (True, False):
        asy = [r for r in fixed if r.engine == "asyncio" and (r.connector_limit == 100) == pooled]
        if asy:
            picks.append(max(asy, key=lambda r: (r.max_concurrent_tasks or 0, -r.scoring_seconds)))
    for group in ([r for r in fixed if r.engine == "ray"], [r for r in ok if r.concurrency == "auto"]):
        if group:
            picks.append(min(group, key=lambda r: r.scoring_seconds))
    return picks


def choose_sweeps(records: list, sweeps, adhoc: bool, where: Path) -> list[str]:
    """Which sweeps to report: the named ones ('all' for every one), else the one run last."""
    available = sweeps_in(records)
    if sweeps is None:
        return [] if adhoc else available[-1:]
    if isinstance(sweeps, str):
        sweeps = [sweeps]
    if list(sweeps) == ["all"]:
        return available
    unknown = [s for s in sweeps if s not in available]
    if unknown:
        raise ReportError(f"no records of sweep {unknown[0]!r} in {paths.shown(where)} (recorded sweeps: "
                          f"{', '.join(available) or 'none'})")
    return list(dict.fromkeys(sweeps))


def _select(runs_dir, sweeps, adhoc: bool) -> tuple[list, list[str], Path, str]:
    """(records, sweeps, folder, reference note): the user's records, or, when none was asked for
    and none is recorded in results/runs, the committed reference, said so."""
    mine = paths.resolve(runs_dir) if runs_dir is not None else paths.RUNS
    records = read_records(mine) if Path(mine).is_dir() else []
    if runs_dir is None and sweeps is None and not adhoc and not sweeps_in(records):
        ref = paths.REFERENCE_RUNS
        note = (f"**This is the committed reference**, not a run of yours: no sweep is recorded in "
                f"{paths.shown(mine)} yet, so these are the records in {paths.shown(ref)}. Make your own with "
                f"{MAKE_YOUR_OWN}.")
        records = read_records(ref) if ref.is_dir() else []
        return records, sweeps_in(records), ref, note
    return records, choose_sweeps(records, sweeps, adhoc, mine), mine, ""


def build_report(runs_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                 how: str | None = None, sweeps: list[str] | str | None = None, adhoc: bool = False,
                 profile=None) -> Report:
    """Report on the records of the named sweeps (default: the sweep run last) and, only if `adhoc`,
    of runs made outside any sweep. Writes PNGs, runs.csv, points.csv, report.md and a self-contained
    report.html into out_dir (default results/report/, which git ignores), replacing it whole.

    With no `runs_dir` and no sweep in results/runs, reports the committed reference and says so.
    Raises ReportError when there is no measured run to report, or when the runs were measured
    against different services or time scales. `profile` (a ServiceProfile, or a profile's name or path,
    relative to the project root, as notebooks name files) tests the seed's hypothesis on its capacity."""
    if isinstance(profile, (str, os.PathLike)):
        profile = load_profile(profile, base=paths.ROOT)  # before any work: a wrong name is a one-line error
    out = paths.resolve(out_dir) if out_dir is not None else paths.REPORT
    records, chosen, where, reference = _select(runs_dir, sweeps, adhoc)
    selected = select_records(records, chosen, adhoc) if (chosen or adhoc) else []
    runs = tidy_frame(selected)
    measured = measured_runs(runs)
    if measured.empty:
        if chosen or adhoc:
            raise ReportError(f"no measured runs to report in {paths.shown(where)} from {_scope(chosen, adhoc)}"
                              + _failed_text(runs))
        raise ReportError(f"no sweep recorded in {paths.shown(where)}: run one first, e.g. `python -m scoring_lib "
                          "sweep quick` (plain `score` runs are left out unless you pass --adhoc)")
    check_one_service(measured)
    scale = float(measured["time_scale"].fillna(1.0).iloc[0])
    points = summarize(runs).sort_values("wall_median").reset_index(drop=True)
    cpus = int(runs["cpu_count"].dropna().min()) if runs["cpu_count"].notna().any() else None
    said = verdicts(points) + [seed_from_profile(profile)[0]]
    calibrations = {name: cal for name in chosen if (cal := load_calibration(where, name)) is not None}
    points["client_share_of_gap"] = client_share(points, calibrations)
    report = Report(out, runs, points, seed_table(points, cpus), said, chosen, adhoc, scale, reference=reference,
                    calibrations=calibrations)
    with replaced_whole(out) as new:
        runs.to_csv(new / "runs.csv", index=False)
        points.to_csv(new / "points.csv", index=False)
        _draw(report, new, _timeline_records(selected))
        markdown, html = render(_context(report, how), {n: new / p.name for n, p in report.figures.items()},
                                CAPTIONS)
        (new / "report.md").write_text(markdown, encoding="utf-8")
        (new / "report.html").write_text(html, encoding="utf-8")
    report.page, report.html = out / "report.md", out / "report.html"
    return report


def _failed_text(runs: pd.DataFrame) -> str:
    """Why nothing was measured, for the one-line error: the failed runs' count and the first failure."""
    if runs.empty or "status" not in runs:
        return ""
    failed = runs[runs["status"] == "failed"]
    if failed.empty:
        return ""
    first = failed.iloc[0]
    text = " ".join(str(first.get("failure") or "no reason recorded").split())[:200]
    return f": all {len(failed)} runs failed (first: {first.get('point_id')}: {text})"


def client_share(points: pd.DataFrame, calibrations: dict[str, Calibration]) -> pd.Series:
    """Per setting, the share of its gap to the bound that the client's own CPU explains (the sweep's
    calibration, see calibration.gap_explained); NaN without a calibration or without a gap. Several
    sweeps: the calibration measured at the largest C speaks for all (it is the costliest per wave)."""
    if not calibrations:
        return pd.Series(float("nan"), index=points.index)
    cal = max(calibrations.values(), key=lambda c: c.concurrency)

    def share(r) -> float:
        loops = r["workers"] if r["engine"] == "ray" else r["threads"]
        values = (r["max_concurrent_tasks"], r["requested"], r["latency_s"], r["wall_median"], r["bound_seconds"])
        if any(pd.isna(v) for v in values):
            return float("nan")
        c, lines, latency, wall, bound = values
        return gap_explained(cal, int(c), int(lines), float(latency), float(wall), float(bound),
                             int(loops) if pd.notna(loops) else 1)

    return points.apply(share, axis=1) if not points.empty else pd.Series(dtype=float)


def _draw(report: Report, folder: Path, timeline_records: list) -> None:
    """Every figure as a PNG in `folder`; report.figures names where each will be once the folder is in place."""
    import matplotlib.pyplot as plt  # optional heavy dependency: drawing only

    from . import plots  # matplotlib comes with it

    points, scale = report.points, report.time_scale
    figures = {
        "wall_vs_concurrency": lambda: plots.wall_vs_concurrency(points, scale),
        "ray_heatmap": lambda: plots.ray_heatmap(points, scale),
        "efficiency": lambda: plots.efficiency(points),
        "latency_percentiles": lambda: plots.latency_percentiles(points, scale),
        "inflight_timeline": lambda: plots.inflight_timeline(timeline_records, scale),
    }
    for name, draw in figures.items():
        fig = draw()
        fig.savefig(folder / f"{name}.png", dpi=110)
        plt.close(fig)
        report.figures[name] = report.out_dir / f"{name}.png"


def _made_by(runs: pd.DataFrame) -> str:
    counts = runs["sweep"].fillna("(ad-hoc)").value_counts().to_dict()
    return "; ".join(f"`{name}` ({n} runs" + (f", `python -m scoring_lib sweep notebooks/grids/{name}.yaml`)"
                                              if name != "(ad-hoc)" else ", plain `score` runs)")
                     for name, n in counts.items())


def _calibration_text(calibrations: dict) -> str:
    """What the harness costs, as measured by each sweep before its points, and what the table's
    `client_share_of_gap` means; or that no calibration was recorded (older sweeps)."""
    if not calibrations:
        return ("No calibration of the client's own cost was recorded for these sweeps (sweeps before it existed, "
                "or `calibration_lines: 0`): the gap between a setting and its bound is not split into client and "
                "service here.")
    notes = " ".join(f"Sweep `{name}`: {calibration_note(cal)}" for name, cal in calibrations.items())
    return (notes + " `client_share_of_gap` is the share of each setting's gap to its bound that this client CPU "
            "explains (waves x requests per wave x CPU per request, over its event loops): near 1, the gap is the "
            "harness on this machine, not the service.")


def _context(r: Report, how: str | None) -> dict:
    """Everything the page templates show, each table formatted once for both pages."""
    runs = measured_runs(r.runs)
    failed = r.runs[r.runs["status"] == "failed"]
    cols = ["point_id", "final_limit", *rate_columns(r.points), "runs", "wall_median", "ci95_low", "ci95_high",
            "wall_min", "wall_max",
            "bound_seconds", *[c for c in ("bound_source",) if c in r.points], "efficiency", "client_share_of_gap",
            "startup_median",
            "latency_p50", "latency_p99"]
    pts = r.points[cols].copy()
    if r.time_scale != 1:
        pts.insert(cols.index("wall_median") + 1, "wall_full_scale", pts["wall_median"] / r.time_scale)
    scale_note = (f"All times are at time scale {r.time_scale:g}: the service's latency was multiplied by "
                  f"{r.time_scale:g}, so divide by {r.time_scale:g} for full-scale seconds (figures show them on "
                  "their right-hand axis)." if r.time_scale != 1 else "All times are full-scale seconds.")
    most = int(r.points["runs"].max()) if not r.points.empty else 0
    interval_note = (f"Intervals (`ci95_low`, `ci95_high`) are the {INTERVAL}; a setting run once has none"
                     + (", and with 2 repeats an interval is wide (t = 12.7)." if most <= 2 else "."))
    return {
        "fastest": r.fastest(), "reference": r.reference,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"), "n_runs": len(runs),
        "scope": _scope(r.sweeps, r.adhoc), "n_failed": len(failed), "service": _service_text(runs.iloc[0]),
        "scale_note": scale_note, "made": _made_by(runs), "how": how or "`python -m scoring_lib report`",
        "interval_note": interval_note, "calibration_note": _calibration_text(r.calibrations), "bound_sources": bound_sources_line(r.points), "hypothesis": SEED.hypothesis,
        "seed_table": make_table(r.seed.drop(columns=["points"]) if not r.seed.empty else r.seed, ".2f"),
        "verdicts": r.verdicts, "points_table": make_table(pts),
        "machines_table": make_table(runs[["hostname", "cpu_count", "os", "python"]].drop_duplicates()),
        "versions_table": make_table(runs[["scoring_workbench", "aiohttp", "ray", "git_commit"]].drop_duplicates()),
        "failed_table": make_table(failed[["point_id", "failure"]]) if not failed.empty else None,
    }
