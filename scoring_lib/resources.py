"""Process resources a run needs before it starts: enough open files for its connections.

A run holds one socket per request in flight (plus the pool's idle ones); with the soft
RLIMIT_NOFILE below that, connections fail one by one as "Too many open files" error rows after
thousands of retries. So the limit is checked once, up front: raised to what the run needs when the
hard limit allows, else the run is refused with ResourceLimitError (exit 5) naming both fixes.
"""

from __future__ import annotations

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


def ensure_open_files(needed: int, what: str = "") -> int:
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
        f"lower --max-concurrent-tasks (or --connector-limit), or raise the limit (`ulimit -n {needed}`)")
