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
