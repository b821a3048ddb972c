"""Raw asyncio HTTP/1.1 servers that misbehave on purpose, for any test that needs one.

No aiohttp on the server side: every byte on the wire is chosen here, so a test can send what a
broken or hostile service sends (a body that never ends, NaN scores, resets, echoed secrets).

    with HostileServer(lambda req: slow_body(interval=1.0)) as srv:
        ... srv.url ...

`behave(request)` returns an Action (an async callable writing to the connection); it runs in the
server's own thread and event loop, so the server serves blocking code, CLI subprocesses and async
tests alike. It listens on 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Action = Callable[["Conn"], Awaitable[None]]
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           408: "Request Timeout", 413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass
class Request:
    index: int  # 0-based arrival order over the server's life
    method: str
    path: str
    headers: dict  # lower-case names
    body: bytes
    json: object = None

    @property
    def text(self) -> str | None:
        """The line sent, when the body is the contract's {"text": ...}."""
        return self.json.get("text") if isinstance(self.json, dict) else None


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    request: Request
    keep_open: bool = True

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


def head(status: int, headers: dict | None = None, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    hdrs = {"Content-Type": "application/json"} | (headers or {})
    if chunked:
        hdrs["Transfer-Encoding"] = "chunked"
    elif length is not None:
        hdrs["Content-Length"] = str(length)
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# ----------------------------------------------------------------------------------------- actions
def reply(status: int = 200, body: bytes | str | dict = b'{"score": 0.5}', headers: dict | None = None) -> Action:
    """A complete, well-framed answer; `body` is sent as given (a str may hold NaN, Infinity, ...)."""
    if isinstance(body, dict):
        body = json.dumps(body)
    raw = body.encode("utf-8") if isinstance(body, str) else body

    async def act(c: Conn) -> None:
        await c.send(head(status, headers, len(raw)) + raw)
    return act


def score(value: float | str = 0.5) -> Action:
    """200 with {"score": value}; a str value goes on the wire verbatim (e.g. "NaN", "1e400")."""
    return reply(200, f'{{"score": {value}}}')


def reset() -> Action:
    """Abort the connection with a TCP RST instead of answering."""
    async def act(c: Conn) -> None:
        sock = c.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.writer.transport.abort()
        c.keep_open = False
    return act


def close() -> Action:
    """Close the connection without a byte of answer."""
    async def act(c: Conn) -> None:
        c.writer.close()
        c.keep_open = False
    return act


def hang(seconds: float = 3600) -> Action:
    """Read the request, then say nothing."""
    async def act(c: Conn) -> None:
        await asyncio.sleep(seconds)
        c.keep_open = False
    return act


def slow_body(interval: float = 1.0, body: bytes = b'{"score": 0.5}' + b" " * 1000, status: int = 200) -> Action:
    """Headers at once (with a Content-Length), then the body one byte every `interval` seconds."""
    async def act(c: Conn) -> None:
        await c.send(head(status, None, len(body)))
        for i in range(len(body)):
            await asyncio.sleep(interval)
            await c.send(body[i:i + 1])
    return act


def slow_chunked(interval: float = 1.0, chunks: int = 1000) -> Action:
    """A chunked body whose chunks (one byte each) come every `interval` seconds and never finish soon."""
    async def act(c: Conn) -> None:
        await c.send(head(200, chunked=True) + b"1\r\n{\r\n")
        for _ in range(chunks):
            await asyncio.sleep(interval)
            await c.send(b"1\r\n \r\n")
        await c.send(b"0\r\n\r\n")
    return act


def slow_headers(interval: float = 1.0) -> Action:
    """The status line and headers one byte every `interval` seconds."""
    async def act(c: Conn) -> None:
        data = head(200, {"X-Padding": "p" * 500}, 14) + b'{"score": 0.5}'
        for i in range(len(data)):
            await c.send(data[i:i + 1])
            await asyncio.sleep(interval)
    return act


def echo(status: int = 401) -> Action:
    """Answer with the request's headers and body in the body, as a careless service does."""
    async def act(c: Conn) -> None:
        r = c.request
        text = "request was: " + json.dumps({"headers": r.headers, "body": r.body.decode("utf-8", "replace")})
        await reply(status, text, {"Content-Type": "text/plain"})(c)
    return act


def stable_choice(text: str | None, options: list):
    """The same option for the same text, whatever the arrival order (sha256, not hash())."""
    digest = hashlib.sha256((text or "").encode("utf-8")).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


# ----------------------------------------------------------------------------------------- server
@dataclass
class HostileServer:
    """A raw HTTP/1.1 server on 127.0.0.1:<free port>, in its own thread; keep-alive honoured."""

    behave: Callable[[Request], Action]
    host: str = "127.0.0.1"
    requests: list = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set = set()
        self._lock = threading.Lock()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/score"

    def texts(self) -> list:
        with self._lock:
            return [r.text for r in self.requests]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        self.connections += 1
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                first, *lines = raw.decode("latin-1").split("\r\n")
                method, path, _ = (first.split(" ", 2) + ["", ""])[:3]
                headers = {}
                for line in lines:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                with self._lock:
                    req = Request(len(self.requests), method, path, headers, body, parsed)
                    self.requests.append(req)
                conn = Conn(reader, writer, req)
                await self.behave(req)(conn)
                if not conn.keep_open or writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(asyncio.current_task())
            writer.transport.abort() if writer.is_closing() else writer.close()

    def start(self) -> "HostileServer":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0.05))
            loop.close()

        self._thread = threading.Thread(target=run, name="hostile-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "HostileServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def good(delay: float = 0.0) -> Action:
    """What a sound service answers: the deterministic score of the text, after `delay` seconds."""
    async def act(c: Conn) -> None:
        if delay:
            await asyncio.sleep(delay)
        text = c.request.text or ""
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        await reply(200, {"score": round(int.from_bytes(digest[:8], "big") / 2**64, 9)})(c)
    return act


class FlakyButAlive:
    """A service that is alive but flaky: the first `fail_first` attempts of every line fail, each with
    one of a mix of transient causes (503, 429, a reset, a 200 whose body is not JSON, 500; which one
    depends on the line and the attempt), then the line gets its good score. Use as `behave`."""

    CAUSES = ("503", "429", "reset", "not-json", "500")

    def __init__(self, fail_first: int = 4) -> None:
        self.fail_first = fail_first
        self.seen: dict = {}  # text -> attempts so far
        self.causes: list[str] = []  # every failure sent, in order
        self._lock = threading.Lock()

    def __call__(self, req: Request) -> Action:
        with self._lock:
            n = self.seen.get(req.text, 0)
            self.seen[req.text] = n + 1
            if n >= self.fail_first:
                return good()
            start = self.CAUSES.index(stable_choice(req.text, list(self.CAUSES)))
            cause = self.CAUSES[(start + n) % len(self.CAUSES)]
            self.causes.append(cause)
        return {"503": reply(503, "busy"), "429": reply(429, "slow down"), "reset": reset(),
                "not-json": reply(200, "<html>upstream hiccup</html>", {"Content-Type": "text/html"}),
                "500": reply(500, "oops")}[cause]
