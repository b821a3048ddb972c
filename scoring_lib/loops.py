"""Which event loop the project's loops run: uvloop where it is installed, else asyncio's own.

One place for the choice (the scoring threads of both engines; the bench). The simulated service keeps
asyncio's loop: it is what a time-scaled run measures against, and uvloop there bought nothing measurable.
"""

from __future__ import annotations

import asyncio
import os

from .errors import ConfigError

EVENT_LOOP_ENV = "SCORING_EVENT_LOOP"  # "asyncio" forces the standard library's loop
EVENT_LOOPS = ("", "auto", "asyncio", "uvloop")  # "", auto, uvloop: uvloop where it is installed and safe


def event_loop_name() -> str:
    """The loop the scoring threads run: uvloop where it is installed (a dependency except on Windows),
    unless $SCORING_EVENT_LOOP=asyncio. What it buys at zero latency is measured beside asyncio's own loop
    by `bench --cases z`; against a slow service the loop makes no difference."""
    chosen = os.environ.get(EVENT_LOOP_ENV, "").strip().lower()
    if chosen not in EVENT_LOOPS:
        raise ConfigError(f"${EVENT_LOOP_ENV} must be one of {', '.join(v for v in EVENT_LOOPS if v)} "
                          f"(or unset), got {chosen[:40]!r}")
    if chosen == "asyncio":
        return "asyncio"
    if not _standard_fds_open():
        return "asyncio"  # libuv aborts the process when it closes a socket that got fd 0, 1 or 2
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _standard_fds_open() -> bool:
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return False
    return True


def new_event_loop() -> asyncio.AbstractEventLoop:
    if event_loop_name() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()

