"""Figures for the report and notebooks; each function takes tidy data and returns a Figure."""

from __future__ import annotations

import math

import pandas as pd

from .bounds import bound_seconds
from .mpl import plt
from .points import is_auto

MEASURED = "scoring_seconds"


def _pool_label(row) -> str:
    pool = row["effective_pool"]
    return "pool unlimited (auto)" if pool is None or (isinstance(pool, float) and math.isinf(pool)) \
        else f"pool {int(pool)}"


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _spread(g: pd.DataFrame) -> list:
    """Error bars around each median: the 95% interval where a setting has one (2+ repeats), else the
    fastest and slowest repeat."""
    low = g["ci95_low"].fillna(g["wall_min"]) if "ci95_low" in g else g["wall_min"]
    high = g["ci95_high"].fillna(g["wall_max"]) if "ci95_high" in g else g["wall_max"]
    return [(g["wall_median"] - low).clip(lower=0), (high - g["wall_median"]).clip(lower=0)]


def time_axis(ax, time_scale: float = 1.0, what: str = "scoring-phase wall time", axis: str = "y") -> None:
    """Label a time axis with its time scale and, when scaled, add full-scale seconds opposite."""
    scaled = time_scale not in (None, 1, 1.0)
    label = f"{what} (s at time scale {time_scale:g})" if scaled else f"{what} (s)"
    (ax.set_ylabel if axis == "y" else ax.set_xlabel)(label)
    if scaled:
        fns = (lambda s: s / time_scale, lambda s: s * time_scale)
        sec = ax.secondary_yaxis("right", functions=fns) if axis == "y" else \
            ax.secondary_xaxis("top", functions=fns)
        (sec.set_ylabel if axis == "y" else sec.set_xlabel)(f"{what}, full scale (s)")


def _bound_label(g: pd.DataFrame) -> str:
    source = g["bound_source"].dropna().unique() if "bound_source" in g else []
    return "bound" + (f" ({', '.join(map(str, source))})" if len(source) else "")


def _bound_staircase(g: pd.DataFrame, cs: list[int]) -> tuple[list[int], list[float]] | None:
    """The bound at every C between the series' first and last point: a staircase, not a line."""
    r = g.iloc[0]
    if _is_missing(r.get("latency_s")) or _is_missing(r.get("requested")) or "bound_seconds" not in g:
        return None
    lo, hi = min(cs), max(cs)
    xs = sorted(set(range(lo, hi + 1, max(1, (hi - lo) // 2000))) | set(cs))
    cap = None if _is_missing(r.get("service_capacity")) else int(r["service_capacity"])
    try:
        ys = [bound_seconds(int(r["requested"]), float(r["latency_s"]), float(r["effective_pool"]), c, cap)
              for c in xs]
    except (TypeError, ValueError):
        return None
    return xs, ys


def wall_vs_concurrency(points: pd.DataFrame, time_scale: float = 1.0) -> plt.Figure:
    """Median wall time per setting, one panel per engine, each beside its bound drawn as steps."""
    engines = [e for e in ("asyncio", "ray") if (points["engine"] == e).any()] or ["asyncio"]
    n_ray = int((points["engine"] == "ray").sum())
    widths = [2 if e == "asyncio" else max(1.0, n_ray / 6) for e in engines]
    fig, axes = plt.subplots(1, len(engines), figsize=(3 * sum(widths) + 2, 5), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, engine in zip(axes[0], engines):
        pts = points[points["engine"] == engine].copy()
        if engine == "asyncio":
            _asyncio_panel(ax, pts)
        else:
            _ray_panel(ax, pts)
        ax.grid(alpha=0.3)
    # The panels share one y axis: its range is set once every panel is drawn (set per panel, the first
    # one's range froze it, and slower Ray settings fell off the top unseen).
    top = max([float(v) for col in ("wall_max", "ci95_high", "wall_median", "bound_seconds") if col in points
               for v in pd.to_numeric(points[col], errors="coerce").dropna()] or [1.0])
    axes[0][0].set_ylim(0, top * 1.08)
    time_axis(axes[0][0], time_scale)
    if time_scale not in (None, 1, 1.0):
        time_axis(axes[0][-1], time_scale)
        axes[0][-1].set_ylabel("")
        if len(engines) > 1:
            for child in axes[0][0].child_axes:
                child.remove()
    fig.suptitle("Wall time per setting beside its bound ceil(N / min(pool, C, capacity)) x latency")
    fig.tight_layout()
    return fig


def _auto_x(r) -> float:
    """Where an `auto` setting sits on a C axis: the limit it ended at (its ceiling if not recorded)."""
    limit = r.get("final_limit")
    return float(r["max_concurrent_tasks"] if _is_missing(limit) else max(1.0, float(limit)))


def _asyncio_panel(ax, asy: pd.DataFrame) -> None:
    ax.set_title("asyncio: wall time vs max_concurrent_tasks")
    if asy.empty:
        ax.text(0.5, 0.5, "no asyncio runs recorded", ha="center", va="center", transform=ax.transAxes)
        return
    auto = asy[is_auto(asy)]
    asy = asy[~is_auto(asy)].copy()
    # (apply on no rows gives a frame, not a column: a report of `auto` runs only has no fixed setting)
    asy["series"] = asy.apply(lambda r: f"{int(r['sessions'] or 1)} session(s), {_pool_label(r)}", axis=1) \
        if not asy.empty else ""
    for i, (name, g) in enumerate(sorted(asy.groupby("series"), key=lambda kv: kv[0])):
        g = g.sort_values("max_concurrent_tasks")
        color = f"C{i}"
        ax.errorbar(g["max_concurrent_tasks"], g["wall_median"], yerr=_spread(g),
                    marker="o", ls=":", color=color, label=f"{name}: measured", capsize=3)
        cs = [int(c) for c in g["max_concurrent_tasks"]]
        stairs = _bound_staircase(g, cs)
        if stairs:
            ax.step(*stairs, where="post", ls="--", color=color, alpha=0.8, label=f"{name}: {_bound_label(g)}")
    for _, r in auto.iterrows():  # no single C: a star at the limit it ended at, beside the fixed settings
        x = _auto_x(r)
        ax.errorbar([x], [r["wall_median"]], yerr=[list(v) for v in _spread(auto.loc[[r.name]])],
                    marker="*", ms=14, ls="none", color="k", mfc="gold", capsize=3,
                    label=f"auto, {_pool_label(r)}: measured at its final limit {x:.0f} (ceiling "
                          f"{int(r['max_concurrent_tasks'])})")
    ax.set_xscale("log")
    ticks: list[int] = []
    cs = asy["max_concurrent_tasks"] if not asy.empty else auto.apply(_auto_x, axis=1)
    for c in sorted(set(int(c) for c in cs)):
        if not ticks or c / ticks[-1] > 1.15:  # neighbours closer than that would overprint
            ticks.append(c)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("max_concurrent_tasks (C)")
    ax.legend(fontsize=8, loc="best")


def _ray_panel(ax, ray: pd.DataFrame) -> None:
    ray = ray.sort_values(["max_concurrent_tasks", "workers", "threads", "connector_limit"]).reset_index(drop=True)
    ax.set_title("Ray: wall time per workers x threads")
    x = list(range(len(ray)))
    ax.errorbar(x, ray["wall_median"], yerr=_spread(ray),
                fmt="s", color="C3", capsize=3, label="measured")
    ax.hlines(ray["bound_seconds"], [i - 0.4 for i in x], [i + 0.4 for i in x], colors="k", linestyles="--",
              label=_bound_label(ray))
    auto = is_auto(ray)
    ax.set_xticks(x, [f"{int(r['workers'])}x{int(r['threads'])}\n"
                      + (f"auto->{_auto_x(r):.0f}" if auto[i] else f"C{int(r['max_concurrent_tasks'])}")
                      + f"\n{r['connector_limit']}" for i, r in ray.iterrows()], fontsize=7)
    ax.set_xlim(-0.6, len(ray) - 0.4)
    ax.set_xlabel("workers x threads, C (auto->its final limit), per-session pool")
    ax.legend(fontsize=8, loc="best")


def ray_heatmap(points: pd.DataFrame, time_scale: float = 1.0) -> plt.Figure:
    """Ray: median wall time over workers x threads, one map per (C, pool), a shared colour scale from
    zero; each cell annotated with its efficiency."""
    ray = points[points["engine"] == "ray"]
    if ray.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no Ray runs recorded", ha="center", va="center")
        ax.set_axis_off()
        return fig
    ray = ray.assign(c_label=ray["max_concurrent_tasks"].astype(int).astype(str).where(~is_auto(ray), "auto"))
    groups = sorted(ray.groupby(["c_label", "connector_limit"]),
                    key=lambda kv: (kv[0][0] == "auto", int(kv[0][0]) if kv[0][0] != "auto" else 0, str(kv[0][1])))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups) + 1.2, 4.5), squeeze=False)
    vmax = float(ray["wall_median"].max())
    im = None
    for ax, ((c, pool), g) in zip(axes[0], groups):
        wall = g.pivot_table(index="workers", columns="threads", values="wall_median", aggfunc="median")
        eff = g.pivot_table(index="workers", columns="threads", values="efficiency", aggfunc="median")
        im = ax.imshow(wall.values, cmap="viridis_r", aspect="auto", vmin=0, vmax=vmax)
        ax.set_xticks(range(len(wall.columns)), [str(int(t)) for t in wall.columns])
        ax.set_yticks(range(len(wall.index)), [str(int(w)) for w in wall.index])
        ax.set_xlabel("threads per worker")
        ax.set_ylabel("workers")
        ax.set_title(f"C = {c}, pool {pool}")
        for i in range(wall.shape[0]):
            for j in range(wall.shape[1]):
                if not math.isnan(wall.values[i, j]):
                    ax.text(j, i, f"{wall.values[i, j]:.3g} s\neff {eff.values[i, j]:.2f}", ha="center",
                            va="center", fontsize=8,
                            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    scaled = time_scale not in (None, 1, 1.0)
    fig.colorbar(im, ax=list(axes[0]), label="median wall time (s" + (f" at time scale {time_scale:g})"
                                                                      if scaled else ")"))
    fig.suptitle("Ray: workers x threads (median wall; efficiency = bound / wall)")
    return fig


def _legend_outside(ax, **kw) -> None:
    """The legend to the right of the axes, where it covers no bar or marker whatever the data
    (inside, a corner holds the slowest setting's bar or its p99); tight_layout makes room for it."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)


def _fastest_first(points: pd.DataFrame) -> pd.DataFrame:
    """Settings ordered for a horizontal chart: fastest at the top."""
    return points.sort_values("wall_median", ascending=False)


def efficiency(points: pd.DataFrame) -> plt.Figure:
    """Bound / measured per point: 1.0 means the run reached the physical limit."""
    from matplotlib.patches import Patch

    pts = _fastest_first(points)
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(pts) + 1.2)))
    colors = {"asyncio": "C0", "ray": "C3"}
    names = pts["point_id"].astype(str)
    if "bound_source" in pts:  # which figures each bound came from (no bar: no bound, latency unknown)
        names = names + " [" + pts["bound_source"].fillna("unknown").astype(str) + "]"
    ax.barh(names, pts["efficiency"].fillna(0), color=[colors.get(e, "C7") for e in pts["engine"]])
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xlabel("efficiency = bound / measured wall time (1 = at the physical limit)")
    ax.set_xlim(0, 1.1)
    ax.tick_params(axis="y", labelsize=7)
    _legend_outside(ax, handles=[Patch(color=c, label=e) for e, c in colors.items() if (pts["engine"] == e).any()])
    ax.set_title("How close each setting gets to its physical limit (fastest at the top)")
    fig.tight_layout()
    return fig


def latency_percentiles(points: pd.DataFrame, time_scale: float = 1.0) -> plt.Figure:
    """Request latency p50 -> p90 -> p99 per point (seen by the client: service time plus queueing),
    fastest setting at the top."""
    pts = _fastest_first(points)
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(pts) + 1.6)))
    ax.hlines(pts["point_id"], pts["latency_p50"], pts["latency_p99"], color="0.75", lw=2, zorder=1)
    for q, marker in (("latency_p50", "o"), ("latency_p90", "s"), ("latency_p99", "^")):
        ax.scatter(pts[q], pts["point_id"], marker=marker, label=q.replace("latency_", ""), zorder=2)
    if "latency_s" in pts and pts["latency_s"].notna().any():
        ax.axvline(pts["latency_s"].dropna().iloc[0], color="k", lw=1, ls="--", label="service latency")
    time_axis(ax, time_scale, "request latency", axis="x")
    ax.set_xlim(left=0)
    ax.tick_params(axis="y", labelsize=7)
    _legend_outside(ax)
    ax.set_title("Latency percentiles per setting (fastest at the top)", pad=28 if time_scale != 1 else None)
    fig.tight_layout()
    return fig


def _rate_points(rec: dict) -> list[tuple[float, float]]:
    """An `auto` run's send rate over time as (seconds, requests/s), NaN while unbounded; none from
    older records or runs whose rate was never bounded."""
    history = (rec.get("limits") or {}).get("rate_history") or []
    points = [(t, math.nan if v is None else v) for t, v in history]
    return _held_to_end(points, rec) if any(not math.isnan(v) for _, v in points) else []


def _held_to_end(points: list, rec: dict) -> list:
    """A step function recorded at its changes, its last value held to the run's end (else it would
    seem to stop at the last change)."""
    end = rec.get("scoring_seconds")
    if points and isinstance(end, (int, float)) and end > points[-1][0]:
        return [*points, (end, points[-1][1])]
    return points


def _run_label(rec: dict) -> str:
    label = f"{rec['engine']} " + (f"{rec['workers']}x{rec['threads']}" if rec["engine"] == "ray"
                                    else f"{rec['threads']} thread(s)")
    c = "auto" if rec.get("concurrency") == "auto" else rec["max_concurrent_tasks"]
    return label + f", C={c}, pool {rec['connector_limit']}"


def _rate_panel(ax, records: list, colours: dict) -> None:
    """The send rate of the runs that bounded it (an `auto` run's, cut on throttling), in their colours."""
    for i, rec in enumerate(records):
        points = _rate_points(rec)
        if not points:
            continue
        t, v = zip(*points)
        limits = rec.get("limits") or {}
        final, cuts = limits.get("final_rate"), limits.get("rate_cuts")
        label = "send rate (auto)" + (f", ended {final:g}/s" if final is not None else ", ended unbounded") + (
            f", {cuts} cut(s)" if cuts else "")
        ax.step(t, v, where="post", color=colours.get(i), label=label)
    ceiling = next(((r.get("limits") or {}).get("rate_limit") for r in records if _rate_points(r)), None)
    if ceiling:
        ax.axhline(ceiling, color="k", ls="--", lw=1, label=f"--rate-limit {ceiling:g}")
    ax.set_ylabel("send rate\n(requests/s)")  # per second of this run's time: the time axis says its scale
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


def inflight_timeline(records: list, time_scale: float = 1.0) -> plt.Figure:
    """Requests in flight over the scoring phase for a few runs (from their records' timelines); an
    `auto` run's concurrency limit over it (dotted) and, in a panel below, its send rate when it had one."""
    from matplotlib.ticker import MaxNLocator

    # Run records, or their JSON form (notebooks and tests draw hand-made ones).
    records = [rec.to_json() if hasattr(rec, "to_json") else rec for rec in records]
    rated = any(_rate_points(rec) for rec in records)
    fig, axes = plt.subplots(2 if rated else 1, 1, figsize=(8, 6 if rated else 4), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]} if rated else None)
    ax = axes[0][0]
    colours = {}
    for i, rec in enumerate(records):
        tl = rec.get("timeline") or []
        if not tl:
            continue
        t, n = zip(*tl)
        line, = ax.step(t, n, where="post", label=_run_label(rec))
        colours[i] = line.get_color()
        history = _held_to_end([tuple(p) for p in (rec.get("limits") or {}).get("limit_history") or []], rec)
        if history:  # an `auto` run: its concurrency limit over time, in the same colour
            ht, hv = zip(*history)
            ax.step(ht, hv, where="post", ls=":", color=line.get_color(), label="limit (auto)")
    capacity = next(((r.get("service") or {}).get("capacity") for r in records if r.get("service")), None)
    if capacity:
        ax.axhline(capacity, color="k", ls="--", lw=1, label=f"service capacity {capacity}")
    time_axis(ax, time_scale, "time into the scoring phase", axis="x")
    if rated:  # the time axis's label goes under the lowest panel
        _rate_panel(axes[1][0], records, colours)
        axes[1][0].set_xlabel(ax.get_xlabel())
        ax.set_xlabel("")
    ax.set_ylabel("requests in flight")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title("Requests in flight over time" + (" and the send rate" if rated else ""),
                 pad=28 if time_scale != 1 else None)
    fig.tight_layout()
    return fig


def latency_histogram(latencies: list[float], service_latency: float | None = None) -> plt.Figure:
    """Latencies of probe requests, beside the configured mean when known."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(latencies, bins=min(30, max(5, len(latencies) // 2)), color="C0")
    if service_latency:
        ax.axvline(service_latency, color="k", ls="--", label="configured mean")
        ax.legend()
    ax.set_xlabel("request latency (s)")
    ax.set_ylabel("requests")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Latency of {len(latencies)} probe requests")
    fig.tight_layout()
    return fig


def compare_ratios(table: pd.DataFrame, factor: float, title: str) -> plt.Figure:
    """B/A per setting with its 95% interval, beside 1 and the noise factor either way."""
    t = table.sort_values("ratio")
    fig, ax = plt.subplots(figsize=(8, max(3, 0.3 * len(t) + 1.4)))
    low = (t["ratio"] - t["ratio_low"]).fillna(0).clip(lower=0)
    high = (t["ratio_high"] - t["ratio"]).fillna(0).clip(lower=0)
    colors = ["C3" if c == "slower" else "C2" if c == "faster" else "C7" for c in t["change"]]
    ax.errorbar(t["ratio"], t["point_id"].astype(str), xerr=[low, high], fmt="none", ecolor="0.5", capsize=3)
    ax.scatter(t["ratio"], t["point_id"].astype(str), c=colors, zorder=3)
    ax.axvline(1.0, color="k", lw=1)
    for x in (factor, 1 / factor):
        ax.axvline(x, color="k", lw=1, ls=":")
    ax.set_xlabel(f"wall time B / A (dotted: the noise factor {factor:g}; red slower, green faster)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
