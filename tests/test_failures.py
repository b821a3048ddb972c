"""Failures are types (scoring_lib/failures.py): what each kind means for retries, fail-fast and the
adaptive limit, and the fail-fast rule (issue 16 item 3) on the limiter and on whole runs."""

from __future__ import annotations

import asyncio

import pytest

from scoring_lib import score_file
from scoring_lib.failures import Failure, FailureKind, http_failure
from scoring_lib.limits import Attempt, LimitSettings, RunLimiter, Stop

from conftest import read_rows, run_config
from hostile import FlakyButAlive, HostileServer


# -- the kinds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status, retry_after, kind", [
    (429, None, FailureKind.THROTTLED), (429, 1.0, FailureKind.THROTTLED), (503, 2.0, FailureKind.THROTTLED),
    (503, None, FailureKind.OVERLOADED), (504, None, FailureKind.OVERLOADED), (504, 3.0, FailureKind.OVERLOADED),
    (500, None, FailureKind.HTTP), (401, None, FailureKind.HTTP), (422, None, FailureKind.HTTP),
    (302, None, FailureKind.REDIRECT), (308, None, FailureKind.REDIRECT)])
def test_a_status_is_classified_once(status, retry_after, kind):
    failure = http_failure(status, retry_after)
    assert failure.kind is kind and failure.status == status and failure.label == f"HTTP {status}"
    assert failure.retry_after == (retry_after if status in (429, 503) else None)


@pytest.mark.parametrize("failure, retryable, unanimous, overload", [
    (Failure(FailureKind.REFUSED), True, True, False),
    (Failure(FailureKind.DNS), True, True, False),
    (Failure(FailureKind.TIMEOUT), True, False, True),
    (Failure(FailureKind.RESET), True, False, False),
    (Failure(FailureKind.UNPARSEABLE), True, False, False),
    (Failure(FailureKind.WRONG_SHAPE), True, True, False),
    (Failure(FailureKind.INTERNAL), False, False, False),
    (http_failure(302), False, True, False),
    (http_failure(401), False, True, False),
    (http_failure(403), False, True, False),
    (http_failure(404), False, True, False),
    (http_failure(400), False, False, False),
    (http_failure(408), True, False, False),
    (http_failure(429), True, False, True),
    (http_failure(500), True, False, False),
    (http_failure(503), True, False, True),
    (http_failure(503, 1.0), True, False, True),
], ids=lambda v: v.label if isinstance(v, Failure) else None)
def test_what_a_kind_means_is_a_property_of_the_kind(failure, retryable, unanimous, overload):
    assert (failure.retryable, failure.fatal_if_unanimous, failure.overload) == (retryable, unanimous, overload)


def test_labels_stay_the_names_records_already_count():
    # The committed reference records count attempts under these names; reports read them back.
    assert [Failure(k).label for k in (FailureKind.REFUSED, FailureKind.DNS, FailureKind.TIMEOUT,
                                       FailureKind.RESET, FailureKind.UNPARSEABLE)] == \
        ["connection refused", "DNS failure", "timeout", "connection reset", "malformed reply"]


# -- the fail-fast rule on the limiter ---------------------------------------------------------------------
def judge(failures: list[Failure], probe: int = 16, trip: int = 8) -> Stop | None:
    """Release `failures` one by one through a fresh limiter (no success); the Stop it raised, if any."""
    limiter = RunLimiter(LimitSettings(limit=64, probe=probe, trip=trip))

    async def main():
        gate = limiter.gate()
        for f in failures:
            try:
                ticket = await gate.acquire()
            except Stop as stop:
                return stop
            gate.release(ticket, Attempt(f, 0.001))
        return limiter.stopped
    return asyncio.run(main())


def test_a_unanimous_fatal_cause_stops_the_run():
    stop = judge([Failure(FailureKind.WRONG_SHAPE)] * 8)
    assert stop is not None and stop.fatal and stop.failure.kind is FailureKind.WRONG_SHAPE
    assert "wrong shape on every request that finished (8 of 8" in str(stop)


def test_one_stray_transient_failure_does_not_hide_a_unanimous_cause():
    stop = judge([http_failure(503)] + [http_failure(401)] * 8)
    assert stop is not None and stop.fatal and stop.kind == "HTTP 401"
    assert "8 of the 9 requests that finished" in str(stop)


@pytest.mark.parametrize("mix", [
    [Failure(FailureKind.UNPARSEABLE)] * 16,  # a body that does not parse is transient
    [http_failure(503), http_failure(429), Failure(FailureKind.RESET), http_failure(500)] * 4,
    [Failure(FailureKind.WRONG_SHAPE), Failure(FailureKind.UNPARSEABLE)] * 8,  # half and half: no verdict
    [Failure(FailureKind.REFUSED), http_failure(401)] * 8,  # two fatal causes, neither unanimous
], ids=["unparseable", "transient-mix", "shape-and-unparseable", "two-causes"])
def test_transient_or_mixed_failures_never_stop_the_run_early(mix):
    assert judge(mix) is None


# -- whole runs ----------------------------------------------------------------------------------------------
def test_a_flaky_but_alive_service_gets_every_line_scored(tmp_path, make_input):
    flaky = FlakyButAlive(fail_first=4)
    path = make_input([f"line {i}" for i in range(40)])
    with HostileServer(flaky) as srv:
        result = score_file(run_config(path, srv.url, tmp_path, max_concurrent_tasks=16))
    rows = read_rows(result.output)
    assert result.exit_code == 0, result.stats.summary()
    assert len(rows) == 40 and all(r["status"] == "ok" for r in rows)
    assert set(flaky.causes) == set(FlakyButAlive.CAUSES)  # every transient cause was seen, none stopped it
    assert result.stats.requests == 40 * 5
