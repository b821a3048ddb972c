"""Figures for the report and notebooks; each function takes tidy data and returns a Figure."""

from __future__ import annotations

import math

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "widget", "ipympl")):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

MEASURED = "scoring_seconds"


def _pool_label(row) -> str:
    pool = row["effective_pool"]
    return "pool unlimited (auto)" if pool is None or (isinstance(pool, float) and math.isinf(pool)) \
        else f"pool {int(pool)}"


def wall_vs_concurrency(points: pd.DataFrame) -> plt.Figure:
    """Median wall time per max_concurrent_tasks, by engine and pool, with each series' bound."""
    fig, ax = plt.subplots(figsize=(12, 5.5))
    asy = points[points["engine"] == "asyncio"].copy()
    if not asy.empty:
        asy["series"] = asy.apply(lambda r: f"asyncio {int(r['sessions'] or 1)} session(s), {_pool_label(r)}", axis=1)
        for i, (name, g) in enumerate(sorted(asy.groupby("series"), key=lambda kv: kv[0])):
            g = g.sort_values("max_concurrent_tasks")
            color = f"C{i}"
            ax.errorbar(g["max_concurrent_tasks"], g["wall_median"],
                        yerr=[g["wall_median"] - g["wall_min"], g["wall_max"] - g["wall_median"]],
                        marker="o", color=color, label=f"{name} (measured)", capsize=3)
            source = g["bound_source"].iloc[0] if "bound_source" in g else "configured"
            ax.plot(g["max_concurrent_tasks"], g["bound_seconds"], ls="--", color=color, alpha=0.7,
                    label=f"{name} (bound: {source})")
    ray = points[points["engine"] == "ray"]
    if not ray.empty:
        markers = "sDv^<>ph*P"
        for j, (_, r) in enumerate(ray.sort_values(["workers", "threads", "max_concurrent_tasks"]).iterrows()):
            label = f"ray {int(r['workers'])}x{int(r['threads'])}, C={int(r['max_concurrent_tasks'])} (measured)"
            color = f"C{(5 + j) % 10}"
            ax.scatter([r["max_concurrent_tasks"]], [r["wall_median"]], marker=markers[j % len(markers)], s=45,
                       color=color, label=label, zorder=3)
            ax.scatter([r["max_concurrent_tasks"]], [r["bound_seconds"]], marker="_", s=300, color="k", zorder=2)
    ax.set_xscale("log")
    ticks: list[int] = []
    for c in sorted(set(int(c) for c in points["max_concurrent_tasks"])):
        if not ticks or c / ticks[-1] > 1.15:  # neighbours closer than that would overprint
            ticks.append(c)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("max_concurrent_tasks (C)")
    ax.set_ylabel("scoring-phase wall time (s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Wall time vs concurrency; dashed lines and black dashes: ceil(N / min(pool, C, capacity)) x latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def ray_heatmap(points: pd.DataFrame) -> plt.Figure:
    """Ray: median wall time over workers x threads, each cell annotated with its efficiency."""
    ray = points[points["engine"] == "ray"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if ray.empty:
        ax.text(0.5, 0.5, "no Ray runs recorded", ha="center", va="center")
        ax.set_axis_off()
        return fig
    wall = ray.pivot_table(index="workers", columns="threads", values="wall_median", aggfunc="median")
    eff = ray.pivot_table(index="workers", columns="threads", values="efficiency", aggfunc="median")
    im = ax.imshow(wall.values, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(wall.columns)), [str(int(c)) for c in wall.columns])
    ax.set_yticks(range(len(wall.index)), [str(int(i)) for i in wall.index])
    ax.set_xlabel("threads per worker")
    ax.set_ylabel("workers")
    for i in range(wall.shape[0]):
        for j in range(wall.shape[1]):
            if not math.isnan(wall.values[i, j]):
                ax.text(j, i, f"{wall.values[i, j]:.2f} s\neff {eff.values[i, j]:.2f}", ha="center", va="center",
                        fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    fig.colorbar(im, ax=ax, label="scoring-phase wall time (s)")
    ax.set_title("Ray: workers x threads (median wall; efficiency = bound / wall)")
    fig.tight_layout()
    return fig


def efficiency(points: pd.DataFrame) -> plt.Figure:
    """Bound / measured per point: 1.0 means the run reached the physical limit."""
    pts = points.sort_values(["engine", "efficiency"])
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(pts) + 1)))
    colors = ["C0" if e == "asyncio" else "C3" for e in pts["engine"]]
    names = pts["point_id"].astype(str)
    if "bound_source" in pts:  # which figures each bound came from (no bar: no bound, latency unknown)
        names = names + " [" + pts["bound_source"].fillna("unknown").astype(str) + "]"
    ax.barh(names, pts["efficiency"].fillna(0), color=colors)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xlabel("efficiency = bound / measured wall time (blue asyncio, red Ray)")
    ax.set_xlim(0, 1.1)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("How close each setting gets to its physical limit")
    fig.tight_layout()
    return fig


def latency_percentiles(points: pd.DataFrame) -> plt.Figure:
    """Request latency percentiles per point (seen by the client: service time plus queueing)."""
    pts = points.sort_values("point_id")
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(pts) + 1)))
    for q, marker in (("latency_p50", "o"), ("latency_p90", "s"), ("latency_p99", "^")):
        ax.scatter(pts[q], pts["point_id"], marker=marker, label=q.replace("latency_", ""))
    if "latency_s" in pts and pts["latency_s"].notna().any():
        ax.axvline(pts["latency_s"].dropna().iloc[0], color="k", lw=1, ls="--", label="service latency")
    ax.set_xlabel("request latency (s)")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=8)
    ax.set_title("Latency percentiles per setting")
    fig.tight_layout()
    return fig


def inflight_timeline(records: list[dict]) -> plt.Figure:
    """Requests in flight over the scoring phase for a few runs (from their records' timelines)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for rec in records:
        tl = rec.get("timeline") or []
        if not tl:
            continue
        t, n = zip(*tl)
        label = f"{rec['engine']} " + (f"{rec['workers']}x{rec['threads']}" if rec["engine"] == "ray"
                                        else f"{rec['threads']} thread(s)")
        c = "auto" if rec.get("concurrency") == "auto" else rec["max_concurrent_tasks"]
        label += f", C={c}, pool {rec['connector_limit']}"
        line, = ax.step(t, n, where="post", label=label)
        history = (rec.get("limits") or {}).get("limit_history") or []
        if history:  # an `auto` run: its concurrency limit over time, in the same colour
            ht, hv = zip(*history)
            ax.step(ht, hv, where="post", ls=":", color=line.get_color(), label="limit (auto)")
    capacity = next((r.get("service", {}).get("capacity") for r in records if r.get("service")), None)
    if capacity:
        ax.axhline(capacity, color="k", ls="--", lw=1, label=f"service capacity {capacity}")
    ax.set_xlabel("seconds into the scoring phase")
    ax.set_ylabel("requests in flight")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title("Requests in flight over time")
    fig.tight_layout()
    return fig


def latency_histogram(latencies: list[float], service_latency: float | None = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(latencies, bins=min(30, max(5, len(latencies) // 2)), color="C0")
    if service_latency:
        ax.axvline(service_latency, color="k", ls="--", label="configured mean")
        ax.legend()
    ax.set_xlabel("request latency (s)")
    ax.set_ylabel("requests")
    ax.set_title(f"Latency of {len(latencies)} probe requests")
    fig.tight_layout()
    return fig
