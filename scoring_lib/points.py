"""Settings ("points") from runs: one row per setting with its repeats summarized, a 95% interval
on its mean wall time, and which setting is fastest only when the intervals say so."""

from __future__ import annotations

import math

import pandas as pd

POINT_KEYS = ["point_id", "engine", "threads", "workers", "max_concurrent_tasks", "concurrency", "connector_limit",
              "sessions", "effective_pool", "requested", "service_latency", "service_capacity", "time_scale"]
BOUND_NOTES = ("bound_source",)  # optional tidy columns that say where a bound came from
INTERVAL = "95% t-interval of the mean over repeats (log scale: never below zero)"
# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom; 1.96 beyond the table.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_975(df: float) -> float:
    """The t quantile for `df` degrees of freedom (the nearest tabled df at or below it)."""
    if df < 1 or math.isnan(df):
        return math.nan
    return T_975[max(k for k in T_975 if k <= df)] if df <= 120 else 1.96


def mean_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the mean, and the t-based 95% interval of the mean taken on the log scale (a
    wall time is positive and its spread multiplicative: on the linear scale two repeats of 0.17 and
    0.17 + 0.06 s gave an interval from -0.13 s); no interval from fewer than 2 values."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    if v.empty:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2 or (v <= 0).any():
        return mean, math.nan, math.nan
    logs = v.map(math.log)
    half = t_975(len(v) - 1) * float(logs.std(ddof=1)) / math.sqrt(len(v))
    centre = float(logs.mean())
    return mean, math.exp(centre - half), math.exp(centre + half)


def measured_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Finished, non-warm-up runs: what figures and tables are made of."""
    if df.empty:
        return df
    return df[(df["status"] == "ok") & (~df["warmup"].astype(bool))].copy()


def _point_name(r) -> str:
    """A setting's name for runs made outside a sweep, spelled as sweep point ids are."""
    def whole(v):
        return "default" if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
    workers = f"-w{whole(r['workers'])}" if r["engine"] == "ray" else ""
    c = "auto" if r.get("concurrency") == "auto" else whole(r["max_concurrent_tasks"])
    return f"{r['engine']}{workers}-t{whole(r['threads'])}-c{c}-pool{r['connector_limit']}"


def is_auto(points: pd.DataFrame) -> pd.Series:
    """Settings run with `max_concurrent_tasks: auto` (their max_concurrent_tasks is the ceiling)."""
    if "concurrency" not in points:
        return pd.Series(False, index=points.index)
    return points["concurrency"] == "auto"


def in_flight(points: pd.DataFrame) -> pd.Series:
    """Requests a setting could keep in flight: its final limit (a Ray setting's min(C, workers x threads),
    an `auto` run's end), else C."""
    return pd.to_numeric(points["final_limit"], errors="coerce").fillna(points["max_concurrent_tasks"])


# Where an `auto` run's send rate ended (requests/s) and how often it was cut: in records since the rate
# became a controlled variable; older records, and runs that never limited their rate, have none.
RATE_COLUMNS = ["final_rate", "rate_cuts"]
SUMMARY_COLUMNS = ["runs", "wall_median", "wall_min", "wall_max", "wall_mean", "ci95_low", "ci95_high",
                   "bound_seconds", "efficiency", "startup_median", "final_limit", *RATE_COLUMNS]


def _median(values) -> float:
    """The median of a column's numbers, missing ones (None, text) left out."""
    return pd.to_numeric(values, errors="coerce").median()


def rate_columns(points: pd.DataFrame) -> list[str]:
    """The rate columns a table shows: both when some setting has a final rate or a cut, else none."""
    have = [pd.to_numeric(points[c], errors="coerce").fillna(0).gt(0).any() for c in RATE_COLUMNS if c in points]
    return RATE_COLUMNS if any(have) else []


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: median, min, max and mean wall time over its repeats with the mean's 95%
    interval, beside its bound."""
    runs = measured_runs(df)
    if runs.empty:
        return pd.DataFrame(columns=POINT_KEYS + SUMMARY_COLUMNS)
    runs = runs.copy()
    runs["point_id"] = runs["point_id"].fillna(runs.apply(_point_name, axis=1))
    runs["concurrency"] = runs["concurrency"].fillna("fixed")
    keys = [k for k in POINT_KEYS if k in runs]
    grouped = runs.groupby(keys, dropna=False)
    out = grouped.agg(runs=("scoring_seconds", "size"), wall_median=("scoring_seconds", "median"),
                      wall_min=("scoring_seconds", "min"), wall_max=("scoring_seconds", "max"),
                      bound_seconds=("bound_seconds", "median"), startup_median=("startup_seconds", "median"),
                      latency_p50=("latency_p50", "median"), latency_p90=("latency_p90", "median"),
                      latency_p99=("latency_p99", "median"), latency_s=("latency_s", "median"),
                      # where an `auto` run's limit and rate ended (a fixed run's limit is its C), median over repeats
                      final_limit=("final_limit", _median),
                      **{c: (c, _median) for c in RATE_COLUMNS if c in runs}).reset_index()
    intervals = grouped["scoring_seconds"].apply(lambda v: pd.Series(mean_interval(v), index=["wall_mean", "ci95_low",
                                                                                              "ci95_high"]))
    out = out.merge(intervals.unstack().reset_index(), on=keys, how="left")
    for col in BOUND_NOTES:  # where each bound came from, when the records say (e.g. configured / probed)
        if col in runs:
            out = out.merge(grouped[col].first().reset_index(), on=keys, how="left")
    out["efficiency"] = out["bound_seconds"] / out["wall_median"]
    fixed = out["concurrency"] != "auto"  # a fixed setting's limit is its C (older records do not say so)
    out.loc[fixed, "final_limit"] = out.loc[fixed, "final_limit"].fillna(out.loc[fixed, "max_concurrent_tasks"])
    return out.sort_values(["engine", "workers", "threads", "max_concurrent_tasks", "connector_limit"],
                           na_position="first").reset_index(drop=True)


def ties_with_fastest(points: pd.DataFrame) -> pd.DataFrame:
    """The settings whose 95% interval overlaps the fastest one's (the fastest first); a setting
    without an interval (one run) can be told apart from none."""
    ranked = points.sort_values("wall_median").reset_index(drop=True)
    if ranked.empty:
        return ranked
    best = ranked.iloc[0]
    if pd.isna(best.get("ci95_high")):
        return ranked
    others = ranked.iloc[1:]
    overlap = others["ci95_low"].isna() | (others["ci95_low"] <= best["ci95_high"])
    return pd.concat([ranked.iloc[:1], others[overlap]])


def _names(rows: pd.DataFrame, most: int = 6) -> str:
    names = [f"`{p}`" for p in rows["point_id"].astype(str)]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _bound_text(best, wall: float) -> str:
    bound = best.get("bound_seconds")
    if bound is None or pd.isna(bound) or bound <= 0:
        return "; no bound known for it"
    source = best.get("bound_source")
    src = f", {source}" if isinstance(source, str) and source else ""
    return (f"; its bound is {bound:.3g} s{src}, so it took {wall / bound:.2f}x the bound "
            f"({(wall / bound - 1) * 100:+.0f}%)")


def fastest_line(points: pd.DataFrame, time_scale: float = 1.0) -> str:
    """The fastest setting, named only when its 95% interval clears every other's; else which tie."""
    if points.empty:
        return "No measured runs."
    tied = ties_with_fastest(points)
    best = tied.iloc[0]
    wall = float(best["wall_median"])
    full = f" ({wall / time_scale:.3g} s at full scale)" if time_scale != 1 else ""
    runs = int(best["runs"])
    if len(tied) == 1:
        text = f"**Fastest setting: `{best['point_id']}`**, {wall:.3g} s median over {runs} run(s){full}"
        if len(points) > 1:
            text += (f", its {INTERVAL} [{best['ci95_low']:.3g}, {best['ci95_high']:.3g}] s clears the next "
                     "setting's")
        return text + _bound_text(best, wall) + "."
    why = ("one run per setting gives no interval" if pd.isna(best.get("ci95_high"))
           else f"their {INTERVAL} overlap the fastest one's [{best['ci95_low']:.3g}, {best['ci95_high']:.3g}] s")
    wide = " (with 2 repeats an interval is wide: t = 12.7)" if runs == 2 else ""
    return (f"**No single fastest setting: {len(tied)} tie.** {_names(tied)}: {why}{wide}. The lowest median is "
            f"`{best['point_id']}`, {wall:.3g} s over {runs} run(s){full}" + _bound_text(best, wall) + ".")
