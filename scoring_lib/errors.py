"""One exception family, so the CLI can turn any of them into a single line and an exit code.

Exit codes (docs/contract.md, "Errors and exit codes"): 0 all scored; 1 finished with error rows;
2 usage, configuration or input error; 3 output, cache or records not writable; 4 disk full;
5 open-file limit too low for the concurrency; 130 Ctrl-C (SIGINT); 143 SIGTERM; 129 SIGHUP.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path


class ScoringError(Exception):
    """Base of every error the workbench raises on purpose; the CLI prints it as one line."""

    exit_code = 2

    def _render_traceback_(self) -> list[str]:
        """How IPython (a notebook cell, papermill's error) shows it: one line, as the CLI does, not a
        traceback through the library's internals (the message names what to change)."""
        return [f"{type(self).__name__}: {self}"]


class ConfigError(ScoringError):
    """A setting is out of range or inconsistent; found before any work starts."""


class InputFileError(ScoringError):
    """The input path is missing, a directory or unreadable."""


class OutputError(ScoringError):
    """The output file or the cache cannot be written where asked (permission, read-only, not a
    directory); nothing torn is left behind."""

    exit_code = 3


class DiskFullError(OutputError):
    """The disk (or quota, or file-size limit) ran out while writing the output or the cache."""

    exit_code = 4


class ResourceLimitError(ScoringError):
    """The process may not open enough files (RLIMIT_NOFILE) for the concurrency asked."""

    exit_code = 5


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


_SQLITE_FULL, _SQLITE_IOERR, _SQLITE_IOERR_SHMSIZE = 13, 10, 10 | (19 << 8)
_ROOM = 1 << 20  # bytes: less free space than this where SQLite could not write reads as a full disk


def _sqlite_full(exc: sqlite3.Error, path: str | os.PathLike) -> bool:
    """SQLite reports a full disk as SQLITE_FULL only when a page write fails; growing its shared-memory
    file or another write on a full file system is a 'disk I/O error' (SQLITE_IOERR_*, no errno kept), so
    an I/O error counts as a full disk when that file system has (nearly) no room left."""
    code = getattr(exc, "sqlite_errorcode", 0) or 0
    if code & 0xFF == _SQLITE_FULL or "disk is full" in str(exc):
        return True
    if code == _SQLITE_IOERR_SHMSIZE:
        return True
    if code & 0xFF != _SQLITE_IOERR:
        return False
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < _ROOM
    except OSError:
        return False


def write_error(what: str, path: str | os.PathLike, exc: BaseException) -> OutputError:
    """The one-line error for a failed write of `what` at `path`, from an OSError or sqlite3 error."""
    if isinstance(exc, sqlite3.Error):
        full = _sqlite_full(exc, path)
        return (DiskFullError if full else OutputError)(f"cannot write {what} {path}: {'disk is full' if full else exc}")
    err = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc)
    cls = DiskFullError if err in _FULL else OutputError
    return cls(f"cannot write {what} {path}: {reason}")


class MissingDependencyError(ScoringError):
    """An optional extra is not installed; the message names the install command."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install -e '.[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ClusterConnectError(ScoringError):
    """An existing Ray cluster could not be joined."""


class GridError(ScoringError):
    """A sweep grid file does not parse or names an unknown parameter."""


class PointFailed(ScoringError):
    """A sweep point finished with error rows: its records are marked failed and kept out of the
    timing figures (raised inside the point's notebook so the sweep lists the point as failed)."""

    exit_code = 1


class RunInterrupted(ScoringError):
    """The run was stopped by the user (Ctrl-C); the cache keeps what was scored."""

    exit_code = 130


class RunTerminated(RunInterrupted):
    """The run was stopped by SIGTERM (or SIGHUP); cleaned up as for Ctrl-C; exit 128 + the signal."""

    exit_code = 143

    def __init__(self, message: str, signum: int = 15) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by the CLI's SIGTERM and SIGHUP handler, so every `finally` and every
    Ctrl-C clean-up path runs for them too (a KeyboardInterrupt subclass on purpose)."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__(signum)
        self.signum = signum


class ServiceUnusable(ScoringError):
    """The first requests all failed in a way more requests will not change (refused, DNS, 401...)."""

    exit_code = 1


class RunStalled(ScoringError):
    """No line finished and nothing moved for longer than any line may take: the engine lost work."""

    exit_code = 1


class ReportError(ScoringError):
    """The report has nothing honest to draw: no measured runs, an unknown sweep, or runs against
    different services or time scales that must not share a figure."""
