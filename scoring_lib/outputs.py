"""JSON Lines result writer: rows in input order, file renamed into place only when complete."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, write_error

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_STATUSES = {s: f'"{s}"' for s in ("ok", "empty", "error")}


@dataclass(slots=True)
class Row:
    """One output row, as the contract defines it."""

    line: int
    score: float | None
    status: str  # ok | empty | error
    error: str | None
    attempts: int

    def to_json(self) -> str:
        # The text json.dumps(..., ensure_ascii=False, allow_nan=False) gives, built directly: a row per line
        # is the driver's hottest code at zero latency, and this is a quarter of the cost. Strict JSON or
        # nothing: a non-finite score raises here (scores are checked finite upstream).
        score = self.score
        if score is None:
            score_text = "null"
        elif isinstance(score, float) and math.isfinite(score):
            score_text = float.__repr__(score)
        else:
            score_text = _dumps(score)
        error = "null" if self.error is None else _dumps(self.error)
        status = _STATUSES.get(self.status) or _dumps(self.status)
        return (f'{{"line": {int(self.line)}, "score": {score_text}, "status": {status}, "error": {error}, '
                f'"attempts": {int(self.attempts)}}}')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temporaries(path: Path) -> list[tuple[Path, int]]:
    """The `.NAME.PID.tmp` files of `path` written by other processes, with their process ids."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.tmp$")
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return []
    return [(p, int(m.group(1))) for p in candidates
            if (m := pattern.match(p.name)) and int(m.group(1)) != os.getpid()]


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete `.NAME.PID.tmp` files of `path` left by runs that were killed (their process is gone)."""
    removed = []
    for p, pid in _temporaries(path):
        if not _alive(pid):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def check_not_being_written(path: Path) -> None:
    """ConfigError when another live process is writing `path` now (its temporary is there): two runs
    with one output (the same input stem in two folders, say) would each replace the other's rows."""
    for _p, pid in _temporaries(path):
        if _alive(pid):
            raise ConfigError(f"output {path} is being written by another run (process {pid}) now: "
                              f"give this run another --output")


def output_target(path: str | os.PathLike) -> Path:
    """The file an output at `path` is written to: a symlink's target (the link itself stays), or
    `path`. Refused (ConfigError) when it exists and is not a regular file: a device, FIFO, socket or
    /dev/fd pipe would be replaced by a regular file by the rename that puts a finished output in place."""
    raw = os.fspath(path)
    if raw.endswith(("/", os.sep)) and not os.path.isdir(raw):
        raise ConfigError(f"output {raw} ends with '/' but is no existing folder; give a file path")
    target = Path(os.path.realpath(raw)) if os.path.islink(raw) else Path(raw)
    try:
        mode = os.stat(raw).st_mode  # through any link: /dev/fd/63 links to a pipe no path names
    except OSError:  # absent (or unreadable): created as a regular file, or refused when written
        return target
    if stat.S_ISDIR(mode):
        raise ConfigError(f"output {raw} is a directory; give a file path")
    if not stat.S_ISREG(mode):
        raise ConfigError(f"output {raw} must be a regular file (not a device, pipe or socket): the output is "
                          "written whole and renamed into place; read the scores from the file afterwards")
    return target


class OrderedRowWriter:
    """Accepts rows in any order and writes them in line order; holds only the out-of-order ones."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = output_target(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise write_error("output", self.path, NotADirectoryError(
                f"{self.path.parent} (or a folder above it) is a file, not a folder")) from None
        except OSError as exc:
            raise write_error("output", self.path, exc) from None
        try:
            remove_stale_temporaries(self.path)
            check_not_being_written(self.path)
            self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            self._file = open(self._tmp, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise write_error("output", self.path, exc) from None
        self._pending: dict[int, Row] = {}
        self._next = 1
        self.counts = {"ok": 0, "empty": 0, "error": 0}

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def written(self) -> int:
        return self._next - 1

    def add(self, row: Row) -> None:
        if row.line != self._next:  # out of order: held until the rows before it are in
            self._pending[row.line] = row
            return
        try:
            self._write(row)
            while (ready := self._pending.pop(self._next, None)) is not None:
                self._write(ready)
        except OSError as exc:
            raise write_error("output", self.path, exc) from None

    def _write(self, row: Row) -> None:
        self._file.write(row.to_json() + "\n")
        self.counts[row.status] += 1
        self._next += 1

    def commit(self) -> Path:
        """Flush, fsync and rename into place; the output exists only from here on."""
        if self._pending:
            raise RuntimeError(f"{len(self._pending)} rows are still waiting for line {self._next}")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except OSError as exc:
            raise write_error("output", self.path, exc) from None
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; never raises (it runs on the way out of a failure)."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:  # e.g. the buffered tail cannot be flushed to a full disk
                pass
        try:
            self._tmp.unlink()
        except OSError:
            pass
