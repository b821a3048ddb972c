"""The probe gate's grace scaled from the probe's connections (no --probe-grace given): the rule on its own
(no clock: `_try_take` is given the time), the wake-up of requests held at the gate when the grace gets
shorter, and a whole run against a loopback service saying in its record which grace it used."""

from __future__ import annotations

import asyncio
import socket

import pytest

from scoring_lib import ServerConfig, SimulatedService, score_file
from scoring_lib.client import kernel_round_trip
from scoring_lib.failfast import FailFast
from scoring_lib.limit_settings import GRACE_MAX, GRACE_MIN, GRACE_PER_CONNECT, grace_for_connect
from scoring_lib.limits import LimitSettings, RunLimiter, settings_for

from conftest import run_config


def test_the_grace_follows_the_slowest_connect_within_its_bounds():
    assert grace_for_connect(0.0) == GRACE_MIN
    assert grace_for_connect(1.0) == GRACE_MAX
    middle = (GRACE_MIN + GRACE_MAX) / 2 / GRACE_PER_CONNECT
    assert grace_for_connect(middle) == pytest.approx(middle * GRACE_PER_CONNECT)
    ff = FailFast(16, 8, None, 50, 5.0, 0.0)
    assert ff.scaled and ff.grace == GRACE_MAX  # nothing measured yet: the longest
    assert ff.connected(0.00002) and ff.grace == GRACE_MIN  # shorter: the held requests look again
    assert not ff.connected(0.00001) and ff.grace == GRACE_MIN  # the slowest so far counts, not the last
    assert not ff.connected(middle) and ff.grace == pytest.approx(middle * GRACE_PER_CONNECT)  # longer: no wake-up
    assert ff.slowest_connect == middle


def test_a_grace_given_is_kept_whatever_the_connects_say():
    ff = FailFast(16, 8, 60.0, 50, 5.0, 0.0)
    assert not ff.scaled and not ff.connected(0.00001) and ff.grace == 60.0


def test_connects_after_the_gate_opened_change_nothing():
    ff = FailFast(16, 8, None, 50, 5.0, 0.0)
    ff.opened = True
    assert not ff.connected(0.00001) and ff.grace == GRACE_MAX and ff.slowest_connect is None


def test_the_gate_opens_at_the_scaled_grace_not_the_longest():
    """The gate's rule with the clock given: the probe's 4 out, a fifth attempt held until the grace ends."""
    limiter = RunLimiter(LimitSettings(limit=64, probe=4, grace=None))
    t0 = 1000.0
    for _ in range(4):
        assert limiter._try_take(t0) is True
    held = limiter._try_take(t0)
    assert held == pytest.approx(GRACE_MAX)  # no connect known: the longest grace
    at = t0 + (GRACE_MIN + GRACE_MAX) / 2
    assert limiter._try_take(at) == pytest.approx(t0 + GRACE_MAX - at)  # still held
    limiter.failfast.connected(0.00001)
    assert limiter._try_take(at) is True and limiter.failfast.opened


def test_requests_held_at_the_gate_look_again_when_the_grace_gets_shorter():
    async def main():
        limiter = RunLimiter(LimitSettings(limit=64, probe=4, grace=None))
        gate = limiter.gate()
        loop = asyncio.get_running_loop()
        held = [loop.create_future() for _ in range(3)]
        gate.waiters.extend(held)
        gate.connected(0.00001)  # GRACE_MAX -> GRACE_MIN: every held request is woken
        assert all(f.done() for f in held) and not gate.waiters
        again = loop.create_future()
        gate.waiters.append(again)
        gate.connected(0.00002)  # no shorter: nobody is woken
        assert not again.done()
        limiter.failfast.opened = True
        gate.connected(0.0)  # the gate is open: nothing to do
        assert not again.done() and limiter.failfast.grace == GRACE_MIN

    asyncio.run(main())


def test_the_kernel_round_trip_of_a_loopback_connection():
    async def main():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        rtt = kernel_round_trip(writer.transport)
        writer.close()
        server.close()
        return rtt

    rtt = asyncio.run(main())
    if not hasattr(socket, "TCP_INFO"):
        assert rtt is None
    else:
        assert rtt is not None and 0 < rtt < 1
    assert kernel_round_trip(None) is None

    class NoSocket:
        def get_extra_info(self, name):
            return None

    assert kernel_round_trip(NoSocket()) is None


def test_a_run_records_the_grace_it_used(make_input, tmp_path):
    path = make_input([f"grace {i}" for i in range(40)])
    assert settings_for(run_config(path, "http://127.0.0.1:1/score", tmp_path)).grace is None
    with SimulatedService(ServerConfig(latency=0, capacity=0)) as svc:
        scaled = score_file(run_config(path, svc.url, tmp_path, cache=None))
        given = score_file(run_config(path, svc.url, tmp_path, cache=None, probe_grace=3.5))
    limits = scaled.stats.engine_info["limits"]
    assert GRACE_MIN <= limits["probe_grace"] <= GRACE_MAX
    assert limits["probe_grace_from"].startswith("scaled from the probe's slowest connection round trip")
    assert scaled.stats.counts["ok"] == 40
    limits = given.stats.engine_info["limits"]
    assert limits["probe_grace"] == 3.5 and limits["probe_grace_from"] == "--probe-grace"
