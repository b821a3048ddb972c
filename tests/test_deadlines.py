"""The client's per-request deadline (client.Deadlines): expired, the request leaves as TimeoutError,
by asyncio.timeout's rule; a cancellation from outside stays a cancellation; on time, nothing happens."""

from __future__ import annotations

import asyncio
import sys

import pytest

from scoring_lib.client import Deadlines


async def _with_deadline(timeout: float, work):
    deadlines = Deadlines(timeout)
    deadlines.start()
    try:
        with deadlines.request() as d:
            return d, await work()
    finally:
        assert not deadlines._live  # forgotten on exit, whatever happened
        await deadlines.stop()


def test_a_request_past_its_deadline_leaves_as_a_timeout():
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await _with_deadline(0.05, lambda: asyncio.sleep(10))
        assert not asyncio.current_task().cancelling() if sys.version_info >= (3, 11) else True
        return "went on"  # the task itself is not left cancelled

    assert asyncio.run(main()) == "went on"


def test_a_request_on_time_keeps_its_result():
    async def work():
        await asyncio.sleep(0.01)
        return 7

    _, result = asyncio.run(_with_deadline(5, work))
    assert result == 7


def test_a_cancellation_from_outside_stays_a_cancellation():
    async def main():
        task = asyncio.ensure_future(_with_deadline(5, lambda: asyncio.sleep(10)))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"

    assert asyncio.run(main()) == "cancelled"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="counting cancellations needs Python 3.11")
def test_an_outside_cancellation_meeting_an_expired_deadline_stays_a_cancellation():
    async def main():
        deadlines = Deadlines(5)
        deadlines.start()
        try:
            with deadlines.request() as d:
                d.expire()  # as the watcher does at the deadline
                asyncio.current_task().cancel()  # and the run is cancelled too
                await asyncio.sleep(1)
        finally:
            await deadlines.stop()

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_a_paused_deadline_does_not_expire_and_restarts():
    async def main():
        deadlines = Deadlines(0.05)
        deadlines.start()
        try:
            with deadlines.request() as d:
                d.pause()  # waiting for a pooled connection: not the service's time
                await asyncio.sleep(0.2)
                d.restart()
                with pytest.raises(asyncio.CancelledError):  # inside the block the expiry is a cancellation
                    await asyncio.sleep(10)
                raise asyncio.CancelledError
        except asyncio.TimeoutError:
            return "timed out after the restart"
        finally:
            await deadlines.stop()

    assert asyncio.run(main()) == "timed out after the restart"
