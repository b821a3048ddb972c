"""A sweep measures its own harness (calibration.json), warns about its time scale, and interleaves repeats."""

import json
import math
from pathlib import Path

import pytest
import yaml

from scoring_lib import calibration
from scoring_lib.calibration import (CALIBRATION_FILE, Calibration, LoadSampler, calibrate_sweep, gap_explained,
                                     load_calibration, needed_time_scale, save_load)
from scoring_lib.errors import GridError
from scoring_lib.records import read_records
from scoring_lib.settings import ServerConfig
from scoring_lib.sweep import load_grid, run_sweep, schedule

from conftest import REPO

GRID = {"name": "cal", "input": str(REPO / "data/sample.txt"), "lines": 10, "repeats": 3, "calibration_lines": 50,
        "service": {"latency": 4.15, "capacity": 200, "time_scale": 0.002},
        "points": [{"engine": "asyncio", "threads": 1, "max_concurrent_tasks": [2, 4, 8]}]}


def grid_of(tmp_path, data=GRID):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_grid(path)


def cal(**kw) -> Calibration:
    base = dict(sweep="s", concurrency=100, lines=2000, cpu_seconds=0.4, wall_seconds=1.0, cpu_per_request=2e-4,
                wall_per_wave=0.05, cores=2, measured_at="2026-01-01T00:00:00+00:00", latency=4.15, time_scale=0.05)
    return Calibration(**(base | kw))


@pytest.fixture
def papermill_in_process(monkeypatch):
    """papermill's execute_notebook replaced by what run.ipynb does (run_point with its parameters), in
    this process: a sweep's scheduling tested without a kernel per run. Returns the parameters of each call."""
    import papermill

    from scoring_lib.sweep import run_point

    class Calls(list):
        interrupt_at = None  # the call that raises KeyboardInterrupt, as a killed sweep

    calls = Calls()

    def execute(_input, output, parameters, **_kw):
        calls.append(parameters)
        if len(calls) == calls.interrupt_at:
            raise KeyboardInterrupt
        run_point(**parameters)
        Path(output).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    return calls


def test_the_model_counts_the_clients_cpu_of_every_wave_against_the_gap():
    c = cal(cpu_per_request=1e-3)
    # 1000 lines at C=100 against a 0.2 s latency: 10 waves, bound 2 s; the client's 1 ms a request is 1 s.
    assert gap_explained(c, 100, 1000, 0.2, wall=4.0, bound=2.0) == pytest.approx(0.5)
    assert gap_explained(c, 100, 1000, 0.2, wall=2.5, bound=2.0) == 1.0  # more than the gap: all of it
    assert gap_explained(c, 100, 1000, 0.2, wall=4.0, bound=2.0, loops=2) == pytest.approx(0.25)
    assert gap_explained(c, 100, 1000, 0.2, wall=4.0, bound=2.0, loops=8) == pytest.approx(0.25)  # 2 cores
    assert math.isnan(gap_explained(c, 100, 1000, 0.2, wall=2.0, bound=2.0))  # no gap, nothing to explain


def test_the_reports_sentence_states_the_cost_the_share_of_the_latency_and_the_load():
    from scoring_lib.calibration import LoadSummary, calibration_note

    c = cal(cpu_per_request=2.5e-4, concurrency=400, time_scale_needed=1.3,
            load=LoadSummary(samples=9, load1_mean=8.46, load1_max=9.2, cpu_percent_mean=66.6, cpu_percent_max=100,
                             cores=2))
    assert calibration_note(c) == ("Client CPU per request on this machine: 250 us (100 ms per wave of 400, measured "
                                   "at zero latency), 48% of the latency at time scale 0.05 (2% needs time scale "
                                   "1.3); load average 8.5 (max 9.2) on 2 cores, CPU 67% during the sweep.")


def test_the_time_scale_needed_keeps_a_waves_cpu_under_two_per_cent_of_the_latency():
    # C=400 at 250 us a request: 0.1 s of CPU per wave; 2% of 4.15 s x scale >= 0.1 s from scale 1.2048.
    assert needed_time_scale(2.5e-4, 400, 4.15) == 1.3
    assert needed_time_scale(1e-5, 100, 4.15) == pytest.approx(0.013)
    assert 400 * 2.5e-4 <= 0.02 * 4.15 * needed_time_scale(2.5e-4, 400, 4.15)


def test_a_calibration_is_written_beside_the_records_loaded_back_and_not_a_run(tmp_path, capsys):
    server = ServerConfig(latency=4.15, time_scale=0.01)
    made = calibrate_sweep("tiny", 20, 100, server, {}, tmp_path)
    with LoadSampler(interval=0.05) as load:
        pass
    save_load(made, load, tmp_path)
    data = json.loads((tmp_path / "tiny" / CALIBRATION_FILE).read_text())
    assert data["calibration_schema"] == 1 and data["concurrency"] == 20 and data["lines"] == 100
    loaded = load_calibration(tmp_path, "tiny")
    assert loaded.cpu_per_request > 0 and loaded.wall_per_wave > 0 and loaded.load.samples >= 1
    assert loaded.latency == 4.15 and loaded.time_scale == 0.01
    capsys.readouterr()
    assert read_records(tmp_path) == []  # the report never counts it as a run
    assert capsys.readouterr().err == ""  # nor warns about it as a damaged record
    assert load_calibration(tmp_path, "other") is None


def test_a_grid_whose_time_scale_is_too_small_gets_one_warning_naming_the_scale_needed(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setattr(calibration, "measure_client", lambda concurrency, lines, fields: (1e-4, 0.01))
    grid = grid_of(tmp_path)
    server = ServerConfig(**grid.service)
    made = calibrate_sweep(grid.name, grid.largest_concurrency(), 50, server, {}, tmp_path)
    # C=8 at 100 us: 0.8 ms of CPU per wave, 2% of the latency from time scale 0.0096, above the grid's 0.002.
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: sweep cal:") and "time scale 0.0097 or more" in line
    assert "time scale 0.002" in line and "unchanged" in line
    assert made.time_scale_needed == 0.0097 and load_calibration(tmp_path, "cal").time_scale_needed == 0.0097
    monkeypatch.setattr(calibration, "measure_client", lambda concurrency, lines, fields: (1e-6, 0.01))
    assert calibrate_sweep(grid.name, 8, 50, server, {}, tmp_path).time_scale_needed is None
    assert capsys.readouterr().err == ""


def test_a_grid_that_states_the_share_it_accepts_is_warned_only_above_it(tmp_path, monkeypatch, capsys):
    """`make run` warned about its own grid's time scale, which quick.yaml chose knowingly for speed: a grid's
    client_share_max is the share of the latency the client's CPU per wave may take before `sweep` warns."""
    monkeypatch.setattr(calibration, "measure_client", lambda concurrency, lines, fields: (1e-4, 0.01))
    # C=8 at 100 us: 0.8 ms of CPU per wave, 10% of the 8.3 ms latency at time scale 0.002.
    accepting = grid_of(tmp_path, GRID | {"client_share_max": 0.2})
    server = ServerConfig(**accepting.service)
    made = calibrate_sweep("cal", 8, 50, server, {}, tmp_path, accepting.client_share_max)
    assert capsys.readouterr().err == ""
    assert made.accepted_share == 0.2 and load_calibration(tmp_path, "cal").accepted_share == 0.2
    assert made.time_scale_needed == 0.0097  # what 2% needs stays recorded, and the report says it
    assert "(2% needs time scale 0.0097; the grid accepts 20%)" in calibration.calibration_note(made)
    strict = grid_of(tmp_path, GRID | {"client_share_max": 0.05})
    calibrate_sweep("cal", 8, 50, server, {}, tmp_path, strict.client_share_max)
    [line] = capsys.readouterr().err.splitlines()
    assert "10% of the latency" in line and "time scale 0.0039 or more keeps it under 5%" in line
    assert "client_share_max" in line
    for wrong in (0, 1.5, "x"):
        with pytest.raises(GridError, match="client_share_max"):
            grid_of(tmp_path, GRID | {"client_share_max": wrong})


def test_the_quick_grid_states_the_share_it_accepts():
    assert load_grid(REPO / "notebooks/grids/quick.yaml").client_share_max == 0.3


def test_repeats_are_interleaved_repeat_0_of_every_point_first(tmp_path, papermill_in_process):
    grid = grid_of(tmp_path)
    summary = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    ids = [p.id for p in grid.points]
    assert summary.ran == [(i, r) for r in range(3) for i in ids]
    assert summary.exit_code == 0 and summary.done == ids
    assert [(c["point_id"], c["skip_repeats"]) for c in papermill_in_process][:4] == [
        (ids[0], [1, 2]), (ids[1], [1, 2]), (ids[2], [1, 2]), (ids[0], [0, 2])]
    records = read_records(tmp_path / "runs")
    assert sorted((r.tags.point_id, r.tags.repeat) for r in records) == sorted(summary.ran)
    assert load_calibration(tmp_path / "runs", "cal").concurrency == 8


def test_a_warmup_runs_once_per_point_before_its_first_repeat(tmp_path, papermill_in_process):
    grid = grid_of(tmp_path, GRID | {"warmup": 1, "repeats": 2})
    run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    assert [c["warmup"] for c in papermill_in_process] == [1, 1, 1, 0, 0, 0]
    assert sum(r.tags.warmup for r in read_records(tmp_path / "runs")) == 3


def test_resume_after_an_interrupted_interleaved_sweep_runs_only_what_is_missing(tmp_path, papermill_in_process):
    grid = grid_of(tmp_path)
    papermill_in_process.interrupt_at = 5  # killed during repeat 1 of the second point
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    ids = [p.id for p in grid.points]
    before = {(r.tags.point_id, r.tags.repeat) for r in read_records(tmp_path / "runs")}
    assert before == {(ids[0], 0), (ids[1], 0), (ids[2], 0), (ids[0], 1)}
    papermill_in_process.interrupt_at = None
    summary = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", resume=True,
                        progress=False)
    assert summary.ran == [(ids[1], 1), (ids[2], 1), (ids[0], 2), (ids[1], 2), (ids[2], 2)]
    after = sorted((r.tags.point_id, r.tags.repeat) for r in read_records(tmp_path / "runs"))
    assert after == sorted((i, r) for i in ids for r in range(3)), "every repeat recorded once"


def test_the_schedule_leaves_out_recorded_repeats():
    grid = load_grid(REPO / "notebooks/grids/tiny.yaml")
    a, b = grid.points
    assert schedule(grid, {a.id: {0}}) == [(b, 0)]


@pytest.mark.slow  # runs notebooks through papermill
def test_a_real_sweep_saves_its_calibration_and_one_notebook_per_repeat(tmp_path):
    from conftest import cli

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(GRID | {"repeats": 2, "points": [{"max_concurrent_tasks": [2, 4]}]}))
    proc = cli("sweep", path, "--records-dir", tmp_path / "runs", "--notebooks-dir", tmp_path / "nb", cwd=tmp_path,
               timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "2 points run, 0 skipped, 0 failed" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "nb" / "cal").glob("*.ipynb")) == [
        "asyncio-tdefault-c2-poolauto-r0.ipynb", "asyncio-tdefault-c2-poolauto-r1.ipynb",
        "asyncio-tdefault-c4-poolauto-r0.ipynb", "asyncio-tdefault-c4-poolauto-r1.ipynb"]
    made = load_calibration(tmp_path / "runs", "cal")
    assert made.concurrency == 4 and made.lines == 50 and made.cpu_per_request > 0 and made.load.samples >= 1
    assert len(read_records(tmp_path / "runs")) == 4


def test_a_grid_with_calibration_lines_0_measures_nothing_and_warns_nothing(tmp_path, papermill_in_process, capsys):
    grid = grid_of(tmp_path, GRID | {"calibration_lines": 0, "repeats": 1})
    run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    assert load_calibration(tmp_path / "runs", "cal") is None and "warning" not in capsys.readouterr().err
    assert len(read_records(tmp_path / "runs")) == 3


def test_a_calibration_that_fails_is_one_warning_and_the_sweep_goes_on(tmp_path, papermill_in_process, monkeypatch,
                                                                        capsys):
    from scoring_lib.errors import ConfigError

    def refused(concurrency, lines, fields):
        raise ConfigError("too many open files for the calibration")

    monkeypatch.setattr(calibration, "measure_client", refused)
    summary = run_sweep(grid_of(tmp_path, GRID | {"repeats": 1}), records_dir=tmp_path / "runs",
                        notebooks_dir=tmp_path / "nb", progress=False)
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: sweep cal: no calibration (ConfigError: too many open files")
    assert summary.exit_code == 0 and len(summary.done) == 3 and load_calibration(tmp_path / "runs", "cal") is None


def test_a_wave_is_what_the_service_answers_per_latency_not_everything_in_flight(tmp_path, monkeypatch, capsys):
    # C=2048 in flight against a service serving 200 at once: the client handles 200 replies per latency,
    # so the time scale needed is the one for a wave of 200 (the seed grid's case), not 2,048.
    monkeypatch.setattr(calibration, "measure_client", lambda concurrency, lines, fields: (2e-4, 0.5))
    server = ServerConfig(latency=4.15, capacity=200, time_scale=0.05)
    made = calibrate_sweep("seed", 2048, 50, server, {}, tmp_path)
    assert made.wave_size == 200 and made.cpu_per_wave == pytest.approx(0.04)
    assert made.time_scale_needed == needed_time_scale(2e-4, 200, 4.15) == 0.49
    assert "per wave of 200 requests" in capsys.readouterr().err
    unlimited = calibrate_sweep("open", 2048, 50, ServerConfig(latency=4.15, capacity=0, time_scale=0.05), {},
                                tmp_path)
    assert unlimited.wave_size == 2048
    old = Calibration.from_json(cal().to_json() | {"wave": None})  # calibrations saved before `wave`
    assert old.wave_size == old.concurrency == 100


def test_a_sweep_run_twice_without_resume_reports_only_its_second_run(tmp_path, papermill_in_process, capsys):
    grid = grid_of(tmp_path, GRID | {"repeats": 1})
    for _ in range(2):
        run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    assert "the records of its last sweep moved to" in capsys.readouterr().out
    records = read_records(tmp_path / "runs")
    assert sorted(r.tags.point_id for r in records) == sorted(p.id for p in grid.points)  # one run each, not two
