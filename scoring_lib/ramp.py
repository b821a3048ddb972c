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
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from .aio import run_sync
from .client import Outcome, ScoringClient
from .config import ClientConfig
from .errors import ScoringError
from .failures import Failure, FailureKind
from .inputs import read_lines
from .probe import PROBE_TEXTS
from .ramp_result import (
    RampResult,
    Step,
    limit_kind,
    predict_seconds,
    profile_from,
    read_capacity,
    read_rate_limit,
    recommend,
    served_at_once,
    service_mean,
)
from .stats import percentiles

LOOPBACK = ("127.0.0.1", "::1", "localhost")
UNRELIABLE = 0.25  # a share of attempts failing at 1 in flight above which the ramp reads no limits


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


# --- one step -----------------------------------------------------------------------------------
async def run_step(client: ScoringClient, texts, concurrency: int, seconds: float, rounds: int = 3,
                   service: psutil.Process | None = None, retries: int = 0) -> Step:
    """Keep `concurrency` requests in flight for `seconds`, and until every worker has had `rounds`
    answers (a queue's latency can exceed the step); then let the last ones finish (each bounded by
    the client's timeout). A rejected request's worker waits the client's backoff, Retry-After first,
    then sends the same text again after a failure the client retries, up to `retries` times, as a run
    would (a flaky service fails a text's first attempts only); every attempt is counted.
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
        failures = done = tries = 0
        text = next(texts)
        while time.time() < stop_at or done < rounds:
            o = await client.score(text)
            outcomes.append(o)
            done += 1
            again = not o.ok and o.failure is not None and o.failure.retryable and tries < retries
            tries = tries + 1 if again else 0
            text = text if again else next(texts)
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
    _count_refusals(step, outcomes)
    _timing(step, outcomes, ok, stop_at)
    step.latency = percentiles([o.latency for o in ok])
    step.steady_latency = statistics.fmean(steady) if steady else step.latency.get("mean")
    step.retry_after = statistics.median(waits) if waits else None
    return step


def _count_refusals(step: Step, outcomes: list) -> None:
    """A step's failed requests by kind: 429 (a rate limit), 503 (shedding), anything else (an error,
    the first one kept as a sample)."""
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


def _timing(step: Step, outcomes: list, ok: list, stop_at: float) -> None:
    """Throughput, occupancy and the late half's ok rate, over the step's first send to its last answer."""
    if not outcomes:
        return
    first = min(o.sent for o in outcomes)
    last = max(o.finished for o in outcomes)
    end = max(stop_at, max(o.sent for o in outcomes))
    step.seconds = max(1e-9, last - first)
    step.throughput = step.ok / step.seconds
    step.occupancy = sum(max(0.0, min(o.finished, end) - max(o.sent, first)) for o in ok) / max(1e-9, end - first)
    mid = first + (end - first) / 2
    late = [o for o in ok if o.sent >= mid]
    step.late_ok_rate = len(late) / max(1e-9, end - mid)


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

    sample: list[str] = []
    seen: set[bytes] = set()
    for item in read_lines(input, 1 << 20):
        if item.text is not None:
            if len(sample) < limit:
                sample.append(item.text)
            seen.add(hashlib.blake2b(item.text.encode("utf-8"), digest_size=8).digest())
    return sample, len(seen)


# --- the ramp ---------------------------------------------------------------------------------
def _knee(steps: list[Step], base: float, base_rejects: float, margin: float) -> bool:
    """Mark the last step saturated (or, if it rose again, the earlier knee as noise); True once a
    second step confirms the knee."""
    step = steps[-1]
    prev = next((s for s in reversed(steps[:-1]) if not s.refinement), None)
    if prev is not None and _saturated(step, prev, base, base_rejects, margin):
        step.saturated = True
        return sum(s.saturated for s in steps) >= 2
    if any(s.saturated for s in steps):  # it rose again: that knee was noise, not the service
        for s in steps:
            if s.saturated:
                s.saturated, s.noisy = False, True
    return False


def _failed(step: Step) -> str:
    """Why the ramp cannot go on from this step (no success, or mostly failures), or ""."""
    c = step.concurrency
    if step.ok == 0:
        return (f"no request succeeded at {c} in flight ({step.rate_limited} x 429, {step.shed} x 503, "
                f"{step.errors} other errors" + (f": {step.error_sample}" if step.error_sample else "") + ")")
    if step.errors > 0.5 * step.sent:
        return f"most requests failed at {c} in flight: {step.error_sample}"
    return ""


def _unreliable(step: Step) -> str:
    """Why a step at 1 in flight (no load) shows the service too unreliable to ramp, or "": more than
    UNRELIABLE of its attempts failed. Failures without load say nothing about a limit, and refusals that
    come anyway would read as one: no capacity is read from such a curve, rather than a wrong one."""
    failed = step.sent - step.ok
    if step.concurrency > 1 or step.ok == 0 or failed <= UNRELIABLE * step.sent:
        return ""
    sample = f": {step.error_sample}" if step.error_sample else ""
    return (f"too unreliable to ramp: {failed} of {step.sent} attempts failed with 1 in flight, no load "
            f"({step.rate_limited} x 429, {step.shed} x 503, {step.errors} other errors{sample}), so its "
            f"refusals say nothing about its limits; `score` retries such failures (--max-retries)")


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
    cfg, cfg_retries = replace(client_config, max_retries=0), client_config.max_retries  # run_step retries, counting
    texts = _texts(input)
    service = service_process(client_config.url, service_pid)
    t0 = time.monotonic()
    steps: list[Step] = []
    stopped = ""
    broken = False  # a step got no success, or mostly failures: no advice from this curve
    async with ScoringClient(cfg, concurrency=ceiling) as client:
        first = await client.score(next(texts))
        if not first.ok and _fatal(first.failure):
            raise ProbeError(f"cannot probe {client_config.url}: {_first_attempt(first.failure)}")
        base = first.latency if first.ok else None
        c = 1
        base_rejects = 0.0
        while True:
            seconds = step_seconds or max(min_step_seconds, waves * (base or 0.2))
            step = await run_step(client, texts, c, seconds, service=service, retries=cfg_retries)
            steps.append(step)
            if progress:
                progress(step)
            if step.ok == 0 and len(steps) == 1 and _fatal(step.failure_sample):
                raise ProbeError(f"cannot probe {client_config.url}: {_first_attempt(step.failure_sample)}")
            if (stopped := _unreliable(step) or _failed(step)):
                base, broken = base or step.p50, True  # a flaky service's latency is measured, its limits are not
                break
            if len(steps) == 1:
                base_rejects = step.rejected_share
            if not any(s.saturated for s in steps) and step.p50 is not None:
                base = min(base or step.p50, step.p50)
            if _knee(steps, base, base_rejects, margin):
                stopped = "throughput stopped rising (confirmed)"
                break
            if c >= ceiling:
                stopped = stopped or f"reached the ceiling of {ceiling} in flight"
                break
            if time.monotonic() - t0 > budget_seconds:
                stopped = f"probing budget of {budget_seconds:g} s spent"
                break
            c = min(ceiling, c * 2)
        if refine and base and time.monotonic() - t0 <= budget_seconds:
            seconds = step_seconds or max(min_step_seconds, waves * base)
            step = await _refine(client, texts, steps, base, seconds, service, base_rejects, margin, cfg_retries)
            if step is not None and progress:
                progress(step)
    result = _conclude(client_config.url, steps, base, ceiling, time.monotonic() - t0, stopped or "done", margin,
                       broken)
    result.service_pid = service.pid if service is not None else None
    return result


async def _refine(client: ScoringClient, texts, steps: list[Step], base: float, seconds: float,
                  service: psutil.Process | None, base_rejects: float, margin: float, retries: int = 0) -> Step | None:
    """A step at the capacity read so far, when it falls between the last two doublings: it refines the
    estimate (appended to `steps`, and returned)."""
    est = read_capacity(steps, service_mean(steps, base) or base)
    lo = max((s.concurrency for s in steps if not s.saturated), default=0)
    hi = min((s.concurrency for s in steps if s.saturated), default=0)
    if not est or not lo < round(est) < hi:
        return None
    step = await run_step(client, texts, round(est), seconds, service=service, retries=retries)
    step.refinement = True
    prev = max((s for s in steps if s.concurrency == lo), key=lambda s: s.concurrency)
    step.saturated = _saturated(step, prev, base, base_rejects, margin)
    steps.append(step)
    return step


def _conclude(url: str, steps: list[Step], base: float | None, ceiling: int, seconds: float, stopped: str,
              margin: float, broken: bool = False) -> RampResult:
    """The result; its advice follows its data: no recommendation when a step got no success or
    mostly failures (`broken`: the service cannot take the load the recommendation would put on it)."""
    # The unloaded latency reported, recommended with and predicted with is the mean service time (as a
    # simulator's configured latency is); the median only found the knee.
    base = (service_mean(steps, base) or base) if base else None
    capacity = read_capacity(steps, base) if base else None
    rate = read_rate_limit(steps)
    kind = limit_kind(steps, base, margin)
    base = round(base, 4) if base else None
    capacity = round(capacity, 1) if capacity else None
    rate = round(rate, 2) if rate else None
    result = RampResult(url=url, steps=steps, latency=base, capacity=capacity, rate_limit=rate, ceiling=ceiling,
                        probing_seconds=seconds, stopped=stopped, margin=margin, limit_kind=kind)
    if base and any(s.ok for s in steps) and not broken:
        result.recommended = recommend(base, capacity, rate, ceiling)
    return result


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
    if save_profile and result.latency:  # a ramp that measured nothing saves nothing: a profile of unknowns
        result.profile.save(save_profile)  # would only hide that the probe failed
    return result
