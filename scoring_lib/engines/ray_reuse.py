"""What one process keeps of Ray between runs: its connection and, inside a notebook kernel, the worker
actors of the last run (the next run of the same shape starts with them). `release()` ends both."""

from __future__ import annotations

import atexit
import sys
from dataclasses import dataclass, field


@dataclass
class Slot:
    """One worker actor of a run: its share of the limit, what it holds now, and what it said when ready."""

    handle: object
    share: int
    limit: int
    outstanding: int = 0
    info: dict | None = None  # what the worker said when it was ready; None while it boots
    learnt: int | None = None  # `auto`: what the worker sends in a round trip, as its last chunk reported (None: fixed C)
    slots: int = 0  # its request slots: lines it sends at once (0: unknown, lines go by `limit` alone)


@dataclass
class Kept:
    """Worker actors kept between runs of one kernel, and the shape they were made for."""

    shape: tuple = field(repr=False)  # holds the API key: never printed
    slots: list[Slot] = field(default_factory=list)


class State:
    """This process's Ray connection and kept actors (one per process, like Ray's own)."""

    connected_here = False  # ray.init was called by this module
    address: str | None = None  # what it was called with (None: a local Ray started here)
    dashboard_url: str | None = None
    messages_log: str | None = None  # where Ray's own messages to this driver go (None: the terminal)
    kept: Kept | None = None
    reuse: bool | None = None  # None: reuse inside a Jupyter kernel only


def set_reuse(on: bool | None) -> None:
    """Keep the Ray connection and worker actors between runs (True), never (False), or only inside
    a Jupyter kernel (None, the default). `release()` ends what is kept."""
    State.reuse = on
    if on is False:
        release()


def reusing() -> bool:
    """Whether this process keeps Ray and its workers after a run (set_reuse, else inside a kernel)."""
    if State.reuse is not None:
        return State.reuse
    return _in_kernel()


def _in_kernel() -> bool:
    """A Jupyter kernel runs this process: IPython's shell exists and has a kernel. Imported modules alone
    are no evidence (a test run or a script may import ipykernel or papermill without being a kernel)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def release() -> None:
    """End kept worker actors and the Ray connection this module made (a joined cluster keeps running)."""
    kept, State.kept = State.kept, None
    if "ray" not in sys.modules:
        return
    ray = sys.modules["ray"]
    if kept is not None:
        kill_actors(ray, kept.slots)
    if State.connected_here and ray.is_initialized():
        if State.address is None:
            _stop_monitor(ray)
        ray.shutdown()
    State.connected_here = False
    State.address = None
    State.dashboard_url = None
    State.messages_log = None


atexit.register(release)


def _stop_monitor(ray) -> None:
    """Kill the autoscaler monitor of the local Ray started here before ray.shutdown() stops the rest. Told
    to stop (SIGTERM) after the GCS it reports to is gone, it tries to report its own end there and outlasts
    the whole second ray.shutdown() gives it, added to every local run's teardown; a one-node Ray that is
    stopping has nothing for it to do."""
    node = getattr(ray._private.worker, "_global_node", None)
    for info in (getattr(node, "all_processes", None) or {}).get(ray._private.ray_constants.PROCESS_TYPE_MONITOR, ()):
        if info.process.poll() is None:
            info.process.kill()


def kill_actors(ray, slots: list[Slot]) -> None:
    """End these worker actors (the ones already gone are skipped)."""
    for slot in slots:
        try:
            ray.kill(slot.handle)
        except Exception:  # already dead or the cluster is gone
            pass
