"""Every notebook runs top to bottom through papermill with tiny parameters; git holds them clean."""

import json
import os
import subprocess

import nbformat
import papermill as pm
import pytest

from scoring_lib.records import read_records

from conftest import REPO

NOTEBOOKS = REPO / "notebooks"
TINY_SERVICE = {"latency": 4.15, "capacity": 200, "time_scale": 0.005}


def execute(name, where, **parameters):
    out = where / f"{name}.out.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name="python3",
                        progress_bar=False, cwd=str(where))
    return nbformat.read(out, as_version=4)


def tracked_notebooks():
    listed = subprocess.run(["git", "ls-files", "notebooks/*.ipynb"], cwd=REPO, capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 and listed.stdout.strip() else []
    return [REPO / n for n in names] or sorted(NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs_and_start_with_tagged_parameters():
    paths = tracked_notebooks()
    assert {p.name for p in paths} >= {"explore.ipynb", "run.ipynb", "sweep.ipynb", "report.ipynb"}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
        assert "api_key =" not in "".join(c.source for c in code), path.name


def test_run_notebook_records_its_runs_and_never_sees_the_key(tmp_path, monkeypatch):
    key = "nb-secret-4242"
    monkeypatch.setenv("SCORING_API_KEY", key)
    nb = execute("run", tmp_path, input=str(REPO / "data/sample.txt"), lines=20, repeats=2, warmup=1,
                 max_concurrent_tasks=8, service=TINY_SERVICE, records_dir=str(tmp_path / "runs"))
    records = read_records(tmp_path / "runs")
    assert len(records) == 3 and sum(r["extra"]["warmup"] for r in records) == 1
    assert all(r["ok"] == 20 for r in records)
    text = json.dumps(nb)
    assert "scoring_seconds" in text  # the table of runs is shown
    for path in [tmp_path / "run.out.ipynb", *(tmp_path / "runs").glob("*.json")]:
        assert key not in path.read_text(), path


def test_explore_notebook_probes_and_shows_rows(tmp_path):
    nb = execute("explore", tmp_path, input=str(REPO / "data/sample.txt"), sample_lines=10, probe_samples=4,
                 service=TINY_SERVICE)
    text = json.dumps(nb)
    assert "deterministic: yes" in text and "batch bodies: refused" in text
    assert "image/png" in text  # the latency histogram
    assert "10 lines: 10 ok" in text


def test_sweep_and_report_notebooks(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({"name": "nbtiny", "input": str(REPO / "data/sample.txt"), "lines": 20,
                                "service": TINY_SERVICE,
                                "points": [{"engine": "asyncio", "threads": 1, "max_concurrent_tasks": [4, 8]}]}))
    execute("sweep", tmp_path, grid=str(grid), records_dir=str(tmp_path / "runs"),
            notebooks_dir=str(tmp_path / "nb"))
    assert len(read_records(tmp_path / "runs")) == 2
    nb = execute("report", tmp_path, runs_dir=str(tmp_path / "runs"), out_dir=str(tmp_path / "report"))
    assert (tmp_path / "report" / "wall_vs_concurrency.png").exists()
    assert (tmp_path / "report" / "report.md").exists()
    assert json.dumps(nb).count("image/png") >= 5
