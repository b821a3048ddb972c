"""The zoo of service behaviours (issue 16): each refuses, queues, slows or fails as a real service does."""

import asyncio
import aiohttp
import pytest

from scoring_lib import ServerConfig, SimulatedService, deterministic_score
from scoring_lib.errors import ConfigError
from scoring_lib.server import ScoringService, ServiceProcess, serve_args
from scoring_lib.sim import behaviours
from scoring_lib.sim.behaviours import Flaky, Slots, Warmup, retry_after


async def post(session, url, text):
    """(status, headers, body bytes) or ("reset", None, None) when the connection was cut."""
    try:
        async with session.post(url, json={"text": text}) as resp:
            return resp.status, resp.headers, await resp.read()
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
        return "reset", None, None


async def statuses(config, n, text=lambda i: f"line {i}"):
    with SimulatedService(config) as svc:
        async with aiohttp.ClientSession() as s:
            return [await post(s, svc.url, text(i)) for i in range(n)], svc.stats()


@pytest.mark.parametrize("mode,expected", [("exact", None), ("whole", "1"), ("none", "absent")])
async def test_a_rate_limit_429_says_retry_after_as_configured(mode, expected):
    cfg = ServerConfig(latency=0, capacity=0, rate_limit=2, retry_after=mode)
    results, _ = await statuses(cfg, 6)
    limited = [headers for status, headers, _ in results if status == 429]
    assert limited
    if expected == "absent":
        assert all("Retry-After" not in h for h in limited)
    elif expected is None:
        assert all(0 < float(h["Retry-After"]) <= 0.5 for h in limited)
    else:
        assert all(h["Retry-After"] == expected for h in limited)


@pytest.mark.parametrize("burst,ok", [(0, 1), (3, 3), (10, 10)])
async def test_the_rate_limits_bucket_holds_burst_requests(burst, ok):
    # one token per 100 s: only the bucket's initial tokens can be spent
    results, stats = await statuses(ServerConfig(latency=0, capacity=0, rate_limit=0.01, rate_burst=burst), 12)
    assert [r[0] for r in results].count(200) == ok and stats.rate_limited == 12 - ok


async def test_a_quota_window_refuses_with_the_seconds_left_in_it():
    results, stats = await statuses(ServerConfig(latency=0, capacity=0, quota=3, quota_window=100), 5)
    assert [r[0] for r in results] == [200, 200, 200, 429, 429] and stats.quota_limited == 2
    waits = [float(r[1]["Retry-After"]) for r in results[3:]]
    assert all(0 < w <= 100 for w in waits) and waits[1] <= waits[0]


def test_retry_after_whole_rounds_up_to_simulated_seconds():
    assert retry_after(0.2, "whole", 1.0) == {"Retry-After": "1"}
    assert retry_after(1.2, "whole", 1.0) == {"Retry-After": "2"}
    assert retry_after(0.002, "whole", 0.01) == {"Retry-After": "0.01"}
    assert retry_after(0.25, "exact", 1.0) == {"Retry-After": "0.25"}
    assert retry_after(0.25, "none", 1.0) == {}


async def test_a_shedding_503_carries_retry_after_when_asked():
    cfg = ServerConfig(latency=1.0, capacity=1, shed=True, shed_retry_after=0.5)
    with SimulatedService(cfg) as svc:
        async with aiohttp.ClientSession() as s:
            first = asyncio.ensure_future(post(s, svc.url, "a"))
            while svc.stats().serving < 1:
                await asyncio.sleep(0.01)
            status, headers, _ = await post(s, svc.url, "b")
            assert (await first)[0] == 200
    assert status == 503 and headers["Retry-After"] == "0.5"


async def test_slots_serve_capacity_queue_queue_limit_and_refuse_the_rest():
    slots = Slots(2, queue_limit=3)
    await slots.acquire()
    await slots.acquire()
    waiting = [asyncio.ensure_future(slots.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert slots.full() and slots.serving == 2 and len(slots.waiters) == 3
    slots.release()
    await asyncio.sleep(0)
    assert waiting[0].done() and not waiting[1].done() and not slots.full()
    unbounded = Slots(1, queue_limit=None)
    await unbounded.acquire()
    assert unbounded.busy() and not unbounded.full()
    for fut in waiting[1:]:
        fut.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert slots.waiters == type(slots.waiters)()


async def test_slots_halve_the_capacity_after_halve_after_admissions():
    slots = Slots(4, queue_limit=None, halve_after=3)
    for _ in range(3):
        await slots.acquire()
    assert slots.capacity == 2
    for _ in range(3):
        slots.release()
    await slots.acquire()
    await slots.acquire()
    assert slots.busy() and slots.capacity == 2


async def test_a_proxy_queue_serves_capacity_queues_queue_limit_then_answers_503():
    cfg = ServerConfig(latency=1.0, capacity=2, queue_limit=3)
    with SimulatedService(cfg) as svc:
        async with aiohttp.ClientSession() as s:
            held = [asyncio.ensure_future(post(s, svc.url, f"held {i}")) for i in range(5)]
            while svc.stats().in_flight < 5:
                await asyncio.sleep(0.01)
            refused = [await post(s, svc.url, f"more {i}") for i in range(3)]
            served = await asyncio.gather(*held)
    assert [r[0] for r in refused] == [503] * 3 and [r[0] for r in served] == [200] * 5
    assert svc.stats().shed == 3 and svc.stats().peak_serving == 2


def test_warmup_multiplies_latency_for_its_first_seconds(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(behaviours.time, "monotonic", lambda: clock[0])
    svc = ScoringService(ServerConfig(latency=2.0, time_scale=0.5, warmup=10))
    assert svc.sample_latency() == pytest.approx(1.0 * behaviours.WARMUP_FACTOR)
    clock[0] += 4.9  # 10 simulated seconds are 5 real ones
    assert svc.sample_latency() == pytest.approx(1.0 * behaviours.WARMUP_FACTOR)
    clock[0] += 0.2
    assert svc.sample_latency() == pytest.approx(1.0)
    svc.reset_stats()  # a new run warms up again
    assert svc.sample_latency() == pytest.approx(1.0 * behaviours.WARMUP_FACTOR)


def test_flaky_lines_fail_with_every_cause_then_succeed():
    flaky = Flaky(5)
    causes = [flaky.cause("a line") for _ in range(7)]
    assert sorted(causes[:5]) == sorted(behaviours.FLAKY_CAUSES) and causes[5:] == [None, None]
    assert len({Flaky(1).cause(f"line {i}") for i in range(40)}) > 1  # lines start at different causes


async def test_a_flaky_service_answers_each_cause_on_the_wire_then_the_score():
    results, stats = await statuses(ServerConfig(latency=0, capacity=0, flaky=5), 6, text=lambda i: "same line")
    seen = {(r[0], r[2][:1] if isinstance(r[0], int) else None) for r in results[:5]}
    assert {s for s, _ in seen} == {503, 429, 500, 200, "reset"}
    assert (200, b"<") in seen  # the 200 whose body is not JSON
    assert results[5][0] == 200 and results[5][2] == f'{{"score": {deterministic_score("same line")}}}'.encode()
    assert stats.flaky_failures == 5


def test_zoo_settings_are_validated():
    for bad in (dict(retry_after="later"), dict(quota=-1), dict(quota_window=0), dict(flaky=-2),
                dict(shed=True, queue_limit=4), dict(rate_burst=-1)):
        with pytest.raises(ConfigError):
            ServerConfig(**bad)


def test_serve_args_rebuild_the_config_in_a_child_process():
    from scoring_lib.cli import build_parser
    from scoring_lib.cli_service import server_config

    cfg = ServerConfig(latency=0.5, capacity=8, queue_limit=4, quota=30, quota_window=2.5, rate_limit=5,
                       rate_burst=0.5, retry_after="whole", shed_retry_after=1.5, halve_after=10, warmup=3,
                       flaky=2, time_scale=0.1)
    args = build_parser().parse_args(["serve", *serve_args(cfg)])
    assert server_config(args, host=args.host, port=args.port) == cfg


async def test_a_service_process_enforces_its_zoo_settings():
    with ServiceProcess(ServerConfig(latency=0, capacity=0, quota=1, quota_window=1000, retry_after="none")) as svc:
        async with aiohttp.ClientSession() as s:
            first, second = [await post(s, svc.url, "x") for _ in range(2)]
    assert first[0] == 200 and second[0] == 429 and "Retry-After" not in second[1]


def test_reset_restarts_the_quota_and_the_flaky_lines():
    svc = ScoringService(ServerConfig(quota=2, flaky=1))
    svc._quota.used, svc._flaky.seen["x"] = 2, 1
    svc.reset_stats()
    assert svc._quota.used == 0 and svc._flaky.seen == {}
