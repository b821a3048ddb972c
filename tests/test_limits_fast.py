"""The limiter's fast path (a fixed limit, no rate, the gate open, nothing paused): the same counts, stats
and state as the general path, and not taken where a rate, `auto`, a closed gate, a pause, a quota
window or a stopped run applies."""

from __future__ import annotations

import asyncio
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from scoring_lib.failures import Failure, FailureKind, http_failure
from scoring_lib.limits import Attempt, LimitSettings, RunLimiter, Stop


def general_only(limiter: RunLimiter) -> RunLimiter:
    """The same limiter with its fast path off: every attempt through `_try_take` and `_release`."""
    limiter._fixed_slots = 0
    return limiter


def counting(limiter: RunLimiter) -> dict:
    """Count the fast path's takes and releases on `limiter` (wrapping its methods)."""
    calls = {"take": 0, "release": 0}
    take, release = limiter._take_fast, limiter._release_fast

    def counted_take(now):
        got = take(now)
        calls["take"] += got
        return got

    def counted_release(ticket, now):
        calls["release"] += 1
        release(ticket, now)

    limiter._take_fast, limiter._release_fast = counted_take, counted_release
    return calls


def state(lim: RunLimiter) -> dict:
    """Everything the limiter counts or decides with, times left out (two limiters run a moment apart)."""
    stats = lim.stats()
    stats.pop("started_at")
    ff, w, r = lim.failfast, lim.windows, lim.rate
    return {
        "stats": stats, "in_flight": lim.in_flight, "started": lim.started, "released": lim.released,
        "peak": lim._peak, "closed_streak": lim._closed_streak, "paused": lim.pause_until > 0,
        "failfast": (dict(ff.kinds), dict(ff.fatal), ff.successes, ff.streak, dict(ff.streak_kinds), ff.opened,
                     str(ff.stopped) if ff.stopped else None),
        "windows": (w.sending, w.sent, w.served, w.count, w.windows, w.allowance, w.end, w.first is None),
        "rate": (r._answers, r._throttles, r._others, r.cuts, r.rate, r.binding, lim.pacer.rate),
        "rate_history": [v for _, v in lim.rate_history],
    }


OUTCOMES = {
    "ok": lambda: Attempt(None, 0.001),
    "503": lambda: Attempt(http_failure(503), 0.001),
    "500": lambda: Attempt(http_failure(500), 0.001),
    "429": lambda: Attempt(http_failure(429), 0.001),
    "timeout": lambda: Attempt(Failure(FailureKind.TIMEOUT, message="timeout"), 0.001),
    "401": lambda: Attempt(http_failure(401), 0.001),
    "cancelled": lambda: Attempt(None, 0.001, cancelled=True),
}


def lockstep(settings_: LimitSettings, script: list[tuple[int, str]]) -> tuple[dict, dict, dict]:
    """Run `script` on two limiters of `settings_`, one with its fast path and one without, step by step
    on one event loop: each step takes up to `n` slots (never more than may be taken at once without
    waiting) and answers them with one outcome. Returns both states and the fast path's calls."""
    fast, general = RunLimiter(settings_), general_only(RunLimiter(settings_))
    calls = counting(fast)
    states: list[dict] = []

    async def main():
        gates = (fast.gate(), general.gate())
        for n, outcome in script:
            for lim, gate in zip((fast, general), gates):
                tickets = []
                for _ in range(n):
                    ff = lim.failfast
                    if lim.in_flight >= lim.settings.limit or not (
                            ff.opened or ff.successes or lim.released >= lim.settings.probe
                            or lim.started < lim.settings.probe):
                        break  # it would wait: a slot or the gate is closed
                    try:
                        tickets.append(await asyncio.wait_for(gate.acquire(), 10))
                    except Stop:
                        break
                for t in tickets:
                    gate.release(t, OUTCOMES[outcome]())
        states.extend(state(lim) for lim in (fast, general))

    asyncio.run(main())
    return states[0], states[1], calls


def test_the_fast_path_counts_as_the_general_path_does():
    script = [(2, "ok"), (4, "ok"), (3, "503"), (4, "ok"), (1, "cancelled"), (2, "timeout"), (4, "ok"),
              (2, "429"), (3, "ok"), (1, "500"), (4, "ok")]
    fast, general, calls = lockstep(LimitSettings(limit=4, probe=2, grace=60), script)
    assert fast == general
    assert calls["take"] > 10 and calls["release"] > 10  # the fast path ran, and not only at the start
    assert fast["stats"]["attempt_kinds"] == {"ok": 21, "HTTP 503": 3, "cancelled": 1, "timeout": 2,
                                              "HTTP 429": 2, "HTTP 500": 1}


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 6), st.sampled_from(sorted(OUTCOMES))), max_size=30),
       st.integers(1, 5), st.integers(1, 4))
def test_any_run_of_outcomes_leaves_both_paths_in_the_same_state(script, limit, probe):
    fast, general, _ = lockstep(LimitSettings(limit=limit, probe=probe, trip=3, grace=60), script)
    assert fast == general


def test_the_fast_path_is_only_for_a_fixed_limit_without_a_rate():
    assert RunLimiter(LimitSettings(limit=7))._fixed_slots == 7
    assert RunLimiter(LimitSettings(limit=7).share(0, 2))._fixed_slots == 4  # a Ray worker's whole share
    assert RunLimiter(LimitSettings(limit=7, rate=50.0))._fixed_slots == 0
    assert RunLimiter(LimitSettings(limit=7, adaptive=True))._fixed_slots == 0
    assert RunLimiter(LimitSettings(limit=7, adaptive=True, adaptive_rate=False))._fixed_slots == 0


def test_a_rate_limit_paces_every_send_without_the_fast_path():
    lim = RunLimiter(LimitSettings(limit=8, rate=100.0, probe=1))
    calls = counting(lim)

    async def main():
        gate = lim.gate()
        t0 = time.monotonic()
        for _ in range(30):
            gate.release(await gate.acquire(), Attempt(None, 0.001))
        return time.monotonic() - t0

    took = asyncio.run(main())
    assert calls == {"take": 0, "release": 0}
    assert took >= (30 - 10 - 1) / 100  # the pacer's burst of 10 (0.1 s of the rate), then 100 per second


def test_auto_adapts_without_the_fast_path():
    lim = RunLimiter(LimitSettings(limit=64, adaptive=True, initial=4, probe=1))
    calls = counting(lim)

    async def main():
        gate = lim.gate()
        for _ in range(40):
            gate.release(await gate.acquire(), Attempt(None, 0.001))

    asyncio.run(main())
    assert calls == {"take": 0, "release": 0}
    assert lim.stats()["final_limit"] > 4  # slow start grew it


def test_the_closed_gate_a_pause_a_window_and_a_stop_take_the_general_path():
    lim = RunLimiter(LimitSettings(limit=4, probe=2, grace=60))
    now = time.monotonic()
    assert not lim._take_fast(now)  # probing: no reply yet
    lim.open_gate()
    assert lim._take_fast(now) and lim.in_flight == 1
    lim.pause_until = now + 10
    assert not lim._take_fast(now)  # the service said it is closed
    lim.pause_until = 0.0
    lim.windows.end = now + 1
    assert not lim._take_fast(now)  # a quota window is known: its allowance decides
    lim.windows.end = None
    lim.in_flight = 4
    assert not lim._take_fast(now)  # no slot free
    lim.in_flight = 1
    lim.failfast.stopped = Stop("stopped", http_failure(401), True)
    assert not lim._take_fast(now)
    assert lim.started == 1


def test_failures_and_cancellations_are_released_by_the_general_path():
    lim = RunLimiter(LimitSettings(limit=4, probe=1))
    lim.open_gate()
    calls = counting(lim)
    general = []
    real = lim._release
    lim._release = lambda *a, **k: general.append(a[1].label) or real(*a, **k)

    async def main():
        gate = lim.gate()
        for attempt in (Attempt(None, 0.001), Attempt(http_failure(503), 0.001), Attempt(cancelled=True),
                        Attempt(Failure(FailureKind.TIMEOUT, message="timeout")), Attempt(None, 0.001)):
            gate.release(await gate.acquire(), attempt)

    asyncio.run(main())
    assert calls == {"take": 5, "release": 2}
    assert general == ["HTTP 503", "cancelled", "timeout"]


def test_a_stopped_run_releases_by_the_general_path_and_wakes_every_waiter():
    lim = RunLimiter(LimitSettings(limit=1, probe=1, grace=60))
    lim.open_gate()
    calls = counting(lim)

    async def main():
        gate = lim.gate()
        first = await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.01)  # it waits for the one slot
        lim.failfast.stopped = Stop("stopped", http_failure(401), True)
        gate.release(first, Attempt(None, 0.001))
        try:
            await asyncio.wait_for(waiter, 5)
        except Stop:
            return "stopped"

    assert asyncio.run(main()) == "stopped"
    assert calls["release"] == 0
