"""One notebook run through papermill that a signal stops: Ctrl-C, SIGTERM or SIGHUP ends the sweep.

papermill's client (nbclient) installs its own SIGINT and SIGTERM handlers on the event loop it runs in
the main thread; they only shut the kernel down, so the notebook fails like any failed point and a
sweep would go on with the next one: a user had to press Ctrl-C once per point. Here papermill runs in
a worker thread, where nbclient installs no handler, and the main thread keeps Python's: on a signal it
stops the kernels this process started (its own descendants only), lets the worker thread end, and
re-raises, so the sweep stops with its one line and exit code.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psutil

__all__ = ["execute_notebook"]

JOIN_SECONDS = 0.2  # how often the main thread wakes to take a signal while the notebook runs
KERNEL_MODULE = "ipykernel_launcher"


def execute_notebook(notebook: Path, output: Path, parameters: dict, cwd: Path) -> None:
    """papermill.execute_notebook(notebook -> output) with `parameters`, the kernel started in `cwd`;
    its exceptions are raised here. KeyboardInterrupt (and any exception raised by a signal handler,
    e.g. the CLI's SIGTERM / SIGHUP) stops the kernel and propagates."""
    import papermill as pm  # notebooks extra: imported where used

    failure: list[BaseException] = []

    def run() -> None:
        try:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                                progress_bar=False, cwd=str(cwd))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
            failure.append(exc)

    worker = threading.Thread(target=run, name="papermill", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(JOIN_SECONDS)
    except BaseException:
        stop_kernels()
        worker.join(10.0)
        raise
    if failure:
        raise failure[0]


def stop_kernels() -> list[int]:
    """Kill the Jupyter kernels among this process's descendants (and their own children); their pids."""
    me = psutil.Process(os.getpid())
    killed = []
    for proc in me.children(recursive=True):
        try:
            if any(KERNEL_MODULE in part for part in proc.cmdline()):
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()
                killed.append(proc.pid)
        except psutil.Error:
            continue
    return killed
