"""The simulated service keeps its promises: determinism, batch refusal, capacity, faults, stats."""

import asyncio
import time

import aiohttp
import pytest

from scoring_lib import ServerConfig, SimulatedService, deterministic_score
from scoring_lib.errors import ConfigError


async def post(session, url, body):
    async with session.post(url, json=body) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_scores_are_deterministic_and_in_unit_interval(service):
    async with aiohttp.ClientSession() as s:
        a = await post(s, service.url, {"text": "same words"})
        b = await post(s, service.url, {"text": "same words"})
        c = await post(s, service.url, {"text": "other words"})
    assert a[0] == b[0] == 200 and a[1] == b[1] == {"score": deterministic_score("same words")}
    assert c[1]["score"] != a[1]["score"]
    assert 0 <= a[1]["score"] < 1


def test_score_does_not_depend_on_python_hash_seed():
    assert deterministic_score("hello world") == 0.723833545


@pytest.mark.parametrize("key", ["data", "items", "lines"])
async def test_batch_bodies_are_refused_with_422(service, key):
    async with aiohttp.ClientSession() as s:
        status, body, _ = await post(s, service.url, {key: ["a", "b"]})
    assert status == 422 and "batch" in body["error"]


@pytest.mark.parametrize("body", [{"txt": "x"}, {"text": 3}, ["text"]])
async def test_bad_bodies_are_400(service, body):
    async with aiohttp.ClientSession() as s:
        status, _, _ = await post(s, service.url, body)
    assert status == 400


async def test_capacity_queues_the_rest_and_stats_count_in_flight():
    with SimulatedService(ServerConfig(latency=0.2, capacity=3)) as svc:
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            results = await asyncio.gather(*(post(s, svc.url, {"text": str(i)}) for i in range(6)))
            took = time.monotonic() - t0
            async with s.get(f"{svc.base_url}/stats") as resp:
                stats = await resp.json()
    assert all(r[0] == 200 for r in results)
    assert stats["peak_serving"] == 3 and stats["peak_in_flight"] == 6 and stats["requests"] == 6
    assert took >= 0.38  # two rounds of 0.2 s


async def test_rate_limit_answers_429_with_retry_after():
    with SimulatedService(ServerConfig(latency=0, rate_limit=2, capacity=0)) as svc:
        async with aiohttp.ClientSession() as s:
            results = [await post(s, svc.url, {"text": str(i)}) for i in range(5)]
    limited = [r for r in results if r[0] == 429]
    assert limited and float(limited[0][2]["Retry-After"]) > 0
    assert svc.stats().rate_limited == len(limited)


async def test_error_rate_injects_503s_in_proportion():
    with SimulatedService(ServerConfig(latency=0, error_rate=0.3, seed=7)) as svc:
        async with aiohttp.ClientSession() as s:
            statuses = [(await post(s, svc.url, {"text": str(i)}))[0] for i in range(400)]
    share = statuses.count(503) / len(statuses)
    assert 0.2 < share < 0.4 and set(statuses) == {200, 503}


def test_latency_distributions_have_the_configured_mean():
    from scoring_lib.server import ScoringService
    for dist in ("const", "exp", "lognormal"):
        svc = ScoringService(ServerConfig(latency=2.0, latency_dist=dist, time_scale=0.5, seed=1))
        samples = [svc.sample_latency() for _ in range(20000)]
        assert abs(sum(samples) / len(samples) - 1.0) < 0.05, dist


async def test_required_key_is_checked(monkeypatch):
    with SimulatedService(ServerConfig(latency=0, require_api_key="s3cret")) as svc:
        async with aiohttp.ClientSession() as s:
            assert (await post(s, svc.url, {"text": "x"}))[0] == 401
            async with s.post(svc.url, json={"text": "x"}, headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200


def test_invalid_server_settings_are_rejected():
    with pytest.raises(ConfigError):
        ServerConfig(latency_dist="normal")
    with pytest.raises(ConfigError):
        ServerConfig(error_rate=2)
    with pytest.raises(ConfigError):
        ServerConfig(time_scale=0)


def test_listens_on_loopback_only(service):
    assert service.url.startswith("http://127.0.0.1:")
