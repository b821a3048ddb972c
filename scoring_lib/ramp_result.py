"""What `probe --ramp` found: each step's numbers, the result, its lines and its figure (ramp.py
runs the ramp and reads these off the curve)."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from .config import ClientConfig
from .failures import Failure
from .service import Known, ServiceProfile, now_stamp, whole_capacity

RAY_ABOVE = 4096  # in-flight requests beyond which one asyncio process is not the recommendation
CPU_BUSY = 0.8  # a process using more of a core than this at the knee may be what bent the curve
MACHINE_BUSY = 0.9  # likewise the whole machine's CPUs


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
    limit_kind: str | None = None  # rate, queueing, shedding, or queueing then shedding (ramp.limit_kind)

    def to_dict(self) -> dict:
        """The `--json` object: latency, capacity, rate_limit, recommended, predicted_seconds, and the curve."""
        return {
            "url": self.url, "latency": self.latency, "capacity": self.capacity, "rate_limit": self.rate_limit,
            "limit_kind": self.limit_kind,
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
        out.append("kind of limit: " + (self.limit_kind or "none seen"))
        out.append("rate limit: " + self._rate_text())
        if self.recommended:
            r = self.recommended
            out.append(f"recommended: --max-concurrent-tasks {r.max_concurrent_tasks} --connector-limit "
                       f"{r.connector_limit} --engine {r.engine}" +
                       (f" (service rate limit {r.rate_limit:.1f}/s binds)" if r.rate_limit else ""))
        else:
            out.append("recommended: none (the ramp could not load the service: see `stopped`)")
        if self.predicted_seconds is not None:
            out.append(f"predicted wall time for {self.input_lines} lines: {self.predicted_seconds:.1f} s")
        return out

    def _rate_text(self) -> str:
        """The rate limit found, or what the 429s seen say when no steady rate could be read."""
        if self.rate_limit:
            return f"about {self.rate_limit:.1f} requests/s"
        seen = sum(s.rate_limited for s in self.steps)
        if seen:
            return f"{seen} x 429 seen, but no steady rate could be read from them"
        return "none seen (no 429s)"

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


# --- figure -------------------------------------------------------------------------------------
def plot_ramp(result: RampResult):
    """Throughput and latency vs requests in flight, with Little's-law line (c / unloaded latency),
    the knee (capacity) and the rate limit marked."""
    from .mpl import plt  # matplotlib is heavy and only figures need it

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


# --- reading the curve ---------------------------------------------------------------------------
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
    served (unloaded / steady latency: the rest was queueing). A queue shows as latency, load shedding
    as fewer ok requests in flight, and a proxy that queues some then sheds the rest (Ray Serve) as
    both: its ok requests waited too, so the latency share applies whether or not 503s came (counting
    every ok request in flight as served read 2 replicas x 8 behind a queue of 16 as 25, not 16).
    Each worker's first request is left out of the latency: it met the start-up wave, not the queue."""
    mean = step.steady_latency or step.latency.get("mean")
    if not mean:
        return 0.0
    return step.occupancy * min(1.0, base / mean)


def limit_kind(steps: list[Step], base: float | None, margin: float) -> str | None:
    """Which kind of limit bent the curve, read off the saturated steps: `rate` (429s), `queueing`
    (latency rose, nothing refused), `shedding` (503s at once, latency flat) or `queueing, then
    shedding` (latency rose and 503s came: a bounded queue in front of the replicas). None when the
    ramp never saturated."""
    sat = [s for s in steps if s.saturated] or [s for s in steps if s.noisy]
    if not sat or not base:
        return None
    if sum(s.rate_limited for s in sat) > sum(s.shed for s in sat):
        return "rate"
    queued = any(s.steady_latency is not None and s.steady_latency > base * (1 + margin) for s in sat)
    shed = any(s.shed > 0.01 * s.sent for s in sat)
    return {(True, True): "queueing, then shedding", (True, False): "queueing",
            (False, True): "shedding"}.get((queued, shed), "queueing")


def read_capacity(steps: list[Step], base: float) -> float | None:
    """The median of served_at_once over the saturated steps. None when no step saturated, or
    when 429s (a rate limit) are what held the throughput."""
    sat = [s for s in steps if s.saturated and s.rate_limited <= s.shed + 0.05 * s.sent]
    if not sat or not base:
        return None
    return statistics.median(served_at_once(s, base) for s in sat)


def read_rate_limit(steps: list[Step]) -> float | None:
    """Requests/s granted once 429s appear: the ok rate in the second half of saturated steps
    (the first half still spends the service's burst allowance)."""
    limited = [s for s in steps if s.saturated and s.rate_limited > max(s.shed, 0.05 * s.sent)]
    if not limited:
        return None
    return statistics.median(s.late_ok_rate for s in limited)


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
