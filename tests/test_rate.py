"""The run's send rate (rate.py): the pacer's schedule and the CUBIC control of `auto`'s rate."""

import math

import pytest

from scoring_lib.rate import BETA, MIN_RATE, SERVED_SHARE, Meter, Pacer, RateControl


def test_the_pacer_spaces_sends_at_its_rate_after_a_small_burst():
    pacer = Pacer(100.0)  # burst: 0.1 s of the rate = 10 requests
    waits = [pacer.reserve(50.0) for _ in range(15)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.01 * i for i in range(1, 6)])


def test_an_unbounded_pacer_never_waits_and_a_pause_moves_the_schedule():
    pacer = Pacer()
    assert [pacer.reserve(1.0) for _ in range(100)] == [0.0] * 100
    pacer.hold_until(3.0)
    assert pacer.reserve(2.0) == pytest.approx(1.0)
    paced = Pacer(10.0)
    paced.hold_until(5.0)
    waits = [paced.reserve(4.0) for _ in range(3)]  # after a pause: one at its end, then at the rate
    assert waits == pytest.approx([1.0, 1.1, 1.2])


def test_a_meter_counts_recent_events_up_to_now():
    m = Meter()
    assert m.rate(1.0, 16) is None
    for i in range(20):
        m.add(i * 0.1)
    assert m.rate(1.9, 10) == pytest.approx(10 / 0.9, rel=0.01)
    assert m.rate(21.0, 10) < 1.0  # a pause lowers the measured rate


def _sends(rc: RateControl, start: float, rate: float, n: int) -> float:
    """n sends at `rate`, each answered (with a 429: what a rate limiter answers to too many)."""
    t = start
    for _ in range(n):
        rc.on_send(t)
        rc.on_answer(True)
        t += 1 / rate
    return t


def test_a_throttle_cuts_to_the_served_rate_once_per_round_trip():
    rc = RateControl(None, True, 0.0)
    t = _sends(rc, 0.0, 1000.0, 64)  # sending at 1000/s
    for i in range(64):
        rc.served.add(t - 0.64 + i * 0.01)  # the service served 100/s
    assert math.isinf(rc.rate)
    assert rc.on_throttle(sent=t - 0.01, now=t, window=32)
    assert rc.rate == pytest.approx(SERVED_SHARE * 100, rel=0.1)
    assert not rc.on_throttle(sent=t - 0.005, now=t + 0.001, window=32)  # sent before the cut: no second cut


def test_without_a_served_rate_the_cut_is_botocores_beta():
    rc = RateControl(None, True, 0.0)
    t = _sends(rc, 0.0, 100.0, 64)
    assert rc.on_throttle(sent=t, now=t, window=32)
    assert rc.rate == pytest.approx(BETA * 100, rel=0.05)


def test_the_rate_regrows_along_cubic_towards_the_rate_of_the_throttle():
    rc = RateControl(None, True, 0.0)
    t = _sends(rc, 0.0, 100.0, 64)
    rc.on_throttle(sent=t, now=t, window=32)
    cut = rc.rate
    rates = []
    for dt in (0.5, 1.0, 2.0, 3.0):
        _sends(rc, t + dt - 0.3, 100.0, 32)
        rc.on_success(t + dt, 32, 0.01)
        rates.append(rc.rate)
    assert cut < rates[0] <= rates[1] <= rates[2] <= rates[3]
    assert rates[-1] == pytest.approx(100, rel=0.1)  # K = cbrt(30 / 0.4) ~ 4.2 s: flat near the old rate


def test_the_ceiling_binds_and_a_fixed_run_has_no_adaptive_rate():
    fixed = RateControl(50.0, False, 0.0)
    _sends(fixed, 0.0, 100.0, 64)
    assert not fixed.on_throttle(sent=1.0, now=1.0, window=32) and fixed.binding == 50.0
    rc = RateControl(50.0, True, 0.0)
    t = _sends(rc, 0.0, 1000.0, 64)
    rc.on_throttle(sent=t, now=t, window=32)
    assert rc.binding <= 50.0 and rc.rate >= MIN_RATE


def test_429s_that_come_with_as_many_other_failures_are_a_flaky_service_not_a_rate_limit():
    rc = RateControl(None, True, 0.0)
    t = 0.0
    for _ in range(64):
        rc.on_send(t)
        rc.on_answer(False, other_failure=True)  # 500s, resets, bodies that do not parse
        t += 0.01
    rc.on_answer(True)
    assert not rc.on_throttle(sent=t, now=t, window=32) and math.isinf(rc.rate)


def test_shares_of_a_run_regrow_together_as_one_controller_does():
    """Ray: 4 workers, each with a quarter of the run's rate, regrow as one process would (each at
    CUBIC_C / 4): at CUBIC_C each, the run's rate came back 4x as fast and overshot the limiter."""
    def curve(parts: int) -> list[float]:
        rc = RateControl(None, True, 0.0, parts=parts)
        t = _sends(rc, 0.0, 100.0 / parts, 64)
        rc.on_throttle(sent=t, now=t, window=32)
        rates = [rc.rate * parts]
        for dt in (0.5, 1.0, 2.0, 3.0):
            _sends(rc, t + dt - 0.3, 100.0 / parts, 32)
            rc.on_success(t + dt, 32, 0.01)
            rates.append(rc.rate * parts)
        return rates

    assert curve(4) == pytest.approx(curve(1), rel=0.02)
    rc = RateControl(None, True, 0.0, parts=4)
    assert rc.min_rate == MIN_RATE / 4


def test_after_a_cut_the_rate_regrows_towards_what_the_service_served_not_what_was_sent():
    """A first throttle comes after sending unbounded (here 400/s to a 60/s limiter): CUBIC's plateau is
    the 60/s served, so a second later the rate is still near it (a curve back to 400/s was at 2x it)."""
    rc = RateControl(None, True, 0.0)
    t = 0.0
    for i in range(400):  # one second: 400 sends, 60 of them served
        rc.on_send(t)
        if i % 7 == 0:
            rc.served.add(t)
            rc.on_answer(False)
        else:
            rc.on_answer(True)
        t += 1 / 400
    assert rc.on_throttle(sent=t, now=t, window=64)
    assert rc.rate == pytest.approx(SERVED_SHARE * 400 / 7, rel=0.1)
    for dt in (0.25, 0.5, 1.0):
        _sends(rc, t + dt - 0.25, rc.rate, 16)
        rc.on_success(t + dt, 16, 0.05)
    assert rc.rate < 1.1 * 400 / 7
