"""Retry-After on the Ray engine: one paces its own line; a closed service (everything refused with a
Retry-After) pauses every worker, passed on peer to peer."""

import time

import pytest

pytest.importorskip("ray")

from scoring_lib.engines.ray_engine import RayEngine

from conftest import run_config
from hostile import HostileServer, good, reply

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # Ray start-up alone takes 10-20 s on the 2-core machine


def _engine_with_warm_workers(cfg):
    engine = RayEngine(cfg)
    engine.__enter__()
    workers = [s.handle for s in engine.slots]
    engine.ray.get([w.score_chunk.remote([(b"w%d" % i, f"warm {i}")]) for i, w in enumerate(workers)], timeout=60)
    return engine, workers


def test_one_retry_after_paces_its_line_and_does_not_stop_the_other_workers(make_input, tmp_path):
    """A single 429 with Retry-After is about that request: its line waits the Retry-After before its retry,
    and the other workers go on (no stop-the-world pause, so no burst when it ends)."""
    told = []

    def behave(req):
        if req.text == "trigger" and not told:
            told.append(time.monotonic())
            return reply(429, b'{"error": "slow down"}', {"Retry-After": "3"})
        return good()

    path = make_input(["unused"])
    with HostileServer(behave) as srv:
        cfg = run_config(path, srv.url, tmp_path, engine="ray", workers=3, threads=2, max_concurrent_tasks=6,
                         cache=None, backoff_cap=5.0)
        engine, workers = _engine_with_warm_workers(cfg)
        try:
            ray = engine.ray
            first = workers[0].score_chunk.remote([(b"t", "trigger")])
            deadline = time.monotonic() + 30
            while not told and time.monotonic() < deadline:
                time.sleep(0.01)
            assert told, "worker 0 never sent its request"
            [(_, after)], _limit = ray.get(workers[1].score_chunk.remote([(b"a", "after")]), timeout=60)
            answered_after = time.monotonic() - told[0]
            [(_, retried)], _limit = ray.get(first, timeout=60)
            retried_after = time.monotonic() - told[0]
            stats = ray.get([w.limit_stats.remote() for w in workers], timeout=30)
        finally:
            engine.__exit__(None, None, None)
    assert after.ok and retried.ok and retried.attempts == 2
    assert retried_after >= 2.9  # the told line waited out its Retry-After
    assert answered_after < retried_after  # the other worker's line did not wait for it
    assert [s["retry_after_pauses_from_peers"] for s in stats] == [0, 0, 0]


def test_a_closed_service_pauses_every_worker(make_input, tmp_path):
    """A service that refuses everything with a Retry-After says it is closed: the worker that sees it
    pauses, and passes the pause to the others (peer to peer), so none keeps knocking."""
    state = {"closed_until": None}

    def behave(req):
        now = time.monotonic()
        if req.text.startswith("closed"):
            if state["closed_until"] is None:
                state["closed_until"] = now + 3.0
        if state["closed_until"] is not None and now < state["closed_until"]:
            return reply(429, b'{"error": "closed"}', {"Retry-After": "0.3"})
        return good()

    path = make_input(["unused"])
    with HostileServer(behave) as srv:
        cfg = run_config(path, srv.url, tmp_path, engine="ray", workers=3, threads=2, max_concurrent_tasks=6,
                         cache=None, backoff_cap=5.0, max_retries=20)
        engine, workers = _engine_with_warm_workers(cfg)
        try:
            ray = engine.ray
            chunk = [(b"c%d" % i, f"closed {i}") for i in range(24)]
            results, _limit = ray.get(workers[0].score_chunk.remote(chunk), timeout=120)
            stats = ray.get([w.limit_stats.remote() for w in workers], timeout=30)
        finally:
            engine.__exit__(None, None, None)
    assert all(outcome.ok for _, outcome in results)
    assert stats[0]["retry_after_pauses"] >= 1  # worker 0 saw the service closed
    assert all(s["retry_after_pauses_from_peers"] >= 1 for s in stats[1:])  # and told the others
