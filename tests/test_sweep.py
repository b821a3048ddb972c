"""Grids as validated data, and sweeps run through papermill."""

import json

import pytest
import yaml

from scoring_lib.errors import GridError
from scoring_lib.records import read_records
from scoring_lib.sweep import load_grid, parse_grid, run_sweep

from conftest import REPO, cli

TINY = {"name": "tiny", "input": str(REPO / "data/sample.txt"), "lines": 20, "repeats": 1,
        "service": {"latency": 4.15, "capacity": 200, "time_scale": 0.005},
        "points": [{"engine": "asyncio", "threads": 1, "max_concurrent_tasks": [4, 8], "connector_limit": [2, "auto"]}]}


def write_grid(tmp_path, data, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_grid_expands_sub_grids_and_normalises_points():
    grid = parse_grid(TINY | {"points": TINY["points"] + [{"engine": "ray", "workers": [1, 2], "threads": 2}]})
    ids = [p.id for p in grid.points]
    assert ids[:4] == ["asyncio-t1-c4-pool2", "asyncio-t1-c4-poolauto", "asyncio-t1-c8-pool2", "asyncio-t1-c8-poolauto"]
    assert ids[4:] == ["ray-w1-t2-c256-poolauto", "ray-w2-t2-c256-poolauto"]
    assert grid.points[1].connector_limit is None


def test_workers_are_ignored_for_asyncio_so_points_are_not_duplicated():
    grid = parse_grid(TINY | {"points": [{"engine": "asyncio", "workers": [1, 2, 3]}]})
    assert len(grid.points) == 1 and grid.points[0].workers is None


@pytest.mark.parametrize("data, needle", [
    (TINY | {"colour": "blue"}, "unknown key 'colour'"),
    (TINY | {"points": [{"engine": "asyncio", "thread": 2}]}, "unknown parameter 'thread'"),
    (TINY | {"points": [{"engine": "spark"}]}, "engine must be one of"),
    (TINY | {"points": [{"max_concurrent_tasks": 0}]}, "at least 1"),
    (TINY | {"points": [{"connector_limit": "lots"}]}, "'auto' or a whole number"),
    (TINY | {"points": []}, "non-empty list"),
    (TINY | {"repeats": 0}, "repeats"),
    (TINY | {"service": {"latency": 1, "speed": 3}}, "unknown service setting 'speed'"),
    (TINY | {"service": {"latency_dist": "normal"}}, "latency distribution"),
    ([1, 2], "must be a mapping"),
])
def test_bad_grids_are_rejected_with_the_reason(data, needle):
    with pytest.raises(GridError, match=needle):
        parse_grid(data)


def test_unparseable_grid_is_one_line_exit_2_before_anything_runs(tmp_path):
    path = write_grid(tmp_path, "name: [unclosed\npoints: {")
    proc = cli("sweep", path, "--records-dir", tmp_path / "runs", "--notebooks-dir", tmp_path / "nb", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "cannot parse grid" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nb").exists()
    proc = cli("sweep", write_grid(tmp_path, TINY | {"points": [{"engine": "asyncio", "thread": 2}]}), cwd=tmp_path)
    assert proc.returncode == 2 and "unknown parameter 'thread'" in proc.stderr


def test_shipped_grids_are_valid():
    for name in ("quick", "seed"):
        grid = load_grid(REPO / "notebooks" / "grids" / f"{name}.yaml")
        assert grid.points and grid.input.is_file()


@pytest.mark.slow  # runs notebooks through papermill
def test_sweep_records_every_point_and_resume_skips_them(tmp_path):
    grid = load_grid(write_grid(tmp_path, TINY))
    summary = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    assert summary.exit_code == 0 and len(summary.done) == 4
    records = read_records(tmp_path / "runs")
    assert sorted(r["extra"]["point_id"] for r in records) == sorted(p.id for p in grid.points)
    assert all(r["lines"] == 20 and r["ok"] == 20 and r["service"]["time_scale"] == 0.005 for r in records)
    assert len(list((tmp_path / "nb" / "tiny").glob("*.ipynb"))) == 4
    again = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", resume=True, progress=False)
    assert again.done == [] and len(again.skipped) == 4
    assert len(read_records(tmp_path / "runs")) == 4


@pytest.mark.slow  # runs notebooks through papermill
def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    fake = tmp_path / "no_ray"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake))  # the kernels papermill starts cannot import Ray
    data = TINY | {"points": [{"engine": "ray", "workers": 1, "threads": 1},
                              {"engine": "asyncio", "max_concurrent_tasks": 4}]}
    path = write_grid(tmp_path, data)
    proc = cli("sweep", path, "--records-dir", tmp_path / "runs", "--notebooks-dir", tmp_path / "nb", cwd=tmp_path,
               env={"PYTHONPATH": str(fake)}, timeout=300)
    assert proc.returncode == 1
    assert "1 points run, 0 skipped, 1 failed" in proc.stdout
    records = read_records(tmp_path / "runs")
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 1 and "ray is not installed" in failed[0]["failure"]
    assert [r["engine"] for r in records if r["status"] == "ok"] == ["asyncio"]
