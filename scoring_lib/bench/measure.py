"""What a bench case measures and how: a Measurement with its targets (each met or missed), the
input files, whole processes (wall, CPU, peak RSS) and one in-process run against its bound."""

from __future__ import annotations

import json
import math
import operator
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..bounds import bound_seconds, effective_pool, sessions_of
from ..config import ClientConfig, RunConfig
from ..pipeline import score_file
from ..server import ServiceProcess

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample.txt"
BASELINE = Path(__file__).resolve().parents[1] / "baseline_client.py"
_OPS = {"<=": operator.le, ">=": operator.ge}


def write_unique_lines(path: Path, n: int) -> Path:
    """n distinct lines of real English (the shipped sample, numbered so none repeats)."""
    base = SAMPLE.read_text(encoding="utf-8").splitlines() if SAMPLE.exists() else ["A sentence to score."]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"{base[i % len(base)]} [{i}]\n")
    return path


@dataclass(frozen=True)
class Target:
    """A goal a measurement is held to: `key` (a Measurement field or a key of its extra) `op` `value`."""

    key: str
    op: str  # "<=" or ">="
    value: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"a target compares with <= or >=, got {self.op!r}")

    def met(self, measured: float | None) -> bool:
        """Whether `measured` reaches the target; a figure that was not measured misses it."""
        return measured is not None and _OPS[self.op](measured, self.value)

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.value:g}"


@dataclass
class Measurement:
    case: str
    setting: str
    lines: int
    wall_seconds: float
    bound_seconds: float | None = None
    startup_seconds: float | None = None
    peak_in_flight: int | None = None
    extra: dict = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return self.wall_seconds / self.bound_seconds if self.bound_seconds else None

    def value(self, key: str) -> float | None:
        """The figure a target names: a field (wall_seconds, ratio, ...) or a key of `extra`."""
        if key in self.extra:
            return self.extra[key]
        return getattr(self, key, None)

    def verdicts(self) -> list[tuple[Target, float | None, bool]]:
        """Each target with the measured figure and whether it was met."""
        return [(t, v, t.met(v)) for t in self.targets for v in [self.value(t.key)]]

    @property
    def missed(self) -> int:
        return sum(1 for _, _, met in self.verdicts() if not met)

    def line(self) -> str:
        parts = [f"{self.case:<3} {self.setting:<38} {self.lines:>9} lines  wall {self.wall_seconds:8.2f} s"]
        if self.bound_seconds is not None:
            parts.append(f"bound {self.bound_seconds:7.2f} s  wall/bound {self.ratio:5.2f}")
        if self.startup_seconds is not None:
            parts.append(f"start-up {self.startup_seconds:5.2f} s")
        if self.peak_in_flight is not None:
            parts.append(f"peak in flight {self.peak_in_flight}")
        parts += [f"{k} {v}" for k, v in self.extra.items()]
        parts += [f"[{t}: {'met' if met else 'MISSED'}]" for t, _, met in self.verdicts()]
        return "  ".join(parts)


def tally(measurements: list[Measurement]) -> tuple[int, int]:
    """(targets met, targets missed) over all measurements."""
    verdicts = [met for m in measurements for _, _, met in m.verdicts()]
    return sum(verdicts), len(verdicts) - sum(verdicts)


@dataclass
class ProcessRun:
    """One whole process: wall seconds, CPU seconds (user + system) and peak RSS."""

    wall: float
    cpu: float
    rss_mb: float
    stdout: str = ""


def run_process(args: list[str], env: dict | None = None) -> ProcessRun:
    """Run `args` to the end; its own wall, CPU and peak RSS (from wait4, so only this process tree's)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=None if env is None else os.environ | env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[1:5])}... failed: {err.read().decode()[-500:]}")
        return ProcessRun(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read().decode())


def score_args(path: Path, url: str, *extra: str, records: Path | None = None) -> list[str]:
    """A whole `score` process against `url`: no cache, no progress, a record only if `records` is given."""
    return [sys.executable, "-m", "scoring_lib", "score", str(path), "--url", url, "--no-cache", "--no-progress",
            "--output", str(path.with_suffix(".out.jsonl")),
            *(["--records-dir", str(records)] if records else ["--no-record"]), *extra]


def recorded(records: Path, key: str) -> float | None:
    """`key` of the run record a whole `score` process wrote into `records`."""
    for f in records.glob("*.json"):
        return json.loads(f.read_text()).get(key)
    return None


def measure_run(case: str, setting: str, service: ServiceProcess, path: Path, lines: int, latency: float,
                capacity: int, **run) -> Measurement:
    """One in-process run against `service`; scoring-phase wall time against its bound."""
    client = ClientConfig(url=service.url, connector_limit=run.pop("connector_limit", None), timeout=600)
    config = RunConfig(input=path, client=client, cache=None, records_dir=None, progress=False,
                       output=path.with_suffix(".out.jsonl"), **run)
    service.reset_stats()
    result = score_file(config, write_record=False)
    stats = service.stats()
    info = result.stats.engine_info
    sessions = info.get("sessions") or sessions_of(config.engine, config.resolved_threads, config.resolved_workers,
                                                   config.max_concurrent_tasks)
    pool = effective_pool(client.connector_limit, sessions)
    concurrency = min(config.max_concurrent_tasks, info.get("in_flight_limit") or config.max_concurrent_tasks)
    bound = bound_seconds(lines, latency, pool, concurrency, capacity)
    if result.stats.counts["ok"] != lines:
        raise RuntimeError(f"{setting}: only {result.stats.counts['ok']} of {lines} lines scored")
    pool_text = "inf" if math.isinf(pool) else str(int(pool))
    return Measurement(case, setting, lines, result.stats.scoring_seconds, bound, result.stats.startup_seconds,
                       stats.peak_in_flight, {"pool": pool_text})


def bare_args(path: Path, url: str, concurrency: int, output: Path, lean: bool = False) -> list[str]:
    """A whole process of the bare aiohttp client (baseline_client.py): what `score` is compared with;
    `lean`: its body serialized and its reply parsed from bytes, as `score` does."""
    return [sys.executable, str(BASELINE), str(path), url, str(concurrency), str(output)] + (["lean"] if lean else [])


def median_runs(settings: dict[str, tuple[list[str], dict | None]], repeats: int) -> dict[str, ProcessRun]:
    """Each setting's whole process (args, extra environment) run `repeats` times, interleaved (one of each,
    then again) so a shared machine's slow minutes fall on all of them; the median wall and CPU of each."""
    runs: dict[str, list[ProcessRun]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, (args, env) in settings.items():
            runs[name].append(run_process(args, env))
    return {name: ProcessRun(statistics.median(r.wall for r in rs), statistics.median(r.cpu for r in rs),
                             max(r.rss_mb for r in rs), rs[-1].stdout) for name, rs in runs.items()}
