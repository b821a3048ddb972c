"""The engine seam: engines are found by name in a registry, or handed to score_file directly."""

from __future__ import annotations

import time

import pytest

from scoring_lib import engines, score_file
from scoring_lib.bench import InstantEngine
from scoring_lib.client import Outcome
from scoring_lib.engines.asyncio_engine import AsyncioEngine
from scoring_lib.errors import ConfigError

from conftest import read_rows, run_config


class FakeEngine(InstantEngine):
    """Scores every text by its length, at once, with no service: what a test or bench hands the pipeline."""

    opened: list[int] = []

    def __init__(self, config) -> None:
        super().__init__(config, room=8)
        self.config = config

    def __enter__(self) -> "FakeEngine":
        FakeEngine.opened.append(self.config.concurrency_ceiling)
        return self

    def submit(self, items: list) -> None:
        now = time.time()
        self._done += [(key, Outcome(len(text) / 100, None, 1, now, now, 0.0, now)) for key, text in items]


def test_built_in_engines_are_registered_by_name():
    assert engines.get_engine("asyncio") is AsyncioEngine
    assert {"asyncio", "ray"} <= set(engines.registry.names())


def test_an_unknown_engine_name_is_a_config_error():
    with pytest.raises(ConfigError, match="no engine named 'nope'"):
        engines.get_engine("nope")


@pytest.mark.parametrize("how", ["factory", "name"])
def test_score_file_runs_the_engine_it_is_handed(make_input, tmp_path, how):
    path = make_input(["a", "bb", "a", "cccc"])
    # The URL points nowhere: only the handed engine can score these lines.
    config = run_config(path, "http://127.0.0.1:9/", tmp_path, records_dir=None)
    FakeEngine.opened.clear()
    if how == "name":
        engines.register("fake-for-test", FakeEngine)
    result = score_file(config, engine=FakeEngine if how == "factory" else "fake-for-test")
    assert [r["score"] for r in read_rows(result.output)] == [0.01, 0.02, 0.01, 0.04]
    assert FakeEngine.opened == [4]  # the run's config, its concurrency clipped to the 4 lines


class GatedFakeEngine(FakeEngine):
    gates_opened: list[bool] = []

    def open_gate(self) -> None:
        GatedFakeEngine.gates_opened.append(True)


@pytest.mark.parametrize("kind, opened", [("embedded", [True]), ("external", [])])
def test_the_first_contact_gate_opens_at_once_only_for_the_embedded_simulator(make_input, tmp_path, kind, opened):
    path = make_input(["a", "b"])
    GatedFakeEngine.gates_opened.clear()
    score_file(run_config(path, "http://127.0.0.1:9/", tmp_path, records_dir=None),
               server_info={"kind": kind, "url": "http://127.0.0.1:9/"}, engine=GatedFakeEngine)
    assert GatedFakeEngine.gates_opened == opened


def test_the_asyncio_engine_can_open_its_gate(make_input, tmp_path):
    with AsyncioEngine(run_config(make_input(["a"]), "http://127.0.0.1:9/", tmp_path, threads=1)) as engine:
        engine.open_gate()
        assert engine.pool.limiter.failfast.opened
