"""The simulated service against hostile clients, its fault modes, and its life as a child process."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from scoring_lib import ServerConfig, SimulatedService
from scoring_lib.server import ServiceProcess

from conftest import REPO


async def test_deeply_nested_json_is_400_not_500(service):
    body = "[" * 100_000 + "]" * 100_000
    async with aiohttp.ClientSession() as s:
        async with s.post(service.url, data=body) as resp:
            assert resp.status == 400
            assert "nested" in (await resp.json())["error"]
        async with s.post(service.url, data='{"text": ' + "[" * 50_000 + "]" * 50_000 + "}") as resp:
            assert resp.status == 400


def test_idle_connections_are_closed():
    with SimulatedService(ServerConfig(time_scale=0.01), idle_timeout=0.5) as svc:
        sock = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        t0 = time.monotonic()
        assert sock.recv(1) == b"", "the service should close a connection that never sends a request"
        assert time.monotonic() - t0 < 5
        sock.close()


async def test_reset_and_slow_body_faults_happen_in_proportion():
    cfg = ServerConfig(latency=0, reset_rate=0.2, slow_body_rate=0.1, seed=3)
    with SimulatedService(cfg) as svc:
        # A slow body trickles at 1 byte/s for tens of seconds; 5 s tells it from a quick reply even on a
        # machine busy with another suite (0.5 s did not: quick replies timed out and counted as slow).
        timeout = aiohttp.ClientTimeout(total=5)
        results = {"ok": 0, "reset": 0, "slow": 0}
        async with aiohttp.ClientSession(timeout=timeout) as s:
            async def one(i):
                try:
                    async with s.post(svc.url, json={"text": str(i)}) as resp:
                        await resp.read()
                        results["ok"] += 1
                except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                    results["reset"] += 1
                except asyncio.TimeoutError:
                    results["slow"] += 1
            await asyncio.gather(*(one(i) for i in range(300)))
        stats = svc.stats()
    assert stats.resets == results["reset"] and 30 <= stats.resets <= 90
    assert stats.slow_bodies == results["slow"] and 10 <= stats.slow_bodies <= 50


def test_the_service_child_dies_with_its_parent_even_on_sigkill(tmp_path):
    script = ("import sys, time\n"
              "from scoring_lib.server import ServiceProcess\n"
              "svc = ServiceProcess().start()\n"
              "print(svc.proc.pid, flush=True)\n"
              "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # reap it if it became ours (it is not: it is re-parented), else wait
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the service child outlived its SIGKILLed parent")
