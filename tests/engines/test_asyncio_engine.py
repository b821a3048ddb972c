"""The asyncio engine's hand-over from loop threads to the reading thread."""

import threading

from scoring_lib.engines.asyncio_engine import Inbox


def test_the_inbox_loses_nothing_between_threads():
    inbox, n, writers = Inbox(), 20_000, 4
    got: list = []

    def write(w: int) -> None:
        for i in range(n):
            inbox.put((w, i))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    while len(got) < n * writers:
        got.extend(inbox.drain(timeout=1.0))
    for t in threads:
        t.join()
    assert sorted(got) == [(w, i) for w in range(writers) for i in range(n)]
    assert inbox.drain(timeout=0.01) == []  # nothing left, and an empty inbox waits no longer than asked


def test_the_event_loop_is_uvloop_unless_asked_for_asyncio(monkeypatch, make_input, tmp_path):
    import uvloop

    from scoring_lib import ServerConfig, SimulatedService, score_file
    from scoring_lib.engines.asyncio_engine import LoopPool
    from scoring_lib.loops import EVENT_LOOP_ENV, event_loop_name
    from scoring_lib.config import ClientConfig
    from conftest import run_config

    path = make_input(["a", "b", "c"])
    with SimulatedService(ServerConfig(latency=0.01, time_scale=1)) as svc:
        for wanted in ("uvloop", "asyncio"):
            if wanted == "asyncio":
                monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
            assert event_loop_name() == wanted
            result = score_file(run_config(path, svc.url, tmp_path, cache=None))
            assert result.exit_code == 0 and result.record["engine_info"]["event_loop"] == wanted
            pool = LoopPool(ClientConfig(url=svc.url), 2, 1)
            pool.start()
            try:
                assert isinstance(pool.threads[0].loop, uvloop.Loop) == (wanted == "uvloop")
            finally:
                pool.close()


def test_a_closed_standard_descriptor_falls_back_to_asyncio_loop(monkeypatch):
    # libuv aborts the whole process when it closes a socket that got fd 0, 1 or 2 (seen with `score - 0>&-`)
    import os

    from scoring_lib import loops

    real = os.fstat

    def fstat(fd):
        if fd == 0:
            raise OSError(9, "Bad file descriptor")
        return real(fd)

    assert loops.event_loop_name() == "uvloop"
    monkeypatch.setattr(loops.os, "fstat", fstat)
    assert loops.event_loop_name() == "asyncio"
