"""The simulated scoring service: slow, deterministic, capacity-limited, optionally faulty.

It stands in for the real service in tests, notebooks, benchmarks and the CLI's embedded default,
so that every measurement has a known physical limit: ceil(N / min(pool, C, capacity)) * latency.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass

from aiohttp import web

from .config import ServerConfig

BATCH_KEYS = ("data", "items", "lines")
MAX_REQUEST_BYTES = 8 << 20
IDLE_TIMEOUT = 60.0  # seconds an idle (or never used) connection is kept before the service closes it
SLOW_BODY_BYTES = 64  # a slow body: this many bytes, one a second


def deterministic_score(text: str) -> float:
    """A stable score in [0, 1) from the text alone (sha256, never Python's salted hash)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return round(int.from_bytes(digest[:8], "big") / 2**64, 9)


@dataclass
class ServiceStats:
    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    serving: int = 0
    peak_serving: int = 0
    ok: int = 0
    rate_limited: int = 0
    injected_errors: int = 0
    resets: int = 0
    slow_bodies: int = 0
    rejected: int = 0
    shed: int = 0


class _TokenBucket:
    """Requests per simulated second; a refused request learns how long to wait."""

    def __init__(self, rate: float, time_scale: float) -> None:
        self.rate = rate / time_scale  # tokens per real second
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else real seconds until one is due."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class ScoringService:
    """The aiohttp application and its counters; one instance per running service."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServiceStats()
        self._rng = random.Random(config.seed)
        self._capacity: asyncio.Semaphore | None = None
        self._bucket = _TokenBucket(config.rate_limit, config.time_scale) if config.rate_limit > 0 else None

    def reset_stats(self) -> None:
        in_flight, serving = self.stats.in_flight, self.stats.serving
        self.stats = ServiceStats(in_flight=in_flight, peak_in_flight=in_flight, serving=serving, peak_serving=serving)

    def sample_latency(self) -> float:
        """Real seconds one request takes to serve (mean = latency * time_scale)."""
        mean = self.config.latency * self.config.time_scale
        if mean <= 0:
            return 0.0
        dist = self.config.latency_dist
        if dist == "exp":
            return self._rng.expovariate(1 / mean)
        if dist == "lognormal":
            sigma = 0.5
            return self._rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)
        return mean

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/score", self.handle_score)
        app.router.add_post("/", self.handle_score)
        app.router.add_get("/stats", self.handle_stats)
        app.router.add_post("/stats/reset", self.handle_reset)
        app.on_startup.append(self._on_startup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        if self.config.capacity > 0:
            self._capacity = asyncio.Semaphore(self.config.capacity)

    async def handle_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))

    async def handle_reset(self, _request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(asdict(self.stats))

    def _reject(self, status: int, message: str, headers: dict | None = None) -> web.Response:
        self.stats.rejected += status not in (429, 503)
        return web.json_response({"error": message}, status=status, headers=headers)

    async def handle_score(self, request: web.Request) -> web.Response:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            return await self._score(request)
        finally:
            stats.in_flight -= 1

    async def _score(self, request: web.Request) -> web.Response:
        cfg = self.config
        if cfg.require_api_key is not None:
            if request.headers.get("Authorization") != f"Bearer {cfg.require_api_key}":
                return self._reject(401, "missing or wrong API key")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return self._reject(400, "body is not JSON")
        except RecursionError:
            return self._reject(400, "body is nested too deeply")
        if not isinstance(body, dict):
            return self._reject(400, "body must be a JSON object")
        if any(isinstance(body.get(k), list) for k in BATCH_KEYS):
            return self._reject(422, "batch requests are not supported: send one line per request")
        text = body.get(cfg.request_field)
        if not isinstance(text, str):
            return self._reject(400, f"field {cfg.request_field!r} must be a string")
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait > 0:
                self.stats.rate_limited += 1
                return self._reject(429, "rate limit exceeded", {"Retry-After": f"{wait:.3f}"})
        if cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
            self.stats.injected_errors += 1
            return self._reject(503, "transient failure (simulated)")
        if cfg.reset_rate > 0 and self._rng.random() < cfg.reset_rate:
            self.stats.resets += 1
            return _reset(request)
        if cfg.slow_body_rate > 0 and self._rng.random() < cfg.slow_body_rate:
            self.stats.slow_bodies += 1
            return await self._slow_body(request, text)
        if self._capacity is None:
            return await self._serve(text)
        if cfg.shed and self._capacity.locked():
            self.stats.shed += 1
            return self._reject(503, "over capacity (load shed)")
        async with self._capacity:
            return await self._serve(text)

    async def _serve(self, text: str) -> web.Response:
        stats = self.stats
        stats.serving += 1
        stats.peak_serving = max(stats.peak_serving, stats.serving)
        try:
            delay = self.sample_latency()
            if delay > 0:
                await asyncio.sleep(delay)
            stats.ok += 1
            return web.json_response({self.config.score_field: deterministic_score(text)})
        finally:
            stats.serving -= 1

    async def _slow_body(self, request: web.Request, text: str) -> web.StreamResponse:
        """Headers at once, then the (correct) body one byte a second, padded to SLOW_BODY_BYTES."""
        body = json.dumps({self.config.score_field: deterministic_score(text)}).encode().ljust(SLOW_BODY_BYTES)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        try:
            for i in range(len(body)):
                await resp.write(body[i:i + 1])
                await asyncio.sleep(1.0)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):  # the client gave up: what a slow body is for
            pass
        return resp


def _reset(request: web.Request) -> web.Response:
    """Abort the connection with a TCP RST (SO_LINGER 0) instead of answering."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=503)  # never sent: the connection is gone


class SimulatedService:
    """The service running in a background thread of this process, on a loopback port.

    Used as a context manager by tests, notebooks and the CLI's embedded default:
    `with SimulatedService(ServerConfig(time_scale=0.01)) as svc: svc.url`.
    """

    def __init__(self, config: ServerConfig | None = None, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.config = config or ServerConfig()
        self.service = ScoringService(self.config)
        self.idle_timeout = idle_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/score"

    def stats(self) -> ServiceStats:
        return ServiceStats(**asdict(self.service.stats))

    def reset_stats(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.service.reset_stats)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(5)

    def start(self) -> "SimulatedService":
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._runner, self.port = loop.run_until_complete(
                    start_site(self.service, self.config, self.idle_timeout))
            except BaseException as exc:  # surfaced to the caller of start()
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="simulated-service", daemon=True)
        self._thread.start()
        started.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> "SimulatedService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def start_site(service: ScoringService, config: ServerConfig,
                     idle_timeout: float = IDLE_TIMEOUT) -> tuple[web.AppRunner, int]:
    """Start the app on config.host:config.port (0 = a free port) and return the bound port.
    Connections idle for `idle_timeout` seconds (even ones that never sent a request) are closed."""
    runner = web.AppRunner(service.app(), access_log=None, handle_signals=False, keepalive_timeout=idle_timeout)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


def serve_forever(config: ServerConfig, announce=print, exit_with_stdin: bool = False) -> None:
    """Run the service in the foreground until Ctrl-C (the `serve` command).

    With `exit_with_stdin`, it also stops when its standard input reaches end of file: a parent that
    holds the other end of a pipe takes the service with it when it dies, even by SIGKILL."""
    import logging
    import os
    import sys

    # A client speaking something else than HTTP is refused; it is not worth a traceback per request.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    logging.getLogger("aiohttp.access").setLevel(logging.CRITICAL)

    async def main() -> None:
        service = ScoringService(config)
        runner, port = await start_site(service, config)
        stop = asyncio.Event()
        if exit_with_stdin:
            loop = asyncio.get_running_loop()

            def watch() -> None:
                # os.read on the descriptor, not sys.stdin: a daemon thread blocked inside the buffered
                # reader would abort the interpreter at shutdown.
                fd = sys.stdin.fileno()
                while os.read(fd, 65536):
                    pass
                loop.call_soon_threadsafe(stop.set)
            threading.Thread(target=watch, name="parent-watch", daemon=True).start()
        announce(f"http://{config.host}:{port}/score")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def service_info(url: str, kind: str, config: ServerConfig | None = None, profile=None) -> dict:
    """How a run record describes its service: the url, the kind (embedded, simulated, external) and,
    for the simulated service, its settings (never its key, host or port); and under `profile` what
    is known of it with sources (the given ServiceProfile, or the simulator's configured figures)."""
    from .service import ServiceProfile

    info = {"kind": kind, "url": url}
    if config is not None:
        info |= {k: v for k, v in asdict(config).items() if k not in ("require_api_key", "host", "port")}
        profile = profile or ServiceProfile.from_server_config(config)
    if profile is not None:
        info["profile"] = profile.with_url(url).to_dict()
    return info


class ServiceProcess:
    """The service in a child process (`serve --port 0`), so that measuring the client is not
    distorted by the service sharing its interpreter. A context manager, like SimulatedService."""

    def __init__(self, config: ServerConfig | None = None, env: dict | None = None) -> None:
        self.config = config or ServerConfig()
        self.env = env
        self.proc = None
        self.url = ""

    def start(self) -> "ServiceProcess":
        import os
        import subprocess
        import sys

        c = self.config
        args = [sys.executable, "-m", "scoring_lib", "serve", "--host", c.host, "--port", str(c.port),
                "--latency", repr(c.latency), "--latency-dist", c.latency_dist, "--capacity", str(c.capacity),
                "--rate-limit", repr(c.rate_limit), *(["--shed"] if c.shed else []), "--error-rate", repr(c.error_rate),
                "--reset-rate", repr(c.reset_rate), "--slow-body-rate", repr(c.slow_body_rate),
                "--time-scale", repr(c.time_scale), "--seed", str(c.seed),
                "--request-field", c.request_field, "--score-field", c.score_field]
        if c.require_api_key is not None:
            args.append("--require-key")
        env = dict(os.environ) | (self.env or {})
        if c.require_api_key is not None:
            env["SCORING_API_KEY"] = c.require_api_key
        # The child watches the pipe on its stdin: when this process dies (even by SIGKILL) the pipe
        # closes and the service stops, instead of listening on as an orphan.
        args.append("--exit-with-stdin")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line.startswith("serving on "):
            self.stop()
            raise RuntimeError(f"the simulated service did not start: {line!r}")
        self.url = line.split()[-1]
        return self

    @property
    def base_url(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def stats(self) -> ServiceStats:
        import urllib.request

        with urllib.request.urlopen(f"{self.base_url}/stats", timeout=10) as resp:
            return ServiceStats(**json.loads(resp.read()))

    def reset_stats(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.base_url}/stats/reset", method="POST"),
                               timeout=10).close()

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
