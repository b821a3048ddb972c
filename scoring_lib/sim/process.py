"""The simulated service running: in a thread of this process (SimulatedService), in a child process
(ServiceProcess), or in the foreground (`serve`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from dataclasses import asdict, fields

from aiohttp import web

from ..config import ServerConfig
from .app import ScoringService, ServiceStats

IDLE_TIMEOUT = 60.0  # seconds an idle (or never used) connection is kept before the service closes it
# Settings a `serve` child is not given as options: where it listens is its own, the key goes by environment.
_NOT_OPTIONS = ("host", "port", "require_api_key")


def serve_args(config: ServerConfig) -> list[str]:
    """The `serve` options that rebuild `config` (every setting that differs from its default; each
    option is named after its ServerConfig field)."""
    default = ServerConfig()
    args = ["--host", config.host, "--port", str(config.port)]
    for f in fields(ServerConfig):
        value = getattr(config, f.name)
        if f.name in _NOT_OPTIONS or value == getattr(default, f.name):
            continue
        option = "--" + f.name.replace("_", "-")
        args += [option] if value is True else [option, repr(value) if isinstance(value, float) else str(value)]
    return args


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
    from ..service import ServiceProfile

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
        c = self.config
        args = [sys.executable, "-m", "scoring_lib", "serve", *serve_args(c)]
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
        with urllib.request.urlopen(f"{self.base_url}/stats", timeout=10) as resp:
            return ServiceStats(**json.loads(resp.read()))

    def reset_stats(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.base_url}/stats/reset", method="POST"),
                               timeout=10).close()

    def stop(self) -> None:
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
