"""The progress bar counts a line when its score arrives, not when the next one does."""

from __future__ import annotations

import re
import time

from scoring_lib import score_file
from scoring_lib.client import Outcome

from conftest import read_rows, run_config

LINES = 100


class _TwoWaves:
    """An engine whose replies come in two waves with a quiet moment between them, as a slow service's do:
    the first half of the lines at the first poll, nothing at the second, the rest at the third, which
    first notes what the bar has drawn so far (`seen`)."""

    def __init__(self, read_bar) -> None:
        self.read_bar = read_bar
        self.items: list = []
        self.polls = 0
        self.seen = ""

    def __enter__(self) -> "_TwoWaves":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def room(self) -> int:
        return 2 * LINES

    def submit(self, items) -> None:
        self.items += items

    def poll(self, timeout: float) -> list:
        self.polls += 1
        if self.polls == 1:
            wave = self.items[:LINES // 2]
        elif self.polls == 2:
            return []  # the quiet moment between two waves
        else:
            self.seen = self.read_bar()
            wave = self.items[LINES // 2:]
        now = time.time()
        return [(key, Outcome(score=0.5, error=None, attempts=1, started=now, finished=now, latency=0.0, sent=now))
                for key, _text in wave]

    def info(self) -> dict:
        return {}


def test_the_bar_shows_a_waves_lines_before_the_next_wave_arrives(make_input, tmp_path, capsys):
    """tqdm draws at most every 0.1 s on `update`: a wave's replies, all arriving at once, used to draw only
    up to the first of them until the next wave's first reply (on a 4 s service the bar sat at 0 or 1 for 8 s)."""
    engine = _TwoWaves(lambda: capsys.readouterr().err)
    config = run_config(make_input([f"line {i}" for i in range(LINES)], "in.txt"), "http://127.0.0.1:9/score",
                        tmp_path, progress=True, cache=None)
    score_file(config, engine=lambda _config: engine, write_record=False)
    drawn = [int(n) for n in re.findall(rf"(\d+)/{LINES}\b", engine.seen)]
    assert drawn and drawn[-1] == LINES // 2, engine.seen
    assert len(read_rows(tmp_path / "out.jsonl")) == LINES
