"""Process resources a run needs before it starts: enough open files for its connections.

A run holds one socket per request in flight (plus the pool's idle ones); with the soft
RLIMIT_NOFILE below that, connections fail one by one as "Too many open files" error rows after
thousands of retries. So the limit is checked once, up front: raised to what the run needs when the
hard limit allows, else the run is refused with ResourceLimitError (exit 5) naming both fixes.
"""

from __future__ import annotations

import dataclasses
import math

from .config import RunConfig
from .errors import ResourceLimitError

BASE_FDS = 64  # interpreter, input, output, cache (db, wal, shm), terminal, Ray/IPython spares
PER_THREAD_FDS = 4  # each event loop: selector, self-pipe, spare


def sockets_needed(config: RunConfig) -> int:
    """Most sockets this process may hold at once for `config` (Ray: the largest worker's share)."""
    c = config.concurrency_ceiling
    if config.engine == "ray":
        c = math.ceil(c / config.resolved_workers)
    limit = config.client.pool_size(c)  # auto: c, which caps nothing
    if limit:  # a fixed pool per session caps the sockets below the concurrency
        c = min(c, limit * config.resolved_threads)
    return c


def files_needed(config: RunConfig, extra: int = 0) -> int:
    return BASE_FDS + PER_THREAD_FDS * config.resolved_threads + sockets_needed(config) + extra


def ensure_run_files(run: RunConfig, asked: RunConfig, extra: int = 0) -> int:
    """ensure_open_files for a run (`run`: the config as it will run; `asked`: as the user gave it), naming
    the setting that asks for most of the files: the sockets of the concurrency, or the threads' loops."""
    loops = PER_THREAD_FDS * run.resolved_threads
    if loops > sockets_needed(run) + extra:
        what, lower = f"--threads {run.resolved_threads}", "--threads"
    else:
        what = f"--max-concurrent-tasks {asked.max_concurrent_tasks}"
        lower = "--max-concurrent-tasks-max" if asked.adaptive else "--max-concurrent-tasks"
    return ensure_open_files(files_needed(run, extra), what, lower)


def _hard_limit() -> int | None:
    """The hard RLIMIT_NOFILE (None: unlimited, or not POSIX): no run may hold more files than this."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def fit_auto_ceiling(config: RunConfig, in_process_service: bool = False) -> tuple[RunConfig, str | None]:
    """For --max-concurrent-tasks auto, whose ceiling is only a ceiling: the config with that ceiling
    lowered to what the hard open-file limit allows, and the one warning that says so (None when it
    fits or is fixed; a fixed C that does not fit is refused by ensure_open_files)."""
    hard = _hard_limit()

    def needed(ceiling: int) -> int:
        c = dataclasses.replace(config, max_concurrent_tasks_max=ceiling)
        return files_needed(c, sockets_needed(c) if in_process_service else 0)

    if not config.adaptive or hard is None or needed(config.concurrency_ceiling) <= hard or needed(1) > hard:
        return config, None
    low, high = 1, config.concurrency_ceiling  # needed(low) fits, needed(high) does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if needed(mid) <= hard else (low, mid)
    return dataclasses.replace(config, max_concurrent_tasks_max=low), (
        f"--max-concurrent-tasks auto: ceiling lowered from {config.concurrency_ceiling} to {low}, what the "
        f"open-file limit ({hard}) allows; `ulimit -n {needed(config.concurrency_ceiling)}` lifts it")


def ensure_open_files(needed: int, what: str = "", lower: str = "--max-concurrent-tasks") -> int:
    """Make sure this process may open `needed` files: raise the soft limit (up to the hard one) if
    that is enough, else ResourceLimitError. Returns the soft limit in force. No-op off POSIX."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return needed
    raise ResourceLimitError(
        f"{what or 'this run'} needs about {needed} open files but the limit is {soft} (hard limit {hard}): "
        f"lower {lower}{'' if lower == '--threads' else ' (or --connector-limit)'}, or raise the limit (`ulimit -n {needed}`)")
