"""A limiter this project did not write: Debian's nginx (`limit_req`, `limit_conn`) in front of the
simulated service. nginx counts differently from our token bucket (a leaky bucket in milliseconds,
`burst` queued or passed at once with `nodelay`, 429 without Retry-After; `limit_conn` answers 503):
`auto` must still score every line without drawing a large share of refusals."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from scoring_lib import ServerConfig, SimulatedService, score_file

from conftest import read_rows, run_config

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs Debian's nginx-light)")

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
lock_file {tmp}/nginx.lock;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    limit_req_zone $binary_remote_addr zone=rate:1m rate={rate}r/s;
    limit_req_status 429;
    limit_conn_zone $binary_remote_addr zone=conn:1m;
    limit_conn_status 503;
    upstream scorer {{ server 127.0.0.1:{upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {limits}
            proxy_pass http://scorer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground, from its own config in `tmp` (pid, logs and temp files all there)."""

    def __init__(self, tmp: Path, upstream: int, limits: str, rate: int = 1) -> None:
        self.tmp, self.upstream, self.limits, self.rate = tmp, upstream, limits, rate
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "Nginx":
        for _ in range(3):  # a free port may be taken between looking and listening: try another
            self.port = _free_port()
            conf = self.tmp / "nginx.conf"
            conf.write_text(CONFIG.format(tmp=self.tmp, upstream=self.upstream, port=self.port,
                                          limits=self.limits, rate=self.rate))
            self.proc = subprocess.Popen([NGINX, "-p", str(self.tmp), "-c", str(conf), "-e", str(self.tmp / "error.log")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {(self.tmp / 'error.log').read_text()[-500:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _run_through(tmp_path, make_input, limits: str, rate: int, n: int, latency: float, **run):
    path = make_input([f"nginx line {i}" for i in range(n)])
    (tmp_path / "nginx").mkdir()
    with SimulatedService(ServerConfig(latency=latency, capacity=0)) as svc, \
            Nginx(tmp_path / "nginx", svc.port, limits, rate) as proxy:
        result = score_file(run_config(path, proxy.url, tmp_path, cache=None, max_retries=20, backoff_base=0.5,
                                       backoff_cap=20.0, **({"max_concurrent_tasks": "auto"} | run)))
        served = svc.stats().ok
    return result, read_rows(tmp_path / "out.jsonl"), served


def test_nginx_proxies_to_the_simulated_service(tmp_path, make_input):
    result, rows, served = _run_through(tmp_path, make_input, "", 1, 20, 0.0, max_concurrent_tasks=4)
    assert result.exit_code == 0 and [r["status"] for r in rows] == ["ok"] * 20 and served == 20


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["limit_req zone=rate burst=5 nodelay;", "limit_req zone=rate burst=5;",
                                   "limit_req zone=rate burst=40 nodelay;", "limit_req zone=rate;"],
                         ids=["burst5-nodelay", "burst5-delay", "burst40-nodelay", "no-burst"])
def test_auto_holds_on_nginx_limit_req(tmp_path, make_input, limit):
    n = 300
    result, rows, served = _run_through(tmp_path, make_input, limit, 50, n, 0.02)
    limits = result.record["limits"]
    assert result.exit_code == 0 and all(r["status"] == "ok" for r in rows) and served == n, limits
    # every line scored; refusals stay a minority (the bench prints the share: target 5%)
    assert limits["http_429"] <= 0.5 * limits["attempts"], limits
    print(f"{limit} wall {result.stats.scoring_seconds:.2f}s N/rate {n / 50:.1f}s 429 {limits['http_429']}/{limits['attempts']}")


@pytest.mark.slow
def test_auto_holds_on_nginx_limit_conn(tmp_path, make_input):
    n = 300
    result, rows, served = _run_through(tmp_path, make_input, "limit_conn conn 8;", 1, n, 0.05)
    limits = result.record["limits"]
    assert result.exit_code == 0 and all(r["status"] == "ok" for r in rows) and served == n, limits
    assert limits["http_503"] <= 0.5 * limits["attempts"], limits
    print(f"limit_conn 8 wall {result.stats.scoring_seconds:.2f}s bound {n / 8 * 0.05:.2f}s "
          f"503 {limits['http_503']}/{limits['attempts']}")

