"""`run_bench`: the chosen cases in turn, each target marked met or missed, a closing count, and a
JSON file of every measurement."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from ..provenance import git_commit, machine_info, package_versions
from .driver import case_driver
from .measure import Measurement, tally
from .ray_cases import case_ray, case_ray_sweep
from .service_cases import case_a, case_limits, case_p
from .soak import case_soak
from .whole import case_b, case_c, case_zero
from .zoo import case_zoo


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def _printed(measurements: list[Measurement]) -> list[Measurement]:
    for m in measurements:
        print("    " + m.line(), flush=True)
    return measurements


def run_bench(cases: str = "zdabcrw", time_scale: float = 0.05, b_time_scale: float = 1.0,
              rss_sizes: tuple[int, ...] = (100_000, 1_000_000), ray: bool = False,
              out_dir: Path | None = Path("results/bench"), soak_lines: int = 200_000, p_time_scale: float = 0.5,
              p_capacities: tuple[int, ...] = (50, 200, 1000)) -> list[Measurement]:
    """Run `cases` (letters, see `bench --help`) and print each measurement with its targets marked;
    ends with "N met, M missed" (`bench --strict` exits non-zero on a miss)."""
    print(f"machine: {machine_info()}")
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="scoring-bench-") as tmp:
        work = Path(tmp)
        if "a" in cases:
            print(f"(a) 2,000 lines, capacity 200, latency 4.15 s x time scale {time_scale}:", flush=True)
            results += _printed(case_a(work, time_scale, ray))
        if "b" in cases:
            print(f"(b) 10,000 lines, latency 1 s x time scale {b_time_scale}, C=1000, whole processes, medians of 3 "
                  "(target: default settings <= 1.03x the bare client's wall time):", flush=True)
            results += _printed(case_b(work, b_time_scale))
        if "p" in cases:
            print(f"(p) probe --ramp, capacities {'/'.join(map(str, p_capacities))}, latency 4.15 s x time scale "
                  f"{p_time_scale}; then 2,000 lines at the recommended settings (target measured/predicted within "
                  "10%):", flush=True)
            results += case_p(work, p_time_scale, p_capacities)
        if "c" in cases:
            print("(c) peak RSS at zero latency (target <= 300 MB and flat):", flush=True)
            results += case_c(work, list(rss_sizes))
        if "s" in cases:
            print(f"(soak) {soak_lines:,} lines, 5% 503 + 2% resets + 1% slow bodies, SIGKILL at 50% then resume "
                  "(target: 0 lost, 0 duplicated, RSS flat):", flush=True)
            results += _printed(case_soak(work, soak_lines))
        if "l" in cases:
            print(f"(l) limits: fixed best / fixed too high / auto (time scale {time_scale}):", flush=True)
            results += case_limits(work, time_scale, ray)
        if "d" in cases:
            print("(d) the single-driver ceiling: the whole pipeline against an instant service (no HTTP):",
                  flush=True)
            results += _printed(case_driver(work))
        if "z" in cases:
            print("(z) the client's own cost at zero latency, 40,000 lines, C=100, whole processes against one server, "
                  "medians of 3 (targets: speed_vs_bare >= 0.85 with default settings, >= 0.9 with the best "
                  "--threads):", flush=True)
            results += _printed(case_zero(work, ray=ray_available()))
        if "r" in cases and ray_available():
            print("(r) Ray at the seed's shape, 32 workers x 64 threads (targets: scoring >= 1.05x the bare "
                  "client's speed at C=2048; whole run <= 30 s):", flush=True)
            results += _printed(case_ray(work, time_scale))
        if "w" in cases and ray_available():
            print("(w) a Ray sweep's start-up, paid once (cluster once, then each point joins it):", flush=True)
            results += _printed(case_ray_sweep(work, time_scale=time_scale))
        if "o" in cases:  # the zoo: auto against every kind of service the simulator can be
            print(f"(o) the zoo: best fixed vs auto per service behaviour (time scale {time_scale}; targets: asyncio "
                  "auto/best <= 1.15, wall/bound <= 1.25, refused <= 5%, 0 lost; Ray x4 auto/best <= 1.3, 0 lost; "
                  "flaky: 0 lost):", flush=True)
            results += case_zoo(work, time_scale, ray=ray_available())
        if set(cases) & set("rw") and not ray_available():
            print("(r, w) skipped: Ray is not installed (pip install -e '.[ray]')", flush=True)
    if out_dir is not None:
        _save(results, out_dir, {"time_scale": time_scale, "b_time_scale": b_time_scale, "p_time_scale": p_time_scale})
    print(closing(results))
    return results


def _save(results: list[Measurement], out_dir: Path, scales: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps({
        "created": stamp, "machine": machine_info(), "versions": package_versions(), "git_commit": git_commit(),
        **scales, "measurements": [asdict(m) | {"ratio": m.ratio, "missed": m.missed} for m in results]}, indent=1))
    print(f"saved: {path}")


def closing(results: list[Measurement]) -> str:
    """The closing count, then each missed target with what was measured."""
    met, missed = tally(results)
    lines = [f"targets: {met} met, {missed} missed"]
    lines += [f"    missed: {m.case} {m.setting}: {t} (measured {v})"
              for m in results for t, v, ok in m.verdicts() if not ok]
    return "\n".join(lines)
