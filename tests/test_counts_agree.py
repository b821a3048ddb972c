"""The rows, the run's stats and the record's attempts tell one story (issue 16's "1626-1634 of 1644 ok"
question): every successful attempt is exactly one line's score, and every request is in a row's attempts.

On a flaky service (each line's first attempts fail with mixed causes) a line's retries, its backoff and
the hand-over between event loops are all exercised; a line scored twice, a success not written, or
counts taken before the last rows would show here. A duplicate line or a cache hit is an `ok` row
without a request of its own."""

from __future__ import annotations

from collections import Counter

import pytest

from scoring_lib import ServerConfig, score_file
from scoring_lib.server import ServiceProcess

from conftest import read_rows, run_config

FLAKY = ServerConfig(latency=0.005, capacity=0, flaky=2)


def _run(svc, path, tmp_path, **kw):
    result = score_file(run_config(path, svc.url, tmp_path, max_retries=20, **kw))
    return result, read_rows(tmp_path / "out.jsonl")


def _assert_agree(result, rows, lines: int, reused: int = 0):
    """`reused`: ok rows that needed no request (duplicates, cache hits)."""
    status = Counter(r["status"] for r in rows)
    limits = result.record.limits
    kinds = limits["attempt_kinds"]
    assert status == Counter(ok=lines) and result.stats.counts["ok"] == lines == result.record.ok
    assert kinds.get("ok", 0) == lines - reused  # one success per requested line, none after it
    assert sum(r["attempts"] for r in rows) == result.stats.requests == limits["attempts"] - kinds.get("cancelled", 0)
    assert sum(1 for r in rows if r["attempts"] == 0) == reused


@pytest.mark.parametrize("concurrency", [8, "auto"])
def test_rows_stats_and_record_count_the_same_successes_on_a_flaky_service(make_input, tmp_path, concurrency):
    path = make_input([f"flaky line {i}" for i in range(300)])
    with ServiceProcess(FLAKY) as svc:
        result, rows = _run(svc, path, tmp_path, cache=None, threads=2, max_concurrent_tasks=concurrency)
    _assert_agree(result, rows, 300)
    assert all(r["attempts"] == 3 for r in rows)  # two failures, then the score: never a request after it


def test_duplicates_and_cache_hits_are_ok_rows_without_a_request(make_input, tmp_path):
    path = make_input([f"line {i % 40}" for i in range(120)])  # each text three times
    with ServiceProcess(FLAKY) as svc:
        first, rows = _run(svc, path, tmp_path, threads=2)
        _assert_agree(first, rows, 120, reused=80)
        again, rows = _run(svc, path, tmp_path, threads=2)  # every score now in the cache
    _assert_agree(again, rows, 120, reused=120)
    assert again.stats.cache_hits + again.stats.duplicates == 120


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [16, "auto"])
def test_ray_rows_stats_and_record_count_the_same_successes(make_input, tmp_path, concurrency):
    path = make_input([f"flaky line {i}" for i in range(200)])
    with ServiceProcess(FLAKY) as svc:
        result, rows = _run(svc, path, tmp_path, cache=None, engine="ray", workers=4, threads=None,
                            max_concurrent_tasks=concurrency)
    _assert_agree(result, rows, 200)  # the driver's first-contact request is the service's, not a line's


class _RaisingGate:
    """A limiter gate that raises when told of a success: a bug of ours after the request went out."""

    async def acquire(self):
        return None

    def release(self, ticket, attempt) -> None:
        if attempt.failure is None:
            raise RuntimeError("a bug after the score came back")

    def backing_off(self, n: int) -> None:
        pass


def test_a_bug_after_requests_went_out_is_an_internal_row_that_counts_them():
    """The INTERNAL row says how many requests its line cost (it said 0, and the rows' attempts then
    fell short of the service's requests)."""
    import asyncio

    from scoring_lib import ClientConfig
    from scoring_lib.client import ScoringClient
    from scoring_lib.failures import FailureKind

    async def one(url: str):
        cfg = ClientConfig(url=url, max_retries=5, backoff_base=0.001)
        async with ScoringClient(cfg, 2, limiter=_RaisingGate()) as client:
            return await client.score("flaky line")

    with ServiceProcess(FLAKY) as svc:
        outcome = asyncio.run(one(svc.url))
        requests = svc.stats().requests
    assert outcome.failure is not None and outcome.failure.kind is FailureKind.INTERNAL
    assert "a bug after the score came back" in outcome.error
    assert outcome.attempts == requests == 3  # two failures, then the score the bug lost
