"""With `auto`, the Ray driver gives each worker about as much work as its own limit (or rate) lets it send: lines
left in a worker whose limit was cut waited there while other workers had room (the reference's Ray
32 x 64 `auto` run spent its last 48 s with about 30 requests in flight, for a capacity of 200)."""

import math
from types import SimpleNamespace

from scoring_lib.engines.ray_engine import ADAPTIVE_CHUNK, HEADROOM, RayEngine
from scoring_lib.engines.ray_reuse import Slot
from scoring_lib.engines.ray_worker import per_round_trip
from scoring_lib.limits import LimitSettings, RunLimiter
from scoring_lib.rate import MIN_SPAN


class FakeRay:
    """ray.wait / ray.get over refs that are already done: (results, the worker's limit)."""

    def __init__(self):
        self.done = {}

    def wait(self, refs, num_returns=1, timeout=None):
        ready = [r for r in refs if r in self.done]
        return ready, [r for r in refs if r not in self.done]

    def get(self, ref):
        return self.done[ref]


class FakeHandle:
    def __init__(self, ray, limit_after):
        self.sent, self.ray, self.limit_after = [], ray, limit_after
        self.score_chunk = SimpleNamespace(remote=self._remote)

    def _remote(self, chunk):
        ref = object()
        self.sent.append(chunk)
        self.ray.done[ref] = ([(key, None) for key, _ in chunk], self.limit_after)
        return ref


def engine_with(slots, adaptive, chunk):
    engine = object.__new__(RayEngine)
    engine.ray, engine.adaptive, engine.chunk_size = FakeRay(), adaptive, chunk
    engine.slots, engine._pending, engine._failed_at = slots, {}, {}
    engine.first_request_seconds, engine._scoring_from, engine._booting = None, None, {}
    return engine


def test_auto_gives_a_worker_what_its_own_limit_can_send_and_learns_the_limit_from_each_chunk():
    engine = engine_with([], adaptive=True, chunk=ADAPTIVE_CHUNK)
    handles = [FakeHandle(engine.ray, limit_after=1), FakeHandle(engine.ray, limit_after=40)]
    engine.slots = [Slot(h, 63, 126, info={"pid": i}, learnt=1, slots=63) for i, h in enumerate(handles)]
    cap = math.ceil(HEADROOM * 1) + ADAPTIVE_CHUNK
    assert engine.room() == 2 * cap  # not 2 x 126: the rest of the input stays in the driver
    engine.submit([(b"%d" % i, "x") for i in range(engine.room())])
    assert [sum(map(len, h.sent)) for h in handles] == [cap, cap]
    engine.poll(0.0)  # every chunk back: worker 0 says its limit is 1, worker 1 that it is 40
    assert [s.learnt for s in engine.slots] == [1, 40]
    assert engine.room() == cap + min(126, math.ceil(HEADROOM * 40) + ADAPTIVE_CHUNK)
    before = [sum(map(len, h.sent)) for h in handles]
    engine.submit([(b"n%d" % i, "x") for i in range(20)])
    assert [sum(map(len, h.sent)) - b for h, b in zip(handles, before)] == [0, 20]  # to the one with room


def test_a_fixed_c_keeps_twice_the_slots_per_worker():
    engine = engine_with([], adaptive=False, chunk=31)
    engine.slots = [Slot(FakeHandle(engine.ray, 63), 63, 126, info={"pid": 0}, slots=63)]
    assert engine.room() == 126
    engine.submit([(b"%d" % i, "x") for i in range(126)])
    engine.poll(0.0)
    assert engine.slots[0].learnt is None and engine.room() == 126


def test_a_worker_reports_what_it_sends_in_a_round_trip_its_rate_when_that_binds():
    """What a worker tells the driver with each chunk (the driver's `learnt`): its limit while no rate
    binds; once its share of the rate binds, that rate over a round trip (at least MIN_SPAN), so a share
    whose 429s cut it to a few per second holds a few lines, not as many as a share several times faster."""
    limiter = RunLimiter(LimitSettings(limit=100, adaptive=True, initial=40))
    assert per_round_trip(limiter) == 40  # no rate yet: the limit
    limiter.rate.rate, limiter.rate.rtt = 8.0, 0.05
    assert per_round_trip(limiter) == math.ceil(8.0 * MIN_SPAN)  # a round trip shorter than MIN_SPAN
    limiter.rate.rtt = 1.0
    assert per_round_trip(limiter) == 8
    limiter.rate.rate = 400.0
    assert per_round_trip(limiter) == 40  # the limit binds, not the rate
    limiter.rate.rate = 0.5
    assert per_round_trip(limiter) == 1  # never none
    ceiling = RunLimiter(LimitSettings(limit=100, adaptive=True, initial=40, rate=20.0))
    assert per_round_trip(ceiling) == math.ceil(20.0 * MIN_SPAN)  # --rate-limit's share binds as well


def test_a_line_goes_to_a_worker_with_a_free_slot_before_one_whose_slots_are_full():
    """2,000 lines on 32 workers of 62 or 63 slots (C cut to the line count): the last 16 lines go one to
    each worker with a slot free, not as one chunk to a worker that then holds 15 of them for a wave."""
    engine = engine_with([], adaptive=False, chunk=31)
    engine.slots = [Slot(FakeHandle(engine.ray, 0), s, 2 * s, info={"pid": i}, slots=s)
                    for i, s in enumerate([63] * 16 + [62] * 16)]
    assert sum(s.slots for s in engine.slots) == 2000
    engine.submit([(b"%d" % i, "x") for i in range(2000)])
    assert all(s.outstanding == s.slots for s in engine.slots)
    assert max(map(len, engine.slots[0].handle.sent)) == 31  # full chunks while every worker has room for them


def test_past_the_free_slots_lines_go_by_room():
    engine = engine_with([], adaptive=False, chunk=31)
    engine.slots = [Slot(FakeHandle(engine.ray, 0), 4, 8, info={"pid": i}, slots=4) for i in range(2)]
    engine.submit([(b"%d" % i, "x") for i in range(16)])
    assert [s.outstanding for s in engine.slots] == [8, 8]
