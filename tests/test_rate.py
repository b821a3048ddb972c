"""The run's send rate (rate.py): the pacer's schedule and the CUBIC control of `auto`'s rate."""

import math

import pytest

from scoring_lib.rate import BETA, MIN_RATE, MIN_SPAN, PROBE_GROWTH, SERVED_SHARE, Meter, Pacer, RateControl


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


def _load(rc: RateControl, now: float, sent: float, served: float | None = None, throttled: bool = True) -> None:
    """The half second before `now`: sends at `sent` per second, `served` of them per second served, every
    answer counted (a 429 when `throttled`)."""
    for i in range(int(sent * 0.5)):
        t = now - 0.5 + (i + 0.5) / sent
        rc.on_send(t)
        rc.on_answer(throttled)
    for i in range(int((served or 0) * 0.5)):
        rc.served.add(now - 0.5 + (i + 0.5) / served)


def _grow(rc: RateControl, now: float) -> float:
    """The rate after a success at `now`, sending far above it (so the 2x-the-send-rate cap does not bind)."""
    _load(rc, now, 4 * max(rc.rate, 1.0), throttled=False)
    rc.on_success(now, 32, 0.01)
    return rc.rate


def _controller_after_two_cuts(scale: float, parts: int = 1) -> tuple[RateControl, float]:
    """A first throttle (unbounded: a floor), then a second one that measured `scale` per second served."""
    rc = RateControl(None, True, 0.0, parts=parts)
    _load(rc, 1.0, 4 * scale, scale)
    assert rc.on_throttle(sent=1.0, now=1.0, window=16)
    _grow(rc, 1.4)  # geometric growth from the first cut's floor (above `scale` by now)
    _load(rc, 2.0, 1.2 * scale, scale)
    assert rc.on_throttle(sent=2.0, now=2.0, window=16)
    return rc, 2.0


def test_the_rate_regrows_along_cubic_to_its_plateau_at_the_served_rate():
    rc, t = _controller_after_two_cuts(100.0)
    cut = rc.rate
    assert cut == pytest.approx(SERVED_SHARE * 100, rel=0.05)
    rates = [_grow(rc, t + dt) for dt in (0.5, 1.0, 2.0, 3.0)]
    assert cut < rates[0] <= rates[1] <= rates[2] <= rates[3]
    assert rates[-1] == pytest.approx(100, rel=0.05)  # flat near the plateau


def test_the_cubic_curve_is_scale_free():
    """The same cut at 60/s and at 400/s (and 4000/s) regrows along the same curve relative to its plateau:
    with botocore's C in requests per second cubed, a cut at 400/s took cbrt(400/60) = 1.9x as long to
    come back, and one at 4000/s 4x."""
    def curve(scale: float) -> list[float]:
        rc, t = _controller_after_two_cuts(scale)
        return [_grow(rc, t + dt) / scale for dt in (0.25, 0.5, 1.0, 2.0, 3.0, 4.0)]

    assert curve(400.0) == pytest.approx(curve(60.0), rel=0.01)
    assert curve(4000.0) == pytest.approx(curve(60.0), rel=0.01)


def test_a_first_cut_is_a_floor_from_which_the_rate_grows_geometrically():
    """The first throttle comes at the end of the run's own ramp: the 64/s served by then is what the ramp
    sent, not the service's rate (a 400/s limiter here). The rate grows PROBE_GROWTH-fold per span from it,
    at any scale, so it reaches 400/s within 1.5 s (along CUBIC from 64/s it took about 9 s)."""
    for scale in (1.0, 10.0):
        rc = RateControl(None, True, 0.0)
        _load(rc, 1.0, 208 * scale, 64 * scale)
        assert rc.on_throttle(sent=1.0, now=1.0, window=16)
        cut = rc.rate
        assert cut < 64 * scale
        assert _grow(rc, 1.0 + 2 * MIN_SPAN) == pytest.approx(cut * PROBE_GROWTH ** 2, rel=0.01)
        assert _grow(rc, 2.5) >= 400 * scale


def test_the_next_cut_ends_the_geometric_growth():
    rc, t = _controller_after_two_cuts(100.0)
    assert _grow(rc, t + 2 * MIN_SPAN) < 1.01 * 100  # along CUBIC now, under the plateau


def test_shares_of_a_run_regrow_together_as_one_controller_does():
    """Ray: 4 workers, each with a quarter of the run's rate, follow the curve one controller would: each
    share's curve is relative to its own plateau (at botocore's absolute C each, the run's rate came back
    4x as fast and overshot the limiter)."""
    def curve(parts: int) -> list[float]:
        rc, t = _controller_after_two_cuts(100.0 / parts, parts)
        return [rc.rate * parts] + [_grow(rc, t + dt) * parts for dt in (0.5, 1.0, 2.0, 3.0)]

    assert curve(4) == pytest.approx(curve(1), rel=0.02)
    rc = RateControl(None, True, 0.0, parts=4)
    assert rc.min_rate == MIN_RATE / 4


def test_a_meter_counts_the_last_span_not_a_number_of_events():
    """400 events per second: counted over a 0.25 s span they are 400/s whatever `k` (16 events over a
    0.25 s floor read 64/s); over a ramp, the span's events are the recent rate, not the ramp's average."""
    m = Meter()
    for i in range(400):
        m.add(i / 400)
    assert m.rate(1.0, 16, 0.25) == pytest.approx(400, rel=0.02)
    ramp = Meter()
    t = 0.0
    for r in (50, 100, 200, 400):  # a quarter second at each rate
        for i in range(int(r / 4)):
            ramp.add(t + i / r)
        t += 0.25
    assert ramp.rate(t, 256, 0.25) == pytest.approx(400, rel=0.02)


def test_a_turn_taken_at_a_low_rate_goes_sooner_when_the_rate_rises():
    """150 sends took their turns while the rate was 60/s (the last was 2.5 s away); the rate rose to
    600/s a tenth of a second later: the last turn now comes within a quarter second, not at 2.5 s."""
    pacer = Pacer(60.0)
    turns = [pacer.take(0.0) for _ in range(150)]
    assert pacer.wait(turns[-1], 0.0) == pytest.approx(149 / 60 - 5 / 60, rel=0.01)
    pacer.set_rate(600.0, 0.1)
    assert pacer.wait(turns[-1], 0.1) < 0.25
    pacer.set_rate(60.0, 0.2)  # and a cut applies to the turns already taken
    assert pacer.wait(turns[-1], 0.2) > 1.0


def test_a_pacer_that_was_unbounded_starts_its_schedule_when_a_rate_is_set():
    pacer = Pacer()
    turns = [pacer.take(0.0) for _ in range(10)]
    assert all(pacer.wait(t, 0.0) == 0.0 for t in turns)
    pacer.set_rate(10.0, 1.0)
    assert [pacer.reserve(1.0) for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
