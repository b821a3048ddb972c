"""The shared run pipeline, driven through the asyncio engine against the simulated service."""

import asyncio
import json

import pytest

from scoring_lib import ServerConfig, SimulatedService, deterministic_score, score_file, probe
from scoring_lib.config import ClientConfig

from conftest import FAST, read_rows, run_config


def test_rows_follow_input_order_and_identical_lines_are_requested_once(service, make_input, tmp_path):
    texts = [f"sentence number {i % 37}" for i in range(200)] + ["", "  ", "tail"]
    path = make_input(texts)
    result = score_file(run_config(path, service.url, tmp_path, threads=3, max_concurrent_tasks=12))
    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["line"] for r in rows] == list(range(1, 204))
    for text, row in zip(texts, rows):
        if text.strip():
            assert row["status"] == "ok" and row["score"] == deterministic_score(text)
        else:
            assert row["status"] == "empty" and row["score"] is None and row["attempts"] == 0
    assert service.stats().requests == 38
    assert sum(r["attempts"] for r in rows) == 38
    first_seen = {}
    for text, row in zip(texts, rows):
        if text.strip():
            assert row["attempts"] == (0 if text in first_seen else 1)
            first_seen.setdefault(text, row["line"])
    assert result.exit_code == 0 and result.stats.counts == {"ok": 201, "empty": 2, "error": 0}


@pytest.mark.parametrize("threads, concurrency", [(1, 5), (3, 7), (4, 2)])
def test_requests_in_flight_never_exceed_max_concurrent_tasks(make_input, tmp_path, threads, concurrency):
    with SimulatedService(ServerConfig(time_scale=0.01, capacity=0)) as svc:
        path = make_input([f"line {i}" for i in range(60)])
        score_file(run_config(path, svc.url, tmp_path, threads=threads, max_concurrent_tasks=concurrency))
        assert svc.stats().peak_in_flight == concurrency


def test_second_run_is_served_from_the_cache(service, make_input, tmp_path):
    path = make_input([f"cached {i}" for i in range(30)])
    score_file(run_config(path, service.url, tmp_path))
    before = service.stats().requests
    second = score_file(run_config(path, service.url, tmp_path))
    assert service.stats().requests == before
    assert second.stats.cache_hits == 30
    assert all(r["attempts"] == 0 and r["status"] == "ok" for r in read_rows(tmp_path / "out.jsonl"))


def test_no_cache_still_dedupes_within_the_run(service, make_input, tmp_path):
    path = make_input(["same"] * 20)
    score_file(run_config(path, service.url, tmp_path, cache=None))
    assert service.stats().requests == 1
    assert not (tmp_path / "cache.sqlite").exists()


def test_failed_lines_are_error_rows_and_duplicates_share_the_error(make_input, tmp_path):
    path = make_input(["a", "b", "a"])
    result = score_file(run_config(path, "http://127.0.0.1:9/score", tmp_path, max_retries=1))
    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["status"] for r in rows] == ["error"] * 3
    assert [r["attempts"] for r in rows] == [2, 2, 0]
    assert rows[2]["error"] == rows[0]["error"]
    assert result.exit_code == 1


def test_transient_faults_are_retried_to_success(make_input, tmp_path):
    with SimulatedService(ServerConfig(time_scale=FAST, error_rate=0.3, seed=3)) as svc:
        path = make_input([f"flaky {i}" for i in range(80)])
        result = score_file(run_config(path, svc.url, tmp_path, max_retries=10))
    assert result.stats.counts["ok"] == 80 and result.stats.retries > 0
    assert result.stats.requests == svc.stats().requests


def test_run_record_has_parameters_timings_machine_and_versions(service, make_input, tmp_path):
    path = make_input([f"r {i}" for i in range(40)])
    result = score_file(run_config(path, service.url, tmp_path, label="t"))
    rec = json.loads(result.record_path.read_text())
    assert rec["engine"] == "asyncio" and rec["max_concurrent_tasks"] == 16 and rec["label"] == "t"
    assert rec["lines"] == 40 and rec["ok"] == 40 and rec["requests"] == 40
    assert rec["scoring_seconds"] > 0 and rec["startup_seconds"] >= 0
    assert rec["latency"]["p50"] >= 0.04  # the service's 41.5 ms
    assert rec["machine"]["cpu_count"] and rec["versions"]["aiohttp"]
    assert max(n for _, n in rec["timeline"]) <= 16


async def test_blocking_api_works_inside_a_running_event_loop(service, make_input, tmp_path):
    asyncio.get_running_loop()  # as in Jupyter: a loop is running in this thread
    path = make_input([f"jupyter {i}" for i in range(10)])
    result = score_file(run_config(path, service.url, tmp_path))
    assert result.stats.counts["ok"] == 10
    report = probe(ClientConfig(url=service.url), samples=3)
    assert report.deterministic and report.batch_refused


async def test_async_api(service, make_input, tmp_path):
    from scoring_lib import score_file_async
    path = make_input(["x", "y"])
    result = await score_file_async(run_config(path, service.url, tmp_path))
    assert result.stats.counts["ok"] == 2


def test_timeline_and_latency_count_only_requests_on_the_wire(make_input, tmp_path):
    with SimulatedService(ServerConfig(latency=0.05, capacity=0)) as svc:
        path = make_input([f"pooled {i}" for i in range(30)])
        result = score_file(run_config(path, svc.url, tmp_path, threads=1, max_concurrent_tasks=12,
                                       connector_limit=3))
        assert svc.stats().peak_in_flight == 3
    rec = result.record
    assert max(n for _, n in rec["timeline"]) == 3  # 12 coroutines, but only 3 connections
    assert rec["latency"]["p50"] < 0.1  # the service's 50 ms, not the wait for a connection
    assert result.stats.scoring_seconds >= 10 * 0.05


def test_the_request_sample_is_uniform_and_bounded():
    from scoring_lib.pipeline import Reservoir

    buckets = [0] * 10
    for seed in range(200):
        sample = Reservoir(100, seed)
        for i in range(10_000):
            sample.add(i)
        assert sample.seen == 10_000 and len(sample.items) == 100 == len(set(sample.items))
        for x in sample.items:
            buckets[x // 1000] += 1
    # 20,000 draws over 10 equal buckets: each near 2,000 (a biased sample, e.g. first or last items kept, is far off)
    assert all(1700 < b < 2300 for b in buckets), buckets


def test_copies_of_a_line_in_flight_hold_their_line_numbers_compactly(tmp_path):
    """Two million copies of one line wait for its one request: their line numbers are what the run holds
    meanwhile, so they must cost a few bytes each (a list of ints cost 127 MB of RSS where 57 MB did)."""
    import tracemalloc
    from types import SimpleNamespace

    from scoring_lib.cache import ScoreCache
    from scoring_lib.inputs import InputLine
    from scoring_lib.pipeline import _Run
    from scoring_lib.stats import RunStats

    n = 200_000
    engine = SimpleNamespace(room=lambda: n + 1)
    writer = SimpleNamespace(pending=0, add=lambda row: None)
    cache = ScoreCache(None, "ns")
    try:
        run = _Run(run_config(tmp_path / "in.txt", "http://127.0.0.1:9/", tmp_path), engine, cache, writer,
                   RunStats(), SimpleNamespace(update=lambda n=1: None))
        lines = (InputLine(i + 1, "the same line") for i in range(n))
        tracemalloc.start()
        batch: list = []
        run.feed(lines, batch)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        cache.close()
    assert len(batch) == 1 and run.stats.duplicates == n - 1
    assert peak < 16 * n, f"{peak / n:.1f} bytes per waiting copy"  # packed: 8 and a margin; a list of ints: 36+


def test_lines_not_sent_are_counted_by_what_is_wrong_with_them(service, make_input, tmp_path):
    """The summary's causes name the problem the row names (a too-long line was 'unreadable line')."""
    path = make_input(b"fine\n\xff\xfe\n" + b"y" * 50 + b"\nalso fine\n")
    result = score_file(run_config(path, service.url, tmp_path, max_line_bytes=20))
    assert result.stats.causes == {"line not UTF-8": 1, "line too long": 1}
    assert [r["status"] for r in read_rows(tmp_path / "out.jsonl")] == ["ok", "error", "error", "ok"]
