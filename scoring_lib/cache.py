"""Persistent score cache (SQLite, WAL) behind a bounded in-memory LRU.

Scores are committed as they arrive, so a killed run, started again, requests only what is missing.
Keys are a sha256 of namespace (url and field names) and text: the cache never holds the texts.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from .errors import OutputError, write_error


def cache_namespace(url: str, request_field: str, score_field: str) -> str:
    return f"{url}\x00{request_field}\x00{score_field}"


class ScoreCache:
    """Score lookups by key; `path=None` keeps the run-local store in a temporary file, which gets
    only what the LRU lets go (nothing has to survive the run, so no per-batch SQLite commit)."""

    def __init__(self, path: str | os.PathLike | None, namespace: str, lru_size: int = 100_000) -> None:
        self._namespace = namespace.encode("utf-8") + b"\x00"
        self._lru: OrderedDict[bytes, float] = OrderedDict()
        self._lru_size = lru_size
        self._temp: str | None = None
        self._spill: dict[bytes, float] = {}  # run-local store: evicted from the LRU, not yet in SQLite
        self._spilled = False
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
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, score REAL NOT NULL)"
                             " WITHOUT ROWID")
        except sqlite3.Error as exc:
            self._remove_created(fresh)
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == 13:  # SQLITE_FULL
                raise write_error("score cache", path, exc) from None
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
        score = self._lru.get(key)
        if score is not None:
            self._lru.move_to_end(key)
            return score
        if self._temp is not None:  # run-local: SQLite holds only what the LRU let go
            if (score := self._spill.get(key)) is not None or not self._spilled:
                return score
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
        if self._temp is not None:  # run-local: nothing to survive, so SQLite only takes the LRU's overflow
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
        self._lru[key] = score
        self._lru.move_to_end(key)
        if len(self._lru) > self._lru_size:
            old_key, old_score = self._lru.popitem(last=False)
            if self._temp is not None:
                self._spill[old_key] = old_score
                if len(self._spill) >= 1000:
                    self._flush_spill()

    def _flush_spill(self) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO scores (key, score) VALUES (?, ?)", self._spill.items())
        self._db.execute("COMMIT")
        self._spill.clear()
        self._spilled = True

    def __len__(self) -> int:
        if self._temp is not None:  # everything to SQLite first (INSERT OR REPLACE: no double count)
            self._spill.update(self._lru)
            self._flush_spill()
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
