"""Streaming reader of the input file, applying the contract's rules for each line."""

from __future__ import annotations

import enum
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import InputFileError

_BLOCK = 1 << 20
STDIN = "-"  # the input path that means standard input (Unix convention: `score -`)


class LineProblem(enum.Enum):
    """Why a line was not sent; the value is the cause the summary and the record count."""

    TOO_LONG = "line too long"
    NOT_UTF8 = "line not UTF-8"


@dataclass(slots=True)
class InputLine:
    """One line of the input: a text to send, or a row that is settled without a request."""

    number: int  # 1-based
    text: str | None  # None when the line is not sent
    status: str | None = None  # "empty" or "error" when not sent
    error: str | None = None
    problem: LineProblem | None = None  # set on "error" lines


def is_stdin(path: str | os.PathLike | None) -> bool:
    """True when `path` is `-`: the input is read from standard input."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path) == STDIN


def open_input(path: str | os.PathLike) -> BinaryIO:
    """Open the input for reading, or raise InputFileError with a message a user can act on.

    The input is opened once per run: a pipe, FIFO or process substitution (`<(...)`) can only be
    read once, so the same handle serves the line count (regular files only) and the reader.
    `-` is standard input: a duplicate of its descriptor, so closing it leaves sys.stdin open, and
    nothing read before it (Python reads nothing from stdin at start-up) is lost."""
    if is_stdin(path):
        return _open_stdin()
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"input file not found: {p}")
    if p.is_dir():
        raise InputFileError(f"input is a directory, not a file: {p}")
    try:
        return open(p, "rb")
    except OSError as exc:
        raise InputFileError(f"cannot read input file {p}: {exc.strerror or exc}") from None


def _open_stdin() -> BinaryIO:
    # A process started with its stdin closed has sys.stdin None: descriptor 0 may then be any file
    # opened since, never to be read as the input.
    if sys.stdin is None:
        raise InputFileError("input is - but standard input is closed")
    try:
        fd = os.dup(sys.stdin.fileno())
    except (OSError, ValueError) as exc:
        raise InputFileError(f"input is - but standard input cannot be read: {getattr(exc, 'strerror', None) or exc}"
                             ) from None
    return os.fdopen(fd, "rb")


def is_regular(f: BinaryIO) -> bool:
    """True for a regular file (it can be read twice); False for a pipe, FIFO, socket or terminal."""
    return stat.S_ISREG(os.fstat(f.fileno()).st_mode)


def count_lines(source: str | os.PathLike | BinaryIO) -> int | None:
    """Lines the reader will yield, counted fast in binary, so progress can show an ETA.

    Given an open file, it counts from where the file stands (the start, unless it is standard input
    redirected from a file some of which was already read) and goes back there; a stream (pipe, FIFO)
    cannot be rewound, so its count is None (unknown) and nothing is consumed."""
    if isinstance(source, (str, os.PathLike)):
        with open_input(source) as f:
            return count_lines(f)
    if not is_regular(source):
        return None
    count = 0
    last = b"\n"
    start = source.tell()
    while block := source.read(_BLOCK):
        count += block.count(b"\n")
        last = block[-1:]
    source.seek(start)
    return count + (last != b"\n")


def _skip_rest_of_line(f: BinaryIO) -> None:
    while chunk := f.readline(_BLOCK):
        if chunk.endswith(b"\n"):
            return


_BOM = b"\xef\xbb\xbf"


def read_lines(source: str | os.PathLike | BinaryIO, max_line_bytes: int) -> Iterator[InputLine]:
    """Yield every line in order, in constant memory, never holding more than one capped line.

    `source` is a path (opened and closed here) or a file already opened with open_input (read
    from where it stands, closed by its owner)."""
    if isinstance(source, (str, os.PathLike)):
        with open_input(source) as f:
            yield from read_lines(f, max_line_bytes)
        return
    f = source
    number = 0
    # +2 leaves room for "\r\n" so a line of exactly max_line_bytes is accepted; the first line also has
    # room for a UTF-8 byte-order mark, which is not part of its text.
    limit = max_line_bytes + 2
    while raw := f.readline(limit + (len(_BOM) if number == 0 else 0)):
        number += 1
        if not raw.endswith(b"\n") and len(raw) >= limit + (len(_BOM) if number == 1 else 0):
            _skip_rest_of_line(f)
            yield InputLine(number, None, "error", f"line is longer than {max_line_bytes} bytes",
                            LineProblem.TOO_LONG)
            continue
        if raw.endswith(b"\n"):
            raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        if len(raw) > max_line_bytes:
            yield InputLine(number, None, "error", f"line is longer than {max_line_bytes} bytes",
                            LineProblem.TOO_LONG)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield InputLine(number, None, "error",
                            f"line is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                            LineProblem.NOT_UTF8)
            continue
        if not text.strip():
            yield InputLine(number, None, "empty")
            continue
        yield InputLine(number, text)
