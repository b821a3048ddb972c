"""What a reply says, read with bounds: the body decoded and capped while it is read, the score at its
path, Retry-After. Every way a reply can be wrong ends as a typed failure (failures.py).

The body is decoded here, not by aiohttp (the session has auto_decompress off): the cap counts bytes
after decoding, so a small compressed body that inflates to gigabytes (a gzip bomb) is cut at the cap,
and never more than the cap is held. Content-Length of a compressed body says nothing of its size.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from email.utils import parsedate_to_datetime

import aiohttp

from .failures import FailedAttempt, Failure, FailureKind
from .redact import redact

ACCEPT_ENCODING = "gzip, deflate"  # what read_body decodes; asked for explicitly so nothing else comes
READ_CHUNK = 65536


def _malformed(message: str) -> FailedAttempt:
    return FailedAttempt(Failure(FailureKind.UNPARSEABLE, message=f"malformed response: {message}"))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header in either form (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


WRONG_SHAPE = "wrong shape"  # error prefix of a 200 whose body has no number at the score path (fail-fast kind)
_NO_VALUE = object()


def extract_score(data: object, path: str) -> object:
    """The value at `path` in a decoded reply: `score`, `result.score`, `0.score` (a list reply).

    A key that contains dots is found as it is first; otherwise each dot-separated part is a key of
    an object or an index of a list. Raises KeyError naming the first part not found."""
    if isinstance(data, dict) and path in data:
        return data[path]
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(part)
    return node


def body_sample(body: bytes, secrets: tuple[str, ...] = (), limit: int = 80) -> str:
    """A short, one-line sample of a reply body for an error message, masked before it is cut."""
    text = " ".join((redact(body[: limit * 4].decode("utf-8", "replace"), secrets) or "").split())
    return text[:limit] + ("..." if len(text) > limit else "")


def parse_score(body: bytes, score_field: str, secrets: tuple[str, ...] = ()) -> float:
    """The finite numeric score at `score_field` (a path, see extract_score) of a 200 body, or
    FailedAttempt (UNPARSEABLE or WRONG_SHAPE) when the body is not what the contract says; a wrong shape names the path and shows a
    sample. NaN, Infinity and numbers beyond a float (1e400) are malformed: a score is always finite."""
    try:
        data = json.loads(body)  # NaN/Infinity parse, then fail the finiteness check
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _malformed("body is not JSON") from None
    try:
        score = extract_score(data, score_field)
    except KeyError:
        score = _NO_VALUE
    if score is _NO_VALUE or isinstance(score, bool) or not isinstance(score, (int, float)):
        raise FailedAttempt(Failure(FailureKind.WRONG_SHAPE, message=f"{WRONG_SHAPE}: no number at score path "
                                    f"{score_field!r} in reply {body_sample(body, secrets)!r}"))
    try:
        value = float(score)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise _malformed(f"{score_field!r} is not a finite number")
    return value


class _Decoder:
    """Undo one Content-Encoding (identity, gzip, deflate), never producing more than asked per call."""

    def __init__(self, encoding: str | None) -> None:
        enc = (encoding or "identity").strip().lower()
        if enc not in ("identity", "gzip", "x-gzip", "deflate"):
            raise _malformed(f"Content-Encoding {enc[:40]!r} is not supported")
        self.encoding = enc
        # gzip now; deflate once its first byte says whether it is zlib-wrapped; identity never
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS) if enc in ("gzip", "x-gzip") else None

    def feed(self, data: bytes, room: int) -> bytes:
        """Up to `room` + 1 decoded bytes of `data` (one more than room: the caller knows it is over)."""
        if self.encoding == "identity":
            return data[: room + 1]
        if self._z is None:  # deflate: zlib-wrapped as RFC 9110 says, or raw as some servers send it
            self._z = zlib.decompressobj(zlib.MAX_WBITS if data[:1] and data[0] & 0x0F == 8 else -zlib.MAX_WBITS)
        out = b""
        try:
            while len(out) <= room:
                if self._z.eof and self.encoding != "deflate":  # concatenated gzip members are one body
                    data = self._z.unused_data + data
                    if not data.strip(b"\0"):
                        break
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                if not data or self._z.eof:
                    break
                out += self._z.decompress(data, room + 1 - len(out))
                data = self._z.unconsumed_tail
        except zlib.error:
            raise _malformed(f"body is not valid {self.encoding}") from None
        return out

    def finish(self) -> None:
        if self._z is not None and not self._z.eof and self.encoding != "deflate":
            raise _malformed(f"{self.encoding} body is cut short")


def readable_whole(resp: aiohttp.ClientResponse, cap: int) -> bool:
    """True when the body may be read whole (`resp.read()`): not encoded, and framed by a Content-Length
    within `cap`, so its size is known and bounded. A Content-Length over the cap is an UNPARSEABLE
    failure; False: read_body decodes and caps it as it reads. (A plain function, so the usual reply
    is read without a coroutine more per request.)"""
    encoding = resp.headers.get("Content-Encoding")
    if encoding and encoding.strip().lower() != "identity":
        return False
    length = resp.content_length
    if length is None:
        return False
    if length > cap:
        raise _malformed(f"body of {length} bytes exceeds {cap}")
    return True


async def read_body(resp: aiohttp.ClientResponse, cap: int, cut: bool = False) -> bytes:
    """The decoded body, read chunk by chunk and never more than `cap` bytes of it held. Over the cap it is
    an UNPARSEABLE failure, or (`cut`) the first `cap` bytes (an error body's start). Never reads the
    whole body first: a body that inflates beyond the cap costs the cap, not its inflated size."""
    if not cut and readable_whole(resp, cap):
        return await resp.read()
    decoder = _Decoder(resp.headers.get("Content-Encoding"))
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(READ_CHUNK):
        out = decoder.feed(chunk, cap - size)
        size += len(out)
        if size > cap:
            if cut:
                chunks.append(out)
                return b"".join(chunks)[:cap]
            raise _malformed(f"body exceeds {cap} bytes (after decoding)")
        chunks.append(out)
    if not cut:
        decoder.finish()
    return b"".join(chunks)
