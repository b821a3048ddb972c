"""Two sets of runs compared setting by setting: the ratio of mean wall times B/A with its 95%
interval, and which changes are beyond the noise (asv's rule: beyond a factor, here 1.10, and an
interval that excludes 1). A side is a record folder, a sweep's name, or a commit the records carry."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import paths
from .errors import ReportError
from .kinds import Number
from .page import make_table, md_text, replaced_whole
from .points import _point_name, measured_runs, t_975
from .runs import read_records, select_records, sweeps_in, tidy_frame

FACTOR = 1.10
RATIO_INTERVAL = "95% t-interval of the ratio of means (log scale, Welch)"


def _side(spec: str | os.PathLike, runs_dir: Path) -> tuple[str, list]:
    """(label, records) for one side: a folder of records (as the shell names it, or from the project
    root as notebooks name files), a sweep in `runs_dir`, or a commit prefix."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        path = paths.resolve(spec)
    if path.is_dir():
        records = read_records(path)
        return paths.shown(path), select_records(records, None, adhoc=True)
    records = read_records(runs_dir) if runs_dir.is_dir() else []
    if str(spec) in sweeps_in(records):
        return f"sweep {spec}", select_records(records, [str(spec)])
    spec = str(spec)
    by_commit = [r for r in records if len(spec) >= 7 and (r.provenance.commit or "").startswith(spec)]
    if by_commit:
        return f"commit {spec}", by_commit
    raise ReportError(f"{spec!r} is neither a folder of records, nor a sweep, nor a commit recorded in "
                      f"{paths.shown(runs_dir)}")


def _per_setting(records: list) -> pd.DataFrame:
    runs = measured_runs(tidy_frame(records))
    if runs.empty:
        return pd.DataFrame(columns=["point_id", "n", "mean", "sd"])
    runs = runs.assign(point_id=runs["point_id"].fillna(runs.apply(_point_name, axis=1)))
    g = runs.groupby("point_id")["scoring_seconds"]
    return pd.DataFrame({"n": g.size(), "mean": g.mean(), "sd": g.std(ddof=1)}).reset_index()


def ratio_interval(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """(B/A, low, high): the ratio of mean wall times with its 95% interval, from the log ratio's
    standard error and Welch's degrees of freedom; no interval when a side ran once."""
    ratio = b["mean"] / a["mean"]
    if a["n"] < 2 or b["n"] < 2:
        return ratio, math.nan, math.nan
    va = (a["sd"] / a["mean"]) ** 2 / a["n"]
    vb = (b["sd"] / b["mean"]) ** 2 / b["n"]
    if va + vb == 0:
        return ratio, ratio, ratio
    df = (va + vb) ** 2 / (va ** 2 / (a["n"] - 1) + vb ** 2 / (b["n"] - 1))
    half = t_975(df) * math.sqrt(va + vb)
    return ratio, ratio * math.exp(-half), ratio * math.exp(half)


def _verdict(ratio: float, low: float, high: float, factor: float) -> str:
    if ratio > factor and not low <= 1:
        return "slower"
    if ratio < 1 / factor and not high >= 1:
        return "faster"
    return "within noise" if abs(math.log(ratio)) > math.log(factor) else f"within {factor - 1:.0%}"


@dataclass
class Comparison:
    a: str
    b: str
    table: pd.DataFrame  # one row per setting found on both sides
    factor: float = FACTOR
    only: dict = field(default_factory=dict)  # settings found on one side only
    figure: Path | None = None
    page: Path | None = None

    @property
    def flagged(self) -> pd.DataFrame:
        return self.table[self.table["change"].isin(["slower", "faster"])]

    def regressions(self, above: float) -> pd.DataFrame:
        """Settings slower than `above` x, beyond the noise (an interval that excludes 1, or none known)."""
        above = Number(1).check("the regression threshold (--fail-above)", above)  # nan: a gate that never fires
        t = self.table
        return t[(t["ratio"] > above) & ~(t["ratio_low"] <= 1)]

    def lines(self) -> list[str]:
        out = [f"compare: B = {self.b} over A = {self.a}, {len(self.table)} settings on both sides, "
               f"{len(self.flagged)} changed beyond the noise (factor {self.factor:g}; {RATIO_INTERVAL})"]
        for _, r in self.table.iterrows():
            ci = "" if pd.isna(r["ratio_low"]) else f" [{r['ratio_low']:.3f}, {r['ratio_high']:.3f}]"
            out.append(f"  {r['point_id']}: {r['ratio']:.3f}x{ci} {r['change']}")
        for side, names in self.only.items():
            if names:
                out.append(f"  only in {side}: {', '.join(names)}")
        return out


def compare_runs(a: str | os.PathLike, b: str | os.PathLike, runs_dir: str | os.PathLike | None = None,
                 factor: float = FACTOR, out_dir: str | os.PathLike | None = None) -> Comparison:
    """Compare B with A per setting; write compare.md and compare.png into out_dir (default
    results/report/compare) when it is given or defaulted, replacing it whole."""
    where = paths.resolve(runs_dir) if runs_dir is not None else paths.RUNS
    (label_a, rec_a), (label_b, rec_b) = _side(a, where), _side(b, where)
    pa, pb = _per_setting(rec_a), _per_setting(rec_b)
    both = pa.merge(pb, on="point_id", suffixes=("_a", "_b"))
    if both.empty:
        raise ReportError(f"no setting measured on both sides ({label_a}: {len(pa)} settings, "
                          f"{label_b}: {len(pb)})")
    rows = []
    for _, r in both.iterrows():
        sa = pd.Series({"n": r["n_a"], "mean": r["mean_a"], "sd": r["sd_a"]})
        sb = pd.Series({"n": r["n_b"], "mean": r["mean_b"], "sd": r["sd_b"]})
        ratio, low, high = ratio_interval(sa, sb)
        rows.append({"point_id": r["point_id"], "runs_a": r["n_a"], "mean_a": r["mean_a"], "runs_b": r["n_b"],
                     "mean_b": r["mean_b"], "ratio": ratio, "ratio_low": low, "ratio_high": high,
                     "change": _verdict(ratio, low, high, factor)})
    table = pd.DataFrame(rows).sort_values("ratio", ascending=False).reset_index(drop=True)
    only = {label_a: sorted(set(pa["point_id"]) - set(pb["point_id"])),
            label_b: sorted(set(pb["point_id"]) - set(pa["point_id"]))}
    result = Comparison(label_a, label_b, table, factor, only)
    _write(result, paths.resolve(out_dir) if out_dir is not None else paths.REPORT / "compare")
    return result


def _write(c: Comparison, out: Path) -> None:
    from .plots import compare_ratios  # optional heavy dependency: matplotlib, for the one figure

    with replaced_whole(out) as new:
        fig = compare_ratios(c.table, c.factor, f"B = {c.b} over A = {c.a}")
        fig.savefig(new / "compare.png", dpi=110)
        text = "\n".join([f"# Compare: {md_text(c.b)} over {md_text(c.a)}", "", md_text(c.lines()[0]), "",
                          make_table(c.table, ".3g").markdown, "", "![compare](compare.png)", ""])
        (new / "compare.md").write_text(text, encoding="utf-8")
    c.figure, c.page = out / "compare.png", out / "compare.md"
