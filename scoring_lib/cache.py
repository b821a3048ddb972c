"""Persistent score cache (SQLite, WAL) behind a bounded in-memory store of recent scores.

Scores are committed as they arrive, so a killed run, started again, requests only what is missing.
Keys are a sha256 of namespace (url and field names) and text: the cache never holds the texts.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import DiskFullError, OutputError, write_error


def cache_namespace(url: str, request_field: str, score_field: str) -> str:
    return f"{url}\x00{request_field}\x00{score_field}"


FILTER_BITS = 1 << 24  # run-local: a fixed 2 MiB filter of the keys written to the temporary file


def _bits(key: bytes) -> tuple[int, int]:
    """The filter's two bit positions for a key (a sha256 digest: its bytes are uniform)."""
    n = int.from_bytes(key[:8], "little")
    return n % FILTER_BITS, (n >> 32) % FILTER_BITS


def _seen(bits: bytearray, key: bytes) -> bool:
    """False when `key` was never written to the run-local file (and for most that were not)."""
    a, b = _bits(key)
    return bool(bits[a >> 3] & (1 << (a & 7))) and bool(bits[b >> 3] & (1 << (b & 7)))


def _mark(bits: bytearray, key: bytes) -> None:
    """Set `key`'s two bits: `_seen` answers True for it from now on."""
    a, b = _bits(key)
    bits[a >> 3] |= 1 << (a & 7)
    bits[b >> 3] |= 1 << (b & 7)


class ScoreCache:
    """Score lookups by key; `path=None` keeps the run-local store in a temporary file, which gets
    only what memory lets go (nothing has to survive the run: no journal, no per-batch commit).

    In memory: at most `lru_size` recent scores in two generations, plain dicts. New and looked-up
    scores go to the young one; when it holds half of `lru_size`, the old one is let go (run-local: to
    the file, in one sorted batch) and the young one becomes old. Memory is the same after a million
    lines as after a hundred thousand (an OrderedDict evicting a key per insert kept growing the process's
    memory with the keys it had seen; a plain dict that only fills, then is dropped whole, does not).
    Run-local, a filter of the keys in the file (two bits each, FILTER_BITS in all) answers most
    lookups of a key never seen without reading the file: a run of distinct lines never reads it."""

    def __init__(self, path: str | os.PathLike | None, namespace: str, lru_size: int = 100_000) -> None:
        self._namespace = namespace.encode("utf-8") + b"\x00"
        self._young: dict[bytes, float] = {}
        self._old: dict[bytes, float] = {}
        self._generation = max(1, lru_size // 2)
        self._temp: str | None = None
        self._filter: bytearray | None = None  # run-local, once anything is in the file: its keys' bits
        made: list[Path] = []  # folders this opening creates, deepest first
        if path is None:
            fd, self._temp = tempfile.mkstemp(prefix="scoring-run-", suffix=".sqlite")
            os.close(fd)
            path = self._temp
        else:
            made = [d for d in (Path(path).parent, *Path(path).parent.parents) if not d.exists()]
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create score cache {path}: {exc.strerror or exc}") from None
        # What this opening creates (the db, its -wal and -shm, folders) is removed again if the opening fails.
        fresh = [p for p in (Path(f"{path}{s}") for s in ("", "-wal", "-shm", "-journal")) if not p.exists()] + made
        self._db = None
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            if self._temp is not None:  # run-local: nothing to survive a crash, nothing to journal or sync
                self._db.execute("PRAGMA journal_mode=OFF")
                self._db.execute("PRAGMA synchronous=OFF")
            else:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, score REAL NOT NULL)"
                             " WITHOUT ROWID")
        except sqlite3.Error as exc:
            self._remove_created(fresh)
            if isinstance(error := write_error("score cache", path, exc), DiskFullError):
                raise error from None
            raise OutputError(f"cannot open score cache {path}: {exc}") from None
        self.path = Path(path)

    def _remove_created(self, created: list[Path]) -> None:
        """Close the connection and delete the files it created: a failed opening leaves nothing behind."""
        if self._db is not None:
            self._db.close()
        for p in created + ([Path(self._temp)] if self._temp else []):
            try:
                p.rmdir() if p.is_dir() else p.unlink()
            except OSError:
                pass

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self._namespace + text.encode("utf-8")).digest()

    def get(self, key: bytes) -> float | None:
        score = self._young.get(key)
        if score is not None:
            return score
        if (score := self._old.pop(key, None)) is not None:
            self._remember(key, score)
            return score
        if self._temp is not None and (self._filter is None or not _seen(self._filter, key)):
            return None  # run-local: never let go to the file
        try:
            row = self._db.execute("SELECT score FROM scores WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:  # a file damaged mid-way reads well until a lookup reaches the damage
            raise OutputError(f"score cache {self.path} is damaged ({exc}): move it aside, or run with "
                              "--no-cache; nothing written") from None
        if row is None or not math.isfinite(row[0]):  # older versions stored Infinity: not a score
            return None
        self._remember(key, row[0])
        return row[0]

    def put_many(self, items: Iterable[tuple[bytes, float]]) -> None:
        """Store and commit at once: what is here survives a kill of the process."""
        items = list(items)
        if not items:
            return
        if self._temp is not None:  # run-local: nothing to survive, so SQLite only takes what memory lets go
            for key, score in items:
                self._remember(key, score)
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO scores (key, score) VALUES (?, ?)", items)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise write_error("score cache", self.path, exc) from None
        for key, score in items:
            self._remember(key, score)

    def _remember(self, key: bytes, score: float) -> None:
        young = self._young
        young[key] = score
        if len(young) >= self._generation:
            if self._temp is not None:
                self._spill(self._old)
            self._old, self._young = young, {}

    def _spill(self, scores: dict[bytes, float]) -> None:
        """Run-local: write `scores` to the file in key order (each page of its index touched once), and
        set their bits in the filter."""
        if not scores:
            return
        items = sorted(scores.items())
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO scores (key, score) VALUES (?, ?)", items)
        self._db.execute("COMMIT")
        if self._filter is None:
            self._filter = bytearray(FILTER_BITS // 8)
        for key, _ in items:
            _mark(self._filter, key)

    @property
    def in_memory(self) -> int:
        """Scores held in memory now (at most `lru_size`)."""
        return len(self._young) + len(self._old)

    def __len__(self) -> int:
        if self._temp is not None:  # everything to the file first (INSERT OR REPLACE: no double count)
            self._spill(self._old | self._young)
        return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        if self._temp is not None:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(self._temp + suffix)
                except FileNotFoundError:
                    pass
