"""A Retry-After is run-wide on the Ray engine too: one worker told to wait makes every worker wait."""

import time

import pytest

pytest.importorskip("ray")

from scoring_lib.engines.ray_engine import RayEngine

from conftest import run_config
from hostile import HostileServer, good, reply

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # Ray start-up alone takes 10-20 s on the 2-core machine


def test_a_retry_after_told_to_one_worker_pauses_the_others(make_input, tmp_path):
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
        with RayEngine(cfg) as engine:
            ray = engine.ray
            workers = [s.handle for s in engine.slots]
            ray.get([w.score_chunk.remote([(b"w%d" % i, f"warm {i}")]) for i, w in enumerate(workers)], timeout=60)
            t0 = time.monotonic()
            ray.get(workers[1].score_chunk.remote([(b"c", "control")]), timeout=60)
            control = time.monotonic() - t0

            first = workers[0].score_chunk.remote([(b"t", "trigger")])
            deadline = time.monotonic() + 30
            while not told and time.monotonic() < deadline:
                time.sleep(0.01)
            assert told, "worker 0 never sent its request"
            time.sleep(0.2)  # passed on in about a millisecond; generous on a loaded machine
            t0 = time.monotonic()
            [(_, after)] = ray.get(workers[1].score_chunk.remote([(b"a", "after")]), timeout=60)
            waited = time.monotonic() - t0
            since_429 = time.monotonic() - told[0]
            [(_, retried)] = ray.get(first, timeout=60)
            stats = ray.get([w.limit_stats.remote() for w in workers], timeout=30)
    assert after.ok and retried.ok and retried.attempts == 2
    assert control < 1.5  # without a pause a line takes far less than the 3 s
    assert waited >= 2.0 and since_429 >= 2.9  # worker 1 waited out worker 0's Retry-After
    assert stats[0]["retry_after_pauses"] == 1 and stats[0]["retry_after_pauses_from_peers"] == 0
    assert [s["retry_after_pauses_from_peers"] for s in stats[1:]] == [1, 1]
    assert [s["retry_after_pauses"] for s in stats[1:]] == [0, 0]
