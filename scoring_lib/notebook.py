"""Helpers that keep the notebooks thin and tidy: a simulated service that never outlives the work
that needed it, even when a cell fails half-way through Run All."""

from __future__ import annotations

import atexit

from .config import ServerConfig
from .server import ServiceProcess


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def start_service(service: dict | None, url: str | None = None) -> tuple[str, ServiceProcess | None]:
    """The URL to score against: `url` itself, or a simulated service (a child process on 127.0.0.1)
    started with the profile `service` for this notebook.

    The service is stopped by whichever comes first: the notebook's own last cell (`stop()`), the first
    cell that fails (an IPython post_run_cell hook), or the kernel's exit. So a failed Run All never
    leaves a service behind."""
    if url:
        return url, None
    proc = ServiceProcess(ServerConfig(**(service or {}))).start()
    atexit.register(proc.stop)
    ip = _ipython()
    if ip is not None:
        def stop_on_error(result) -> None:
            if not result.success:
                proc.stop()
            if not result.success or proc.proc is None or proc.proc.poll() is not None:
                ip.events.unregister("post_run_cell", stop_on_error)

        ip.events.register("post_run_cell", stop_on_error)
    return proc.url, proc
