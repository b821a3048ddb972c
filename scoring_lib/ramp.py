"""Find a service's capacity and rate limit by raising the load step by step (`probe --ramp`).

Each step keeps exactly `c` requests in flight (closed loop: a worker sends its next line as soon
as its last one is answered) for a few seconds, through the shared ScoringClient with no retries
(a rejected request is counted, and its worker waits as the client's backoff says, Retry-After
first). c doubles from 1 until the curve bends: throughput stops rising while latency rises by a
set margin (a queue) or 429/503 replies appear (a rate limit, load shedding). Little's law turns
the plateau into a capacity: requests served at once = throughput x unloaded latency. A step at
the estimate then refines it between the last two doublings.

References: Little's law (in flight = throughput x latency); the knee of the throughput/latency
curve; Netflix's concurrency-limits README (a limit is found by watching latency rise).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from .aio import run_sync
from .client import Outcome, ScoringClient
from .config import ClientConfig
from .errors import ScoringError
from .failures import Failure, FailureKind
from .probe import PROBE_TEXTS
from .records import percentiles
from .service import Known, ServiceProfile, now_stamp, whole_capacity

RAY_ABOVE = 4096  # in-flight requests beyond which one asyncio process is not the recommendation
CPU_BUSY = 0.8  # a process using more of a core than this at the knee may be what bent the curve
MACHINE_BUSY = 0.9  # likewise the whole machine's CPUs
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class ProbeError(ScoringError):
    """The service cannot be probed at all (refused, 401/403/404, wrong reply shape): more load is pointless."""

    exit_code = 1


def status_of(outcome: Outcome) -> int | None:
    """The HTTP status of a failed outcome, or None for transport errors (and successes)."""
    return None if outcome.failure is None else outcome.failure.status


def _fatal(failure: Failure | None) -> bool:
    """Failures no amount of load will change: refused, unreachable, auth, not found, wrong shape, any
    other 4xx but 408/429, a redirect."""
    if failure is None:
        return False
    plain_4xx = failure.kind is FailureKind.HTTP and not failure.retryable and 400 <= (failure.status or 0) < 500
    return failure.fatal_if_unanimous or plain_4xx or failure.kind is FailureKind.CONNECTION


def _first_attempt(failure: Failure | None) -> str:
    """What the first attempt's failure says (its message, without the retry summary)."""
    return "" if failure is None else failure.message


@dataclass
class Step:
    """What `concurrency` requests in flight gave, for one step of the ramp."""

    concurrency: int
    sent: int = 0
    ok: int = 0
    rate_limited: int = 0  # 429
    shed: int = 0  # 503
    errors: int = 0  # anything else
    seconds: float = 0.0  # first request sent -> last answer received
    throughput: float = 0.0  # ok answers per second over `seconds`
    late_ok_rate: float = 0.0  # ok requests sent per second in the second half of the step
    latency: dict = field(default_factory=dict)  # percentiles of ok requests, seconds
    retry_after: float | None = None  # median Retry-After seen, seconds
    error_sample: str | None = None
    failure_sample: Failure | None = field(default=None, repr=False)  # the failure behind error_sample
    saturated: bool = False
    refinement: bool = False
    noisy: bool = False  # looked saturated, but throughput rose again at the next step
    occupancy: float = 0.0  # ok requests in flight, averaged over the time the load was held
    steady_latency: float | None = None  # mean latency of ok requests after each worker's first (no start-up wave)
    client_cpu: float = 0.0  # CPU seconds this process used per wall second (1.0 = one core busy)
    service_cpu: float | None = None  # the same for the service's process, when it runs on this machine
    machine_cpu: float | None = None  # share of all this machine's CPUs busy (1.0 = every core)

    @property
    def rejected_share(self) -> float:
        return (self.rate_limited + self.shed) / self.sent if self.sent else 0.0

    @property
    def p50(self) -> float | None:
        return self.latency.get("p50")


@dataclass
class Recommendation:
    max_concurrent_tasks: int
    connector_limit: int
    engine: str
    rate_limit: float | None = None  # requests/s for a client-side limiter, when the service has one


@dataclass
class RampResult:
    url: str
    steps: list[Step]
    latency: float | None  # unloaded, seconds
    capacity: float | None  # requests served at once, or None when not seen
    rate_limit: float | None  # requests/s, or None when no 429s appeared
    ceiling: int
    probing_seconds: float
    stopped: str  # why the ramp ended
    margin: float
    recommended: Recommendation | None = None
    input_lines: int | None = None
    predicted_seconds: float | None = None
    profile: ServiceProfile | None = None
    service_pid: int | None = None  # the service's process, when it runs on this machine (its CPU is watched)

    def to_dict(self) -> dict:
        """The `--json` object: latency, capacity, rate_limit, recommended, predicted_seconds, and the curve."""
        return {
            "url": self.url, "latency": self.latency, "capacity": self.capacity, "rate_limit": self.rate_limit,
            "recommended": asdict(self.recommended) if self.recommended else None,
            "predicted_seconds": self.predicted_seconds, "input_lines": self.input_lines,
            "ceiling": self.ceiling, "probing_seconds": round(self.probing_seconds, 2), "stopped": self.stopped,
            "warning": self.client_bound(), "service_pid": self.service_pid,
            "steps": [{k: v for k, v in asdict(s).items() if k != "failure_sample"}
                      | {"rejected_share": s.rejected_share} for s in self.steps],
        }

    def lines(self) -> list[str]:
        out = [f"service: {self.url}", "ramp (in flight: ok/s, p50 latency, 429/503 share):"]
        for s in self.steps:
            p50 = f"{s.p50:.3f} s" if s.p50 is not None else "-"
            mark = " <- saturated" if s.saturated else (" (refinement)" if s.refinement else "")
            mark += " (noisy: rose again after)" if s.noisy else ""
            out.append(f"  {s.concurrency:>6}: {s.throughput:8.1f}/s  p50 {p50:>9}  "
                       f"429 {s.rate_limited:>4}  503 {s.shed:>4}  errors {s.errors:>3}{mark}")
        out.append(f"stopped: {self.stopped} after {self.probing_seconds:.1f} s of probing")
        out.append("unloaded latency: " + (f"{self.latency:.3f} s" if self.latency else "unknown"))
        tried = max((s.concurrency for s in self.steps), default=0)
        if self.capacity:
            cap = f"about {self.capacity:.0f} requests in flight"
        elif self.rate_limit and self.latency:
            cap = f"not seen: the rate limit binds first (at about {self.rate_limit * self.latency:.0f} in flight)"
        else:
            cap = f"not reached up to {tried} in flight"
        warning = self.client_bound()
        out.append("capacity: " + cap + (" (CPU-bound: see the warning)" if warning and self.capacity else ""))
        if warning:
            out.append("warning: " + warning)
        out.append("rate limit: " + (f"about {self.rate_limit:.1f} requests/s" if self.rate_limit else
                                     "none seen (no 429s)"))
        if self.recommended:
            r = self.recommended
            out.append(f"recommended: --max-concurrent-tasks {r.max_concurrent_tasks} --connector-limit "
                       f"{r.connector_limit} --engine {r.engine}" +
                       (f" (service rate limit {r.rate_limit:.1f}/s binds)" if r.rate_limit else ""))
        if self.predicted_seconds is not None:
            out.append(f"predicted wall time for {self.input_lines} lines: {self.predicted_seconds:.1f} s")
        return out

    def client_bound(self) -> str | None:
        """A warning when the knee may be this machine's CPU, not the service: at the saturated steps this
        process, or the service's own process when it runs here (the simulator: one event loop, at most
        one core), kept most of a core busy, or every core of the machine was busy. Then throughput stopped
        rising because requests waited for a CPU, and the capacity read off the curve is too low."""
        sat = [s for s in self.steps if s.saturated]
        if not sat:
            return None
        busy = []
        client = max(s.client_cpu for s in sat)
        service = max((s.service_cpu for s in sat if s.service_cpu is not None), default=None)
        machine = max((s.machine_cpu for s in sat if s.machine_cpu is not None), default=None)
        served = f"the service's process (pid {self.service_pid}, on this machine) used {service or 0:.0%} of a core"
        if service is not None and service > CPU_BUSY:
            busy.append(served)
        if client > CPU_BUSY:
            busy.append(f"this process used {client:.0%} of a core")
        if machine is not None and machine > MACHINE_BUSY:
            # A service short of CPU on a busy machine uses less than a core, yet its CPU is the limit.
            with_service = f" ({served})" if service is not None and served not in busy else ""
            busy.append(f"this machine's {psutil.cpu_count() or 1} CPUs were {machine:.0%} busy{with_service}")
        if not busy:
            return None
        return ("CPU-bound at the knee: " + "; ".join(busy) + ": the limit found may be this machine's CPU, not "
                "the service's capacity" + (f" (about {self.capacity:.0f} is then a lower bound of it)"
                                            if self.capacity else "") +
                "; slow a simulated service down (a larger time scale) or probe from a less loaded machine")

    def figure(self):
        return plot_ramp(self)


# --- one step -----------------------------------------------------------------------------------
async def run_step(client: ScoringClient, texts, concurrency: int, seconds: float, rounds: int = 3,
                   service: psutil.Process | None = None) -> Step:
    """Keep `concurrency` requests in flight for `seconds`, and until every worker has had `rounds`
    answers (a queue's latency can exceed the step); then let the last ones finish (each bounded by
    the client's timeout). A rejected request's worker waits the client's backoff, Retry-After first.
    The CPU this process, the `service`'s process (when it runs here) and the machine used is measured."""
    outcomes: list = []
    steady: list[float] = []  # latencies of ok requests that were not their worker's first
    waits: list[float] = []
    start = time.time()
    cpu = time.process_time()
    service_cpu = _cpu_seconds(service)
    psutil.cpu_percent()  # starts the machine-wide measurement; the next call reads it
    stop_at = start + seconds

    async def worker() -> None:
        failures = done = 0
        while time.time() < stop_at or done < rounds:
            o = await client.score(next(texts))
            outcomes.append(o)
            done += 1
            if o.ok:
                if done > 1:
                    steady.append(o.latency)
                failures = 0
                continue
            if o.retry_after is not None:
                waits.append(o.retry_after)
            pause = min(client.backoff(failures, o.retry_after), max(0.0, stop_at - time.time()))
            failures += 1
            await asyncio.sleep(pause)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    step = Step(concurrency=concurrency, sent=len(outcomes))
    wall = max(1e-9, time.time() - start)
    step.client_cpu = (time.process_time() - cpu) / wall
    step.machine_cpu = psutil.cpu_percent() / 100
    if service_cpu is not None and (now := _cpu_seconds(service)) is not None:
        step.service_cpu = (now - service_cpu) / wall
    ok = [o for o in outcomes if o.ok]
    step.ok = len(ok)
    for o in outcomes:
        if o.ok:
            continue
        status = status_of(o)
        if status == 429:
            step.rate_limited += 1
        elif status == 503:
            step.shed += 1
        else:
            step.errors += 1
            if step.error_sample is None:
                step.error_sample, step.failure_sample = o.error, o.failure
    if outcomes:
        first = min(o.sent for o in outcomes)
        last = max(o.finished for o in outcomes)
        end = max(stop_at, max(o.sent for o in outcomes))
        step.seconds = max(1e-9, last - first)
        step.throughput = step.ok / step.seconds
        step.occupancy = sum(max(0.0, min(o.finished, end) - max(o.sent, first)) for o in ok) / max(1e-9, end - first)
        mid = first + (end - first) / 2
        late = [o for o in ok if o.sent >= mid]
        step.late_ok_rate = len(late) / max(1e-9, end - mid)
    step.latency = percentiles([o.latency for o in ok])
    step.steady_latency = statistics.fmean(steady) if steady else step.latency.get("mean")
    step.retry_after = statistics.median(waits) if waits else None
    return step


def _cpu_seconds(proc: psutil.Process | None) -> float | None:
    if proc is None:
        return None
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def service_process(url: str, pid: int | None = None) -> psutil.Process | None:
    """The service's process when it runs on this machine, to watch its CPU: `pid` when known (a
    ServiceProcess), else the process listening on the url's port when the url is on loopback. None
    for a remote service, for one this process serves itself (its CPU is this process's), and when the
    listener cannot be seen (another user's process)."""
    if pid is None:
        parts = urlsplit(url)
        if parts.hostname not in LOOPBACK:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            conns = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return None
        pid = next((c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                    and c.pid), None)
    if pid is None or pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        proc.cpu_times()
        return proc
    except psutil.Error:
        return None


def _texts(input: str | Path | list[str] | None, limit: int = 10_000):
    """Real lines (a list, or the first `limit` non-empty ones of the file `input`), cycled; or
    numbered samples."""
    lines: list[str] = list(input) if isinstance(input, (list, tuple)) else []
    if isinstance(input, (str, Path)):
        lines = read_input(input, limit)[0]
    if lines:
        return itertools.cycle(lines)
    return (f"{PROBE_TEXTS[i % len(PROBE_TEXTS)]} (ramp sample {i})" for i in itertools.count())


def read_input(input: str | Path, limit: int = 10_000) -> tuple[list[str], int]:
    """In one pass (a pipe or `-` can be read only once): the first `limit` non-empty lines, to send,
    and the requests a run of `input` makes: its distinct non-empty lines (a run requests each text once)."""
    from .inputs import read_lines

    sample: list[str] = []
    seen: set[bytes] = set()
    for item in read_lines(input, 1 << 20):
        if item.text is not None:
            if len(sample) < limit:
                sample.append(item.text)
            seen.add(hashlib.blake2b(item.text.encode("utf-8"), digest_size=8).digest())
    return sample, len(seen)


# --- the ramp ---------------------------------------------------------------------------------
def _saturated(step: Step, prev: Step, base_latency: float, baseline_rejects: float, margin: float) -> bool:
    """Throughput stopped rising (less than half the gain more in-flight requests should give)
    while latency rose by `margin` or rejections (429/503) appeared."""
    expected = step.concurrency / prev.concurrency
    rising = prev.throughput > 0 and step.throughput >= prev.throughput * (1 + 0.5 * (expected - 1))
    latency_rose = step.steady_latency is not None and step.steady_latency > base_latency * (1 + margin)
    rejects = step.rejected_share > baseline_rejects + 0.05
    return not rising and (latency_rose or rejects)


async def ramp_async(client_config: ClientConfig, *, ceiling: int = 1024,
                     input: str | Path | list[str] | None = None, step_seconds: float | None = None,
                     min_step_seconds: float = 2.0, waves: int = 6, margin: float = 0.25,
                     budget_seconds: float = 600.0, refine: bool = True, progress=None,
                     service_pid: int | None = None) -> RampResult:
    """Raise the in-flight count 1, 2, 4, ... up to `ceiling` and read capacity and rate limit off
    the curve. A step lasts `step_seconds`, or `waves` unloaded latencies (at least
    `min_step_seconds`). Raises ProbeError when the very first requests fail for good.
    `service_pid`: the service's process on this machine, if known (else found from a loopback url),
    whose CPU each step measures: a CPU-bound simulator bends the curve as a capacity would."""
    if ceiling < 1:
        raise ScoringError("the ramp's ceiling must be at least 1")
    cfg = replace(client_config, max_retries=0)  # every rejection is seen and counted, never retried
    texts = _texts(input)
    service = service_process(client_config.url, service_pid)
    t0 = time.monotonic()
    steps: list[Step] = []
    stopped = ""
    async with ScoringClient(cfg, concurrency=ceiling) as client:
        first = await client.score(next(texts))
        if not first.ok and _fatal(first.failure):
            raise ProbeError(f"cannot probe {client_config.url}: {_first_attempt(first.failure)}")
        base = first.latency if first.ok else None
        c = 1
        base_rejects = 0.0
        while True:
            seconds = step_seconds or max(min_step_seconds, waves * (base or 0.2))
            step = await run_step(client, texts, c, seconds, service=service)
            steps.append(step)
            if progress:
                progress(step)
            if step.ok == 0:
                if len(steps) == 1 and _fatal(step.failure_sample):
                    raise ProbeError(f"cannot probe {client_config.url}: {_first_attempt(step.failure_sample)}")
                stopped = (f"no request succeeded at {c} in flight ({step.rate_limited} x 429, {step.shed} x 503, "
                           f"{step.errors} other errors" + (f": {step.error_sample}" if step.error_sample else "")
                           + ")")
                break
            if step.errors > 0.5 * step.sent:
                stopped = f"most requests failed at {c} in flight: {step.error_sample}"
                break
            if len(steps) == 1:
                base_rejects = step.rejected_share
            prev = next((s for s in reversed(steps[:-1]) if not s.refinement), None)
            if not any(s.saturated for s in steps) and step.p50 is not None:
                base = min(base or step.p50, step.p50)
            if prev is not None and _saturated(step, prev, base, base_rejects, margin):
                step.saturated = True
                if sum(s.saturated for s in steps) >= 2:
                    stopped = "throughput stopped rising (confirmed)"
                    break
            elif any(s.saturated for s in steps):  # it rose again: that knee was noise, not the service
                for s in steps:
                    if s.saturated:
                        s.saturated, s.noisy = False, True
            if c >= ceiling:
                stopped = stopped or f"reached the ceiling of {ceiling} in flight"
                break
            if time.monotonic() - t0 > budget_seconds:
                stopped = f"probing budget of {budget_seconds:g} s spent"
                break
            c = min(ceiling, c * 2)
        if refine and base:
            est = _capacity(steps, service_mean(steps, base) or base)
            lo = max((s.concurrency for s in steps if not s.saturated), default=0)
            hi = min((s.concurrency for s in steps if s.saturated), default=0)
            if est and lo < round(est) < hi and time.monotonic() - t0 <= budget_seconds:
                seconds = step_seconds or max(min_step_seconds, waves * base)
                step = await run_step(client, texts, round(est), seconds, service=service)
                step.refinement = True
                prev = max((s for s in steps if s.concurrency == lo), key=lambda s: s.concurrency)
                step.saturated = _saturated(step, prev, base, base_rejects, margin)
                steps.append(step)
                if progress:
                    progress(step)
    result = _conclude(client_config.url, steps, base, ceiling, time.monotonic() - t0, stopped or "done", margin)
    result.service_pid = service.pid if service is not None else None
    return result


def service_mean(steps: list[Step], base: float) -> float | None:
    """The unloaded mean service time: the mean latency of ok requests (each worker's first left out)
    over the steps before the knee whose median stayed within 10% of the unloaded one (no queue yet),
    weighted by their requests. Little's law and the waves of a run need the mean: the median `base`
    the knee is found with falls short of it whenever latency is skewed (lognormal, sigma 0.5: the
    median is 0.88 x the mean, and a capacity read with it comes out 12% low)."""
    knee = next((i for i, s in enumerate(steps) if s.saturated), len(steps))
    calm = [s for s in steps[:knee] if not s.refinement and s.ok and s.steady_latency and s.p50 is not None
            and s.p50 <= base * 1.1]
    if not calm:
        return None
    return sum(s.steady_latency * s.ok for s in calm) / sum(s.ok for s in calm)


def served_at_once(step: Step, base: float) -> float:
    """Requests the service served at once during a step, by Little's law: the ok requests in
    flight (time-averaged while the load was held) times the share of their time spent being
    served (unloaded / steady latency: the rest was queueing), or all of it when the service refused
    the excess (429/503) rather than queueing it. A queue shows as latency,
    load shedding as fewer ok requests in flight. Each worker's first request is left out of the
    latency: it met the start-up wave, not the steady queue."""
    mean = step.steady_latency or step.latency.get("mean")
    if not mean:
        return 0.0
    if step.rejected_share > 0.01:  # shedding: what was not served was refused, not queued
        return step.occupancy
    return step.occupancy * min(1.0, base / mean)


def _capacity(steps: list[Step], base: float) -> float | None:
    """The median of served_at_once over the saturated steps. None when no step saturated, or
    when 429s (a rate limit) are what held the throughput."""
    sat = [s for s in steps if s.saturated and s.rate_limited <= s.shed + 0.05 * s.sent]
    if not sat or not base:
        return None
    return statistics.median(served_at_once(s, base) for s in sat)


def _rate_limit(steps: list[Step]) -> float | None:
    """Requests/s granted once 429s appear: the ok rate in the second half of saturated steps
    (the first half still spends the service's burst allowance)."""
    limited = [s for s in steps if s.saturated and s.rate_limited > max(s.shed, 0.05 * s.sent)]
    if not limited:
        return None
    return statistics.median(s.late_ok_rate for s in limited)


def _conclude(url: str, steps: list[Step], base: float | None, ceiling: int, seconds: float, stopped: str,
              margin: float) -> RampResult:
    # The unloaded latency reported, recommended with and predicted with is the mean service time (as a
    # simulator's configured latency is); the median only found the knee.
    base = (service_mean(steps, base) or base) if base else None
    capacity = _capacity(steps, base) if base else None
    rate = _rate_limit(steps)
    base = round(base, 4) if base else None
    capacity = round(capacity, 1) if capacity else None
    rate = round(rate, 2) if rate else None
    result = RampResult(url=url, steps=steps, latency=base, capacity=capacity, rate_limit=rate, ceiling=ceiling,
                        probing_seconds=seconds, stopped=stopped, margin=margin)
    if base and any(s.ok for s in steps):
        result.recommended = recommend(base, capacity, rate, ceiling)
    return result


def recommend(latency: float, capacity: float | None, rate_limit: float | None, ceiling: int) -> Recommendation:
    """Concurrency that fills the service and no more: its capacity, or rate x latency (plus a
    little headroom) when the rate limit binds first, or the ceiling when neither was seen.
    Rounded up (whole_capacity): one request too many costs next to nothing, one too few a wave."""
    c = float(ceiling)
    if capacity:
        c = min(c, capacity)
    if rate_limit:
        c = min(c, rate_limit * latency * 1.1)
    c = whole_capacity(c)
    engine = "asyncio" if c <= RAY_ABOVE else "ray"
    binds = rate_limit if rate_limit and rate_limit * latency <= (capacity or math.inf) else None
    return Recommendation(max_concurrent_tasks=c, connector_limit=c, engine=engine, rate_limit=binds)


def predict_seconds(requests: int, latency: float, concurrency: int, capacity: float | None,
                    rate_limit: float | None) -> float:
    """Wall time of `requests` requests: ceil(N / min(C, capacity)) x latency, or N / rate when the
    rate limit binds (whichever is longer). The capacity counts as the whole number recommend() fills
    (whole_capacity, rounded up), so the prediction is for the recommended run as it will go."""
    if requests <= 0:
        return 0.0
    width = min(concurrency, whole_capacity(capacity) if capacity else math.inf)
    out = math.ceil(requests / max(1, width)) * latency
    if rate_limit:
        out = max(out, requests / rate_limit)
    return out


def ramp(client_config: ClientConfig, *, input: str | Path | None = None, save_profile: str | None = None,
         name: str = "", **kw) -> RampResult:
    """Blocking ramp (safe in Jupyter); with `input`, predicts that file's wall time at the
    recommended settings; with `save_profile`, writes the probed profile (profiles/NAME.yaml)."""
    sample, requests = read_input(input) if input is not None else (None, 0)
    result = run_sync(ramp_async(client_config, input=sample, **kw))
    if input is not None and result.recommended and result.latency:
        result.input_lines = requests
        result.predicted_seconds = predict_seconds(result.input_lines, result.latency,
                                                   result.recommended.max_concurrent_tasks, result.capacity,
                                                   result.rate_limit)
    result.profile = profile_from(result, client_config, name=name or (save_profile or ""))
    if save_profile:
        result.profile.save(save_profile)
    return result


def profile_from(result: RampResult, client_config: ClientConfig, name: str = "") -> ServiceProfile:
    """The probed profile: figures the ramp measured are `probed`, the rest `unknown`."""
    def known(v):
        return Known(float(v), "probed") if v else Known()

    return ServiceProfile(url=client_config.url, name=Path(name).stem if name else "",
                          request_field=client_config.request_field, score_field=client_config.score_field,
                          api_key_env=client_config.api_key_env, latency=known(result.latency),
                          capacity=known(result.capacity), rate_limit=known(result.rate_limit),
                          probed_at=now_stamp(),
                          notes=f"probe --ramp up to {result.ceiling} in flight: {result.stopped}" +
                          (f"; warning: {w}" if (w := result.client_bound()) else ""))


# --- figure -------------------------------------------------------------------------------------
def plot_ramp(result: RampResult):
    """Throughput and latency vs requests in flight, with Little's-law line (c / unloaded latency),
    the knee (capacity) and the rate limit marked."""
    from .plots import plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = sorted(result.steps, key=lambda s: s.concurrency)
    cs = [s.concurrency for s in steps]
    ax.plot(cs, [s.throughput for s in steps], "o-", label="measured ok/s")
    if result.latency:
        xs = [1, max(cs)]
        ax.plot(xs, [x / result.latency for x in xs], "k--", lw=1,
                label=f"Little's law: c / {result.latency:.3f} s")
    if result.capacity:
        ax.axvline(result.capacity, color="C3", ls=":", label=f"knee: capacity ~{result.capacity:.0f}")
    if result.rate_limit:
        ax.axhline(result.rate_limit, color="C2", ls=":", label=f"rate limit ~{result.rate_limit:.1f}/s")
    sat = [s for s in steps if s.saturated]
    ax.scatter([s.concurrency for s in sat], [s.throughput for s in sat], s=90, facecolors="none",
               edgecolors="C3", zorder=3, label="saturated steps")
    ax.set(xscale="log", yscale="log", xlabel="requests in flight", ylabel="ok answers per second",
           title="Throughput vs in flight")
    ax.legend(fontsize=8)
    ax2.plot(cs, [s.latency.get("p50") for s in steps], "o-", label="p50")
    ax2.plot(cs, [s.latency.get("p90") for s in steps], "s--", alpha=0.7, label="p90")
    if result.latency:
        ax2.axhline(result.latency, color="k", lw=1, label="unloaded latency")
        ax2.axhline(result.latency * (1 + result.margin), color="k", lw=1, ls=":",
                    label=f"+{result.margin:.0%} margin")
    if result.capacity:
        ax2.axvline(result.capacity, color="C3", ls=":")
    ax2.set(xscale="log", xlabel="requests in flight", ylabel="latency of ok requests (s)",
            title="Latency vs in flight")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
