"""A sweep measures its own harness: the client's CPU per request on this machine, and the machine's load.

Before its points, a sweep scores a few thousand distinct lines against a zero-latency simulated service
(a child process) at the sweep's largest concurrency, with the asyncio client on one event loop, no cache
and no record. This process's CPU time over the requests sent is the client's cost of one request; the
report uses it to say how much of a setting's gap to its bound is the client's own work, and `sweep`
uses it to warn when the grid's time scale leaves the latency too short beside that work. The result is
`calibration.json` in the sweep's records folder: not a run record (it carries no record schema), so
the report never counts it as a run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import psutil

from .runs import CALIBRATION_FILE
from .settings import ClientConfig, RunConfig, ServerConfig

CALIBRATION_SCHEMA = 1
TARGET_SHARE = 0.02  # the client's CPU per wave should stay under this share of the latency
MIN_LINES, MAX_LINES = 2000, 5000  # lines of the calibration run: two waves of the largest C, within these
LOAD_INTERVAL = 2.0  # seconds between two samples of the machine's load

__all__ = ["Calibration", "LoadSummary", "LoadSampler", "measure_client", "calibrate", "calibrate_sweep", "save_load", "needed_time_scale", "save_calibration",
           "load_calibration", "gap_explained", "calibration_note", "latency_share", "time_scale_warning", "CALIBRATION_FILE", "TARGET_SHARE"]


@dataclass(frozen=True)
class LoadSummary:
    """The machine's load while the sweep ran: 1-minute load average and CPU use (all cores, %)."""

    samples: int
    load1_mean: float
    load1_max: float
    cpu_percent_mean: float
    cpu_percent_max: float
    cores: int


@dataclass(frozen=True)
class Calibration:
    """What the harness costs on this machine, measured by one sweep before its points."""

    sweep: str
    concurrency: int  # the sweep's largest C, the calibration run's
    lines: int  # distinct lines scored (one request each)
    cpu_seconds: float  # this process's CPU time over the measured run
    wall_seconds: float  # the measured run's scoring time, at zero latency
    cpu_per_request: float
    wall_per_wave: float  # the time one wave of `concurrency` replies takes at zero latency
    cores: int
    measured_at: str  # ISO 8601, UTC
    latency: float | None = None  # the sweep's service latency at full scale (None: a real service)
    time_scale: float | None = None  # the grid's time scale (None: a real service)
    time_scale_needed: float | None = None  # the smallest time scale meeting TARGET_SHARE (None: met or unknown)
    target_share: float = TARGET_SHARE
    load1_at_start: float | None = None
    load: LoadSummary | None = None  # sampled for the whole sweep
    wave: int | None = None  # replies per latency at that C: min(C, the service's capacity); None: C
    accepted_share: float = TARGET_SHARE  # the grid's client_share_max: `sweep` warns above it
    calibration_schema: int = CALIBRATION_SCHEMA

    @property
    def wave_size(self) -> int:
        """Requests answered per latency at the sweep's largest C: a service serving `capacity` at once
        answers no more than that per latency however many are in flight, so the client handles that many
        replies (and sends) per latency, not C."""
        return self.wave or self.concurrency

    @property
    def cpu_per_wave(self) -> float:
        """Client CPU seconds for one wave (`wave_size` requests)."""
        return self.wave_size * self.cpu_per_request

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        """From plain JSON as `to_json` wrote it; ValueError for another schema or a missing field."""
        if not isinstance(data, dict) or data.get("calibration_schema") != CALIBRATION_SCHEMA:
            raise ValueError("not a calibration of this schema")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("load"), dict):
            values["load"] = LoadSummary(**values["load"])
        return cls(**values)


def needed_time_scale(cpu_per_request: float, concurrency: int, latency: float,
                      share: float = TARGET_SHARE) -> float:
    """The smallest time scale at which a wave's client CPU (C x CPU per request) stays under `share`
    of the scaled latency, rounded up to two significant digits."""
    need = concurrency * cpu_per_request / (share * latency)
    if need <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(need)) - 1)
    return float(f"{math.ceil(round(need / step, 9)) * step:.2g}")


def latency_share(cal: Calibration) -> float | None:
    """The client's CPU per wave as a share of the grid's scaled latency (None: a real service)."""
    if cal.latency is None or cal.time_scale is None or not cal.latency * cal.time_scale > 0:
        return None
    return cal.cpu_per_wave / (cal.latency * cal.time_scale)


def time_scale_warning(cal: Calibration) -> str | None:
    """One `warning:` line when the client's CPU per wave is a larger share of the latency than the grid
    accepts (its `client_share_max`, else TARGET_SHARE), naming the time scale that would meet it. A grid
    made for speed (quick) states the share it accepts, so running it warns only on a machine slower than
    that; the report states the share either way."""
    share = latency_share(cal)
    if share is None or share <= cal.accepted_share:
        return None
    assert cal.latency is not None and cal.time_scale is not None
    need = needed_time_scale(cal.cpu_per_request, cal.wave_size, cal.latency, cal.accepted_share)
    above = "" if need <= 1 else " (above 1: even the full latency does not meet it)"
    accepted = ("" if cal.accepted_share == TARGET_SHARE
                else f" (the grid's client_share_max, {cal.accepted_share:.0%})")
    return (f"warning: sweep {cal.sweep}: the client's CPU per wave of {cal.wave_size} requests is "
            f"{cal.cpu_per_wave * 1000:.3g} ms ({cal.cpu_per_request * 1e6:.3g} us a request on this machine), "
            f"{share:.0%} of the latency {cal.latency * cal.time_scale:.3g} s at time scale {cal.time_scale:g}; "
            f"time scale {need:g} or more keeps it under {cal.accepted_share:.0%}{accepted}{above}; "
            f"the grid's time scale is used unchanged, so part of each gap to the bound is this client's work "
            f"(the report says how much)")


def _distinct_lines(path: Path, lines: int) -> None:
    """`lines` distinct lines (the pipeline sends a repeated line once)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(f"calibration line {i}: how much does the client itself cost per request?\n")


def calibration_lines(concurrency: int) -> int:
    """Lines of a calibration run at `concurrency`: two waves, at least MIN_LINES, at most MAX_LINES."""
    return min(MAX_LINES, max(MIN_LINES, 2 * concurrency))


def measure_client(concurrency: int, lines: int, fields: dict | None = None) -> tuple[float, float]:
    """(client CPU seconds per request, wall seconds per wave of `concurrency` replies): `lines`
    distinct lines scored at zero latency through `score_file` on one event loop, after a warm-up
    run of one wave (imports and first connections are not the cost being measured)."""
    # Imported here as sweep.py does: importing a sweep's module (for its grid keys) stays light.
    from .pipeline import score_file
    from .server import ServiceProcess

    fields = fields or {}
    with tempfile.TemporaryDirectory(prefix="scoring-calibration-") as tmp, \
            ServiceProcess(ServerConfig(latency=0.0, capacity=0, time_scale=1.0, **fields)) as svc:
        text = Path(tmp) / "lines.txt"
        _distinct_lines(text, lines)
        config = RunConfig(input=text, client=ClientConfig(url=svc.url, max_retries=0, **fields), engine="asyncio",
                           threads=1, max_concurrent_tasks=concurrency, output=Path(tmp) / "rows.jsonl", cache=None,
                           records_dir=None, progress=False)
        warm = Path(tmp) / "warm.txt"
        _distinct_lines(warm, min(lines, concurrency))
        score_file(replace(config, input=warm), write_record=False)
        cpu0 = time.process_time()
        result = score_file(config, write_record=False)
        cpu = time.process_time() - cpu0
    requests = max(1, result.stats.requests)
    waves = math.ceil(requests / concurrency)
    return cpu / requests, result.stats.scoring_seconds / waves


def calibrate(sweep: str, concurrency: int, latency: float | None, time_scale: float | None,
              lines: int | None = None, fields: dict | None = None, capacity: int | None = None,
              accepted_share: float | None = None) -> Calibration:
    """Measure the client (measure_client) and say which time scale the target needs. `capacity`: the
    service's (requests served at once; None or 0: unlimited), which caps a wave. `accepted_share`: the
    grid's client_share_max (None: TARGET_SHARE)."""
    load1 = _load1()
    lines = lines or calibration_lines(concurrency)
    cpu_req, wave_wall = measure_client(concurrency, lines, fields)
    wave = min(concurrency, capacity) if capacity else concurrency
    needed = None
    if latency and time_scale:
        need = needed_time_scale(cpu_req, wave, latency)
        needed = need if need > time_scale else None
    return Calibration(sweep=sweep, concurrency=concurrency, lines=lines, cpu_seconds=cpu_req * lines,
                       wall_seconds=wave_wall * math.ceil(lines / concurrency), cpu_per_request=cpu_req,
                       wall_per_wave=wave_wall, cores=os.cpu_count() or 1,
                       measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), latency=latency,
                       time_scale=time_scale, time_scale_needed=needed, load1_at_start=load1, wave=wave,
                       accepted_share=TARGET_SHARE if accepted_share is None else accepted_share)


def calibrate_sweep(sweep: str, concurrency: int, lines: int | None, server: ServerConfig | None, fields: dict,
                    records_dir: Path, accepted_share: float | None = None) -> Calibration | None:
    """A sweep's calibration, saved in records_dir/<sweep>/ (None when `lines` is 0: none asked for).
    `server`: the sweep's simulated service (None: a real one, whose latency is not known here).
    Prints one `warning:` line on stderr when the client's share of the latency is above `accepted_share`
    (the grid's client_share_max; None: TARGET_SHARE)."""
    if lines == 0:
        return None
    try:
        cal = calibrate(sweep, concurrency, server.latency if server else None,
                        server.time_scale if server else None, lines=lines, fields=fields,
                        capacity=server.capacity if server else None, accepted_share=accepted_share)
    except Exception as exc:  # noqa: BLE001 - a measurement of the harness must not cost the sweep its points
        print(f"warning: sweep {sweep}: no calibration ({type(exc).__name__}: {exc}); the points run without it",
              file=sys.stderr, flush=True)
        return None
    warning = time_scale_warning(cal)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    save_calibration(cal, records_dir)
    return cal


def save_load(calibration: Calibration | None, load: "LoadSampler", records_dir: Path) -> None:
    """Add the load sampled during the sweep to its saved calibration."""
    if calibration is not None:
        save_calibration(replace(calibration, load=load.summary()), records_dir)


def _load1() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not every platform has a load average
        return None


@dataclass
class LoadSampler:
    """The machine's load sampled in a background thread while a sweep runs (a context manager)."""

    interval: float = LOAD_INTERVAL
    load1: list = field(default_factory=list)
    cpu: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def _sample(self) -> None:
        load1 = _load1()
        if load1 is not None:
            self.load1.append(load1)
        self.cpu.append(psutil.cpu_percent(interval=None))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "LoadSampler":
        psutil.cpu_percent(interval=None)  # the first call only sets the reference point
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def summary(self) -> LoadSummary | None:
        if not self.cpu:
            return None
        load = self.load1 or [float("nan")]
        return LoadSummary(samples=len(self.cpu), load1_mean=sum(load) / len(load), load1_max=max(load),
                           cpu_percent_mean=sum(self.cpu) / len(self.cpu), cpu_percent_max=max(self.cpu),
                           cores=os.cpu_count() or 1)


def save_calibration(cal: Calibration, records_dir: str | os.PathLike) -> Path:
    """Write `calibration.json` in the sweep's records folder (records_dir/<sweep>/)."""
    path = Path(records_dir) / cal.sweep / CALIBRATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cal.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_calibration(records_dir: str | os.PathLike, sweep: str) -> Calibration | None:
    """The calibration a sweep saved in records_dir/<sweep>/, or None (none saved, or unreadable)."""
    path = Path(records_dir) / sweep / CALIBRATION_FILE
    try:
        return Calibration.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def calibration_note(cal: Calibration) -> str:
    """One sentence for the report: what the client costs here, and how loaded the machine was."""
    text = (f"Client CPU per request on this machine: {cal.cpu_per_request * 1e6:.0f} us "
            f"({cal.cpu_per_wave * 1000:.3g} ms per wave of {cal.wave_size}, measured at zero latency)")
    if cal.latency is not None and cal.time_scale is not None:
        text += f", {cal.cpu_per_wave / (cal.latency * cal.time_scale):.0%} of the latency at time scale {cal.time_scale:g}"
        if cal.time_scale_needed is not None:
            accepts = "" if cal.accepted_share == TARGET_SHARE else f"; the grid accepts {cal.accepted_share:.0%}"
            text += f" (2% needs time scale {cal.time_scale_needed:g}{accepts})"
    if cal.load is not None:
        text += (f"; load average {cal.load.load1_mean:.1f} (max {cal.load.load1_max:.1f}) on {cal.load.cores} cores, "
                 f"CPU {cal.load.cpu_percent_mean:.0f}% during the sweep")
    return text + "."


def gap_explained(calibration: Calibration, concurrency: int, lines: int, latency: float, wall: float,
                  bound: float, loops: int = 1) -> float:
    """The share (0 to 1) of a run's gap `wall - bound` that the client's own CPU explains; NaN when
    the run met its bound (no gap).

    Model: the bound counts `bound / latency` waves (at least ceil(lines / concurrency)), each of
    lines / waves requests. One event loop does a wave's sending and reply handling one request after
    another, so each wave adds its client CPU, (lines / waves) x CPU per request, to the latency: the
    client explains waves x that = lines x CPU per request, divided among `loops` event loops running
    at once (threads or Ray workers, at most the machine's cores). `latency` and `bound` are the run's
    own (scaled) seconds; `wall` its measured scoring time."""
    gap = wall - bound
    if not gap > 0 or lines <= 0:
        return float("nan")
    waves = max(math.ceil(lines / max(1, concurrency)), round(bound / latency) if latency > 0 else 0, 1)
    per_wave = lines / waves * calibration.cpu_per_request
    parallel = max(1, min(loops, calibration.cores))
    return min(1.0, waves * per_wave / parallel / gap)
