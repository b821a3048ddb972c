"""Helpers that keep the notebooks thin and tidy: a simulated service that never outlives the work
that needed it, even when a cell fails half-way through Run All."""

from __future__ import annotations

import atexit
import subprocess
import sys
from pathlib import Path

from . import paths
from .server import ServiceProcess
from .service import ServiceProfile, simulated_config


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def start_service(service: dict | None, url: str | None = None,
                  profile: ServiceProfile | None = None) -> tuple[str, ServiceProcess | None]:
    """The URL to score against: `url` itself, or a simulated service (a child process on 127.0.0.1)
    started for this notebook: the settings `service` over the `profile`'s figures and behaviour (as
    `score --profile` and a grid's `profile:` build it), else over the `serve` defaults.

    The service is stopped by whichever comes first: the notebook's own last cell (`stop()`), the first
    cell that fails (an IPython post_run_cell hook), or the kernel's exit. So a failed Run All never
    leaves a service behind."""
    if url:
        return url, None
    proc = ServiceProcess(simulated_config(profile, service or {})).start()
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


# Notebook metadata JupyterLab rewrites on every save; stripped with the outputs, by the git filter
# (`make git-filter` reads this list) and by save_hook.
STRIP_EXTRA_KEYS = ["metadata.language_info"]


def save_hook(model: dict, path: str, contents_manager, **kwargs) -> None:
    """Jupyter server pre-save hook (`make lab` sets it): a notebook of this project's notebooks/ is
    saved as committed, without outputs (nbstripout), and its executed copy, outputs included, goes
    to results/notebooks/saved/ (ignored by git). So running and saving notebooks in JupyterLab
    leaves `git status` clean and the outputs are still there to read."""
    import nbformat  # the notebooks extra: only a JupyterLab save needs it

    if model.get("type") != "notebook" or not model.get("content"):
        return
    root = paths.find_root()  # at save time: the server may serve another checkout ($SCORING_WORKBENCH_ROOT)
    os_path = Path(getattr(contents_manager, "root_dir", ".")).joinpath(path.lstrip("/")).resolve()
    try:
        relative = os_path.relative_to(root / "notebooks")
    except ValueError:
        return  # not one of the project's notebooks: saved as it is
    nb = nbformat.from_dict(model["content"])
    text = nbformat.writes(nb)
    if any(c.get("outputs") for c in nb.cells if c.get("cell_type") == "code"):
        copy = root / paths.EXECUTED.relative_to(paths.ROOT) / "saved" / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(text, encoding="utf-8")
    # nbstripout's own command, as the git filter runs it, so the saved file is what git would stage
    stripped = subprocess.run([sys.executable, "-m", "nbstripout", "--extra-keys", " ".join(STRIP_EXTRA_KEYS)],
                              input=text, capture_output=True, text=True, check=True, cwd=root)
    model["content"] = nbformat.reads(stripped.stdout, as_version=nbformat.NO_CONVERT)
