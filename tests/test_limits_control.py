"""The control of `auto` on the zoo's hard cases (issue 16): quota windows read from Retry-After, lines in
their backoff not counted as requests in flight, 429s of a flaky service, slow start's overshoot of a
proxy queue, and a start from a profile's probed capacity."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time

import pytest

from scoring_lib import ServerConfig, score_file
from scoring_lib.client import ScoringClient
from scoring_lib.concurrency import AdaptiveConcurrency
from scoring_lib.config import ClientConfig
from scoring_lib.engines.asyncio_engine import LoopPool
from scoring_lib.failures import http_failure
from scoring_lib.limit_settings import profile_start, settings_for
from scoring_lib.limits import Attempt, LimitSettings, RunLimiter
from scoring_lib.rate import RateControl
from scoring_lib.server import ServiceProcess
from scoring_lib.windows import WINDOW_STREAK, QuotaWindows

from conftest import read_rows, run_config


# -- quota windows --------------------------------------------------------------------------------------
def _refuse(w: QuotaWindows, start: float, step: float, end_of) -> float | None:
    """WINDOW_STREAK refusals received `step` apart from `start`; `end_of(now)` is the instant each names."""
    found = None
    for i in range(WINDOW_STREAK):
        now = start + i * step
        found = w.on_refusal(now, end_of(now) - now) or found
    return found


def test_refusals_that_point_at_one_instant_are_a_quota_window():
    w = QuotaWindows(t0=100.0)
    assert _refuse(w, 100.5, 0.01, lambda now: 102.0) == 102.0
    assert w.windows == 1 and w.length == 2.0  # the first window's length: from the run's start


def test_a_token_buckets_whole_second_retry_after_is_no_window():
    w = QuotaWindows(t0=100.0)
    assert _refuse(w, 100.5, 0.01, lambda now: now + 1.0) is None  # each points 1 s after its own arrival
    assert _refuse(w, 100.6, 0.001, lambda now: 100.61) is None  # a next token 10 ms away: no window either
    assert w.windows == 0 and w.wait(100.7) == 0.0


def test_a_success_sent_after_the_streak_began_breaks_it():
    w = QuotaWindows(t0=100.0)
    for i in range(WINDOW_STREAK - 1):
        w.on_refusal(100.5 + i * 0.01, 102.0 - (100.5 + i * 0.01))
    w.on_success(sent=100.4)  # sent before the first refusal: contradicts nothing
    assert w.on_refusal(100.6, 1.4) == 102.0
    for i in range(WINDOW_STREAK - 1):
        w.on_refusal(102.5 + i * 0.01, 104.0 - (102.5 + i * 0.01))
    w.on_success(sent=102.55)  # the service was open after the streak began: no window
    assert w.on_refusal(102.6, 1.4) is None


def test_each_window_after_sends_what_the_last_one_served_then_waits_for_its_end():
    w = QuotaWindows(t0=100.0)
    for _ in range(40):
        w.on_send(100.0)
        w.on_success(sent=100.1)
    assert _refuse(w, 100.5, 0.01, lambda now: 102.0) == 102.0
    assert w.wait(102.0) == 0.0  # the window ended: the next one begins
    assert w.allowance == 41  # 40 served, and a probe
    for _ in range(41):
        assert w.wait(102.1) == 0.0
        w.on_send(102.1)
    assert math.isclose(w.wait(102.1), 1.9)  # its allowance spent: wait for the predicted end
    w.on_success(sent=102.0)
    assert _refuse(w, 104.5, 0.01, lambda now: 106.5) == 106.5  # a window longer than predicted: seen again
    assert w.length == 4.5 and w.windows == 2


def test_refusals_that_point_at_the_window_already_seen_are_no_new_window():
    """Read a little late (a busy loop) or rounded, a second streak names the last end seen again, a few ms
    earlier or later: taken as a new window, its length was that gap (or below zero) and a Ray worker's loop
    spun for minutes rolling into the next window."""
    w = QuotaWindows(t0=100.0)
    for _ in range(40):
        w.on_send(100.0)
        w.on_success(sent=100.1)
    assert _refuse(w, 100.5, 0.01, lambda now: 102.0) == 102.0
    assert w.wait(102.0) == 0.0 and w.end == pytest.approx(104.0)  # rolled: the next window is predicted
    for earlier in (0.003, -0.004):  # the same end read again, just before or after it
        assert _refuse(w, 101.5, 0.001, lambda now: 102.0 - earlier) is None
    assert w.windows == 1 and w.length == pytest.approx(2.0) and w.end == pytest.approx(104.0)
    assert w.wait(110.5) == 0.0 and w.end == pytest.approx(112.0)  # windows that ended unseen: rolled at once


def test_rolling_into_the_next_window_never_spins_on_a_length_of_zero():
    w = QuotaWindows(t0=0.0)
    w.end, w.length, w.allowance = 1.0, 0.0, 5
    assert w.wait(1e6) == 0.0 and w.end > 1e6


def test_a_window_that_sent_its_whole_allowance_unrefused_grows_the_next_by_half():
    """A Ray worker's share of a quota: served + 1 a window grew a worker that had few lines in the first
    window by one line a window, and the run took 5 windows where 4 held it (zoo: Ray x4 1.48x the best fixed)."""
    w = QuotaWindows(t0=100.0)
    for _ in range(20):
        w.on_send(100.0)
        w.on_success(sent=100.1)
    assert _refuse(w, 100.5, 0.01, lambda now: 102.0) == 102.0
    assert w.wait(102.0) == 0.0 and w.allowance == 21  # refused in that window: served + a probe
    for _ in range(21):
        w.on_send(102.1)
        w.on_success(sent=102.1)
    assert w.wait(104.0) == 0.0 and w.allowance == 31  # all 21 sent and served, none refused: + half
    for _ in range(31):
        w.on_send(104.1)
    for _ in range(30):
        w.on_success(sent=104.1)
    w.on_refusal(104.2, 1.8)  # one refused: back to probing by 1/64
    assert w.wait(106.0) == 0.0 and w.allowance == 31


def test_the_first_window_is_counted_from_the_first_send_not_the_limiters_start():
    """A Ray worker's limiter starts when the worker boots, seconds before the run sends: the first window's
    length counted from there was 3x the service's 2 s window, and each window after waited for an end
    long past."""
    w = QuotaWindows(t0=100.0)
    for _ in range(10):
        w.on_send(104.2)  # the run's first sends, 4.2 s after the limiter started
        w.on_success(sent=104.2)
    assert _refuse(w, 104.5, 0.01, lambda now: 106.0) == 106.0
    assert w.length == pytest.approx(1.8)  # from the first send: at most the window, not 6 s


def test_a_quota_window_pauses_the_run_until_its_end_and_lifts_the_rate():
    limiter = RunLimiter(LimitSettings(limit=64, adaptive=True, initial=64, probe=1000, pause_cap=5))
    end = time.monotonic() + 0.6

    async def body(gate):
        for _ in range(WINDOW_STREAK):
            t = await gate.acquire()
            gate.release(t, Attempt(http_failure(429, end - time.monotonic()), 0.001))
            await asyncio.sleep(0.002)

    asyncio.run(_with_gate(limiter, body))
    stats = limiter.stats()
    assert stats["quota_windows"] == 1 and stats["final_rate"] is None  # the window answers it, not a rate
    assert stats["retry_after_pauses"] == 1 and abs(limiter.pause_until - end) < 0.01  # until the window's end


async def _with_gate(limiter, body):
    return await body(limiter.gate())


def test_a_pause_takes_no_slot_while_it_lasts():
    limiter = RunLimiter(LimitSettings(limit=4, probe=1000, pause_cap=5))
    limiter.pause_from_peer(time.time() + 2.0)

    async def body(gate):
        task = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.1)  # the task ran up to its wait
        in_flight = limiter.in_flight
        task.cancel()
        return in_flight

    assert asyncio.run(_with_gate(limiter, body)) == 0


def test_a_quota_service_is_read_as_windows_in_a_whole_run(make_input, tmp_path):
    path = make_input([f"quota line {i}" for i in range(150)])
    with ServiceProcess(ServerConfig(latency=0.02, capacity=0, quota=40, quota_window=0.5)) as svc:
        result = score_file(run_config(path, svc.url, tmp_path, cache=None, max_concurrent_tasks="auto",
                                       max_retries=20, backoff_cap=2.0))
    assert result.exit_code == 0 and all(r["status"] == "ok" for r in read_rows(tmp_path / "out.jsonl"))
    assert result.record["limits"]["quota_windows"] >= 1, result.record["limits"]


# -- a flaky service ------------------------------------------------------------------------------------
def test_lines_in_their_backoff_leave_room_for_other_lines():
    pool = LoopPool(ClientConfig(url="http://127.0.0.1:9/"), 1000, 1,
                    limits=LimitSettings(limit=1000, adaptive=True, initial=20))
    pool.threads[0].outstanding = 40  # the limit (20) and as many prefetched: no room
    assert pool.room() == 0
    pool.limiter.backing_off = 30  # 30 of them wait out a retry's backoff: not requests in flight
    assert pool.room() == 30


class _Gate:
    """A limiter's gate that lets every attempt go and notes when lines wait out a backoff."""

    def __init__(self) -> None:
        self.waiting: list[int] = []

    async def acquire(self):
        return None

    def release(self, ticket, attempt) -> None:
        pass

    def backing_off(self, lines: int) -> None:
        self.waiting.append(lines)


def test_the_client_tells_its_limiter_while_a_line_waits_for_a_retry():
    gate = _Gate()

    async def main(url: str):
        config = ClientConfig(url=url, backoff_base=0.01, backoff_cap=0.02, max_retries=5)
        async with ScoringClient(config, 4, rng=random.Random(1), limiter=gate) as client:
            return await client.score("flaky line")

    with ServiceProcess(ServerConfig(latency=0, capacity=0, flaky=2)) as svc:
        outcome = asyncio.run(main(svc.url))
    assert outcome.ok and outcome.attempts == 3 and gate.waiting == [1, -1, 1, -1]


def test_429s_among_other_failures_half_as_many_cut_no_rate():
    rc = RateControl(None, True, 0.0)
    t = 0.0
    for i in range(30):
        rc.on_send(t)
        rc.on_answer(i % 3 != 0, other_failure=i % 3 == 0)  # twice as many 429s as other failures
        t += 0.01
    assert not rc.on_throttle(sent=t, now=t, window=16) and math.isinf(rc.rate)


def test_503s_count_as_other_failures_for_the_rate():
    """A flaky service's 429s come with 503s (and 500s, resets...): no rate cut, whatever their order."""
    limiter = RunLimiter(LimitSettings(limit=64, adaptive=True, initial=64, probe=1000, budget=10**6))

    async def body(gate):
        for status in (429, 503) * 20:
            t = await gate.acquire()
            gate.release(t, Attempt(http_failure(status), 0.001))

    asyncio.run(_with_gate(limiter, body))
    assert limiter.stats()["rate_cuts"] == 0 and limiter.stats()["final_rate"] is None


# -- slow start and a proxy's queue ---------------------------------------------------------------------
def test_a_drop_beyond_the_initial_limit_ends_slow_start_just_under_its_in_flight_count():
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=20, parts=1, growth=2.0, t0=0.0)
    for _ in range(10):
        conc.on_ok(0.3, 20, paced=False)
    conc.pace(1.0)  # a round trip later: the limit has followed what the successes earned
    assert conc.slow_start and conc.limit == 40
    conc.on_drop(sent=0.5, in_flight=15, now=0.5)  # within the initial limit: the window's end decides
    assert conc.slow_start and conc.limit == 40
    conc.on_drop(sent=0.6, in_flight=33, now=0.6)  # the 33rd in flight was refused
    assert not conc.slow_start and conc.limit == 32


def test_a_flaky_services_503_does_not_end_slow_start():
    """A flaky service's 503s come among 500s, resets and bodies that do not parse: slow start goes on (a
    Ray worker's limit, which sizes the lines the driver gives it, stopped at its few lines not in backoff)."""
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=5, parts=4, growth=2.0, t0=0.0)
    for _ in range(3):
        conc.on_other_failure()
        conc.end_of_attempt(0.01)
    for _ in range(5):
        conc.on_ok(0.05, 3, paced=False)
    conc.pace(1.0)
    assert conc.slow_start and conc.limit == 15
    conc.on_drop(sent=0.1, in_flight=9, now=0.1)  # beyond the initial limit, but the service is flaky
    conc.end_of_attempt(0.1)
    assert conc.slow_start and conc.limit == 15 and conc.flaky()


def test_a_flaky_services_503s_cut_no_limit_whatever_a_short_window_holds():
    """A window of a few attempts may hold a 503 and no other failure: the latest failures still say flaky."""
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=40, parts=1, growth=2.0, t0=0.0, slow_start=False)
    for _ in range(6):
        conc.on_other_failure()
    conc._win_ok, conc._win_other = [], 0  # a new window: one drop, two successes, nothing else
    conc.on_drop(sent=1.0, in_flight=10, now=1.0)
    conc.on_ok(0.05, 10, paced=False, sent=1.0, now=1.0)
    conc.on_ok(0.05, 10, paced=False, sent=1.0, now=1.0)
    conc._win_count = conc._win_target - 1
    conc.end_of_attempt(1.0)
    assert conc.limit == 40


def test_a_shedding_services_drops_still_cut_after_a_few_other_failures():
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=40, parts=1, growth=2.0, t0=0.0, slow_start=False)
    conc.on_other_failure()  # one reset among many 503s
    for _ in range(6):
        conc.on_drop(sent=1.0, in_flight=40, now=1.0)
    conc._win_count = conc._win_target - 1
    conc.end_of_attempt(1.0)
    assert not conc.flaky() and conc.limit < 40


# -- a start from a profile -----------------------------------------------------------------------------
def _profile(value, source: str) -> dict:
    return {"profile": {"capacity": {"value": value, "source": source}}}


def test_auto_starts_at_a_profiles_probed_capacity_past_slow_start(make_input, tmp_path):
    path = make_input([f"line {i}" for i in range(4)])
    auto = run_config(path, "http://127.0.0.1:9/", tmp_path, max_concurrent_tasks="auto")
    started = profile_start(auto, _profile(137, "probed"))
    assert started.auto_start == 137
    s = settings_for(started)
    assert (s.initial, s.slow_start, s.start_from) == (137, False, "profile capacity 137")
    for info in (_profile(137, "configured"), _profile(None, "unknown"), _profile("many", "probed"), None, {}):
        assert profile_start(auto, info) is auto  # a simulator's own figure, or nothing measured
    fixed = run_config(path, "http://127.0.0.1:9/", tmp_path, max_concurrent_tasks=8)
    assert profile_start(fixed, _profile(137, "probed")) is fixed
    assert settings_for(auto).slow_start and settings_for(auto).start_from == "slow start"


def test_a_run_records_where_auto_started(make_input, tmp_path):
    path = make_input([f"line {i}" for i in range(30)])
    with ServiceProcess(ServerConfig(latency=0.01, capacity=6)) as svc:
        result = score_file(run_config(path, svc.url, tmp_path, cache=None, max_concurrent_tasks="auto"),
                            server_info={"kind": "external", "url": svc.url} | _profile(6, "probed"))
    lim = result.record["limits"]
    assert result.exit_code == 0 and lim["start"] == "profile capacity 6" and lim["initial_limit"] == 6
    assert lim["limit_history"][0][1] == 6.0


def test_replies_queued_behind_the_old_limit_do_not_cut_it_again():
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=200, parts=1, growth=2.0, t0=0.0, slow_start=False)
    conc.baseline, conc._win_start = 0.1, 1.0
    t = 1.0
    for _ in range(200):  # a round trip of replies at 2x the unloaded latency: queueing (1000 replies/s)
        t += 0.001
        conc.on_ok(0.2, 200, paced=False, sent=t - 0.2, now=t)
        conc.end_of_attempt(t, t - 0.2)
    assert conc.limit == 140  # cut once (at most to 0.7x)
    for _ in range(200):  # the replies still queued behind the old limit: sent before the cut
        t += 0.001
        conc.on_ok(0.3, 200, paced=False, sent=1.15, now=t)
        conc.end_of_attempt(t, 1.15)
    assert conc.limit == 140
    for _ in range(4 * 140):  # replies to the new limit that still queue (less), as many per second: cut again
        t += 0.001
        conc.on_ok(0.15, 140, paced=False, sent=t - 0.05, now=t)
        conc.end_of_attempt(t, t - 0.05)
    assert conc.limit < 140


def test_slow_start_ends_at_littles_law_target_down_to_a_round_trip_ago():
    """Slow start grows x3 per round trip, so when queueing shows, the limit may be 3x what the service
    serves: it goes to the in-flight count at which latency would be 1.3x the lowest seen."""
    conc = AdaptiveConcurrency(ceiling=2000, floor=1, initial=450, parts=1, growth=2.0, t0=0.0)
    conc.baseline = 0.2
    for _ in range(16):  # 450 in flight, 3x a capacity of 150: latency 3x the lowest
        conc.on_ok(0.6, 450, paced=False, sent=0.1, now=1.0)
    assert not conc.slow_start and conc.limit == 195  # 450 x 1.3 x 0.2 / 0.6 (not 225: half of 450)


def _window(conc: AdaptiveConcurrency, t: float, latency: float) -> float:
    """One round trip of replies at `latency`, each with the limit in flight; returns the time after it."""
    n = int(conc.limit)
    for _ in range(n):
        t += latency / n
        conc.on_ok(latency, n, paced=False, sent=t - latency, now=t)
        conc.end_of_attempt(t)
    return t


def test_after_a_cut_on_latency_the_limit_regrows_by_a_factor_after_a_drop_by_small_steps():
    """A cut on latency may have read a busy client's own delays (Little's law then gives the client's
    throughput): windows without queueing regrow it x1.25 each (by sqrt(limit) / 2 it took 3 round trips
    to go from 130 to 147). After a drop (a shedding service refused the overshoot) it still creeps back."""
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=300, parts=1, growth=2.0, t0=0.0)
    conc.baseline = 0.2
    t = _window(conc, 1.0, 0.6)  # 3x the unloaded latency: queueing, slow start ends
    assert not conc.slow_start and conc.limit == pytest.approx(130)  # Little's law: 300 x 1.3 x 0.2 / 0.6
    for _ in range(3):
        t = _window(conc, t + 0.3, 0.2)
    assert conc.limit >= 200  # 130 x 1.25^3; by small steps it was 147
    shed = AdaptiveConcurrency(ceiling=1000, floor=1, initial=20, parts=1, growth=2.0, t0=0.0)
    shed.baseline, shed.limit = 0.2, 120.0
    shed.on_drop(sent=0.5, in_flight=101, now=0.5)  # a 503 to the 101st in flight
    assert shed.limit == 100
    t = 1.0
    for _ in range(3):
        t = _window(shed, t + 0.3, 0.2)
    assert 100 < shed.limit < 120


# -- slow start's pace and exit, windows after a cut ----------------------------------------------------
def test_slow_starts_growth_goes_out_over_a_quarter_of_a_round_trip_not_at_once():
    """A wave of successes that came back together earns its growth at once; the limit follows it at
    x(1 + growth) per quarter round trip, so a shedding service's first refusal comes back while it rises.
    The first round trip's replies (sent before any came back) take the first step, x8; later ones x3."""
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=20, parts=1, growth=2.0, t0=0.0)
    for _ in range(16):  # the first 16 replies, 0.2 s each, all at t = 1.0
        conc.on_ok(0.2, 16, paced=False, sent=0.8, now=1.0)
    assert conc.target == 132 and conc.limit == 20  # earned (20 + 16 x 7), not yet out
    wait = conc.until_growth(1.0)
    assert 0 < wait < 0.05
    conc.pace(1.0 + wait)
    assert 21 <= conc.limit < 21.01  # one slot more when until_growth said
    conc.pace(1.0 + 0.025)  # an eighth of a round trip: x sqrt(8)
    assert conc.limit == pytest.approx(20 * 8 ** 0.5)
    conc.pace(1.2)
    assert conc.limit == 132 and conc.until_growth(1.2) == math.inf  # there, and no further without successes
    for _ in range(10):  # replies of the second round trip (sent after the first reply came back): +2 each
        conc.on_ok(0.2, 130, paced=False, sent=1.1, now=1.3)
    assert conc.target == 152 and conc.limit == 132
    conc.pace(1.3 + 0.005)  # a tenth of a quarter round trip, at x3 now: x3^0.1
    assert conc.limit == pytest.approx(132 * 3 ** 0.1)


def test_one_waiter_at_a_time_sleeps_for_the_slot_the_pace_adds():
    lim = RunLimiter(LimitSettings(limit=1000, adaptive=True))
    lim.open_gate()
    t = lim.t0 + 1.0
    for _ in range(20):
        assert lim._try_take(t) is True
    conc = lim._conc
    for _ in range(16):
        conc.on_ok(0.2, 20, paced=False, sent=t - 0.2, now=t)
    first, second = lim._try_take(t), lim._try_take(t)
    assert 0 < first < 0.05 and second == math.inf  # the rest wait for a release or to be woken
    assert lim._try_take(t + first) is True


def test_slow_start_ends_no_lower_than_the_most_in_flight_seen_without_queueing():
    """Little's law on replies that waited for a busy client's own loop reads that wait as the service's
    queue (a capacity of 200 read as 83): slow start's exit keeps what went through without queueing."""
    conc = AdaptiveConcurrency(ceiling=2000, floor=1, initial=250, parts=1, growth=2.0, t0=0.0)
    conc.baseline = 0.2
    for n in range(100, 181, 10):  # no queueing up to 180 in flight
        conc.on_ok(0.21, n, paced=False, sent=0.5, now=0.7)
    for _ in range(16):  # then 250 in flight, replies at 3x the lowest latency
        conc.on_ok(0.6, 250, paced=False, sent=0.8, now=1.4)
    assert not conc.slow_start and conc.limit == 180  # not 250 x 1.3 x 0.2 / 0.6 = 108, nor 250 / 3


def test_a_window_is_in_use_against_the_limit_its_replies_were_sent_under():
    """Replies in the window after a step up were sent under the limit before it: against the new limit
    they looked unused and only every other window grew."""
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=100, parts=1, growth=2.0, t0=0.0, slow_start=False)
    conc.baseline, conc._careful = 0.2, False  # after a cut on latency: x1.25 a window
    conc.limit = 125.0  # just stepped up from 100
    conc._win_start, conc._win_target = 1.0, 125
    t = 1.0
    for _ in range(125):  # replies sent under the limit of 100, 95 in flight each (0.76 of 125)
        t += 0.001
        conc.on_ok(0.2, 95, paced=False, sent=t - 0.2, now=t, limit=100.0)
        conc.end_of_attempt(t, t - 0.2)
    assert conc.limit == pytest.approx(125 * 1.25)


def test_replies_sent_before_a_cut_count_for_no_window():
    """The first window after a cut is a round trip of replies to the new limit: counted with the old
    limit's replies it ended after a few of them."""
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=20, parts=1, growth=2.0, t0=0.0)
    conc.baseline, conc.limit, conc.target = 0.2, 120.0, 120.0
    conc.on_drop(sent=1.0, in_flight=101, now=1.0)  # slow start ends at 100
    assert conc.limit == 100 and conc._win_count == 0
    for i in range(300):  # the old limit's replies: before the cut
        conc.end_of_attempt(1.0 + i / 3000, sent=0.99)
    assert conc._win_count == 0
    conc.end_of_attempt(1.2, sent=1.01)
    assert conc._win_count == 1


# -- a cut on latency judged by what the service served after it -----------------------------------------
def _fifo_run(conc: AdaptiveConcurrency, capacity: int, service: float, client_delay, until: float) -> list[float]:
    """A service of `capacity` servers, each reply `service` seconds (constant: it queues in whole waves),
    first come first served, and a client that keeps the limit in flight and reads each reply
    `client_delay(t)` late (a busy machine's own loop). Simulated time; returns (t, limit) per round trip."""
    free = [0.0] * capacity  # when each server is free
    replies: list[tuple[float, float, int, float]] = []
    in_flight, t, out, next_sample = 0, 0.0, [], 0.0
    while t < until:
        conc.pace(t)
        while in_flight < max(1, int(conc.limit)):
            start = max(t, free[0])
            heapq.heapreplace(free, start + service)
            in_flight += 1
            heapq.heappush(replies, (start + service + client_delay(start + service), t, in_flight, conc.limit))
        if t + conc.until_growth(t) < replies[0][0]:
            t += conc.until_growth(t)
            continue
        t, sent, n, limit = heapq.heappop(replies)
        in_flight -= 1
        conc.on_ok(t - sent, n, paced=False, sent=sent, now=t, limit=limit)
        conc.end_of_attempt(t, sent)
        while t >= next_sample:
            out.append((next_sample, conc.limit))
            next_sample += service
    return out


def test_the_first_step_reaches_a_queueing_services_capacity_in_the_second_round_trip():
    conc = AdaptiveConcurrency(ceiling=2000, floor=1, initial=20, parts=1, growth=2.0, t0=0.0)
    limits = dict(_fifo_run(conc, 137, 0.2, lambda t: 0.0, 1.0))
    assert limits[0.4] >= 137  # the first round trip's 20 replies (back at 0.2 s) took it past 137


def test_a_cut_that_left_a_queueing_service_as_busy_stays_and_the_limit_does_not_ratchet():
    """Fewer in flight, a full service serves as many per second: the cut on its latency stays. (Judged on
    latency, a service of constant latency waits as long with fewer in flight in as many waves: the cut
    was undone again and again and the limit ratcheted up to 4x the capacity.)"""
    conc = AdaptiveConcurrency(ceiling=2000, floor=1, initial=20, parts=1, growth=2.0, t0=0.0)
    later = [limit for t, limit in _fifo_run(conc, 137, 0.2, lambda t: 0.0, 12.0) if t >= 2.0]
    assert max(later) <= 3 * 137 and min(later) >= 0.7 * 137, later


def test_a_cut_on_a_busy_clients_delay_is_undone_when_the_service_served_fewer_after_it():
    """From 3 s, every reply is read 0.15 s late (a busy machine): latency 1.75x the lowest seen at any
    in-flight count. Cuts on it served fewer per second, so each is undone and that latency becomes the
    lowest seen: the limit never falls below the service's capacity (cut after cut took it to 117 of 200)."""
    conc = AdaptiveConcurrency(ceiling=2000, floor=1, initial=20, parts=1, growth=2.0, t0=0.0)
    later = [limit for t, limit in _fifo_run(conc, 200, 0.2, lambda t: 0.0 if t < 3 else 0.15, 12.0) if t >= 3]
    assert min(later) >= 200, later
    assert conc.baseline >= 0.3  # the slower client's latency is the lowest seen now


# -- a shedding service's 503s ----------------------------------------------------------------------------
def _refusals_window(parts: int = 1, refused: bool = True) -> AdaptiveConcurrency:
    """A round trip past slow start at a limit of 143 on a service that sheds beyond 137 in flight."""
    conc = AdaptiveConcurrency(ceiling=1000, floor=1, initial=143, parts=parts, growth=2.0, t0=0.0,
                               slow_start=False)
    conc.baseline, conc._win_start, t = 0.2, 1.0, 1.0
    for n in range(1, 144):
        t += 0.001
        if n <= 137:
            conc.on_ok(0.2, n, paced=False, sent=t - 0.2, now=t)
        else:
            conc.on_drop(sent=t - 0.001, in_flight=n, now=t, refused=refused)
        conc.end_of_attempt(t, t - 0.2)
    return conc


def test_a_round_trip_of_503s_cuts_to_just_under_the_least_in_flight_count_refused():
    """A shedding service refuses only beyond its capacity: x0.9 took a limit of 143 to 129 for a capacity
    of 137, a round trip and more below it; a Ray worker's in-flight count is its own, not the service's,
    and a timeout is no refusal at once: both cut by x0.75-0.9."""
    assert _refusals_window().limit == 137
    assert _refusals_window(parts=4).limit == pytest.approx(143 * 0.9)
    assert _refusals_window(refused=False).limit == pytest.approx(143 * 0.9)


def test_auto_retries_a_503_after_about_a_round_trip_not_the_clients_base():
    """The limit, which the 503 cut, keeps the load in check: a line refused near the run's end waited up to
    the client's 0.5 s base, many round trips of a fast service, after every other line was done."""
    adaptive = RunLimiter(LimitSettings(limit=1000, adaptive=True))
    adaptive._conc.baseline = 0.2
    fixed = RunLimiter(LimitSettings(limit=100))

    async def bases(gate):
        return [gate.retry_base(http_failure(s, ra)) for s, ra in ((503, None), (504, None), (503, 1.0), (429, None))]

    assert asyncio.run(_with_gate(adaptive, bases)) == [0.2, 0.2, None, None]  # Retry-After and 429s: as before
    assert asyncio.run(_with_gate(fixed, bases)) == [None] * 4
    client = ScoringClient(ClientConfig(url="http://127.0.0.1:1/", backoff_base=0.5, backoff_cap=20.0), 1)
    assert max(client.backoff(0, None, 0.2) for _ in range(200)) <= 0.2
    assert 0.6 < max(client.backoff(2, None, 0.2) for _ in range(500)) <= 0.8  # doubling from it
    assert max(client.backoff(0, None, 2.0) for _ in range(200)) <= 0.5  # never above the client's base
