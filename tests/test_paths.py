"""Relative paths mean the same file from notebooks/, the repo root or anywhere else."""

import subprocess
import sys
from pathlib import Path

from scoring_lib import paths
from scoring_lib.sweep import load_grid

from conftest import REPO


def test_the_root_is_this_checkout_and_relative_names_resolve_from_it(tmp_path, monkeypatch):
    assert paths.ROOT == REPO
    for where in (REPO, REPO / "notebooks", tmp_path):
        monkeypatch.chdir(where)
        assert paths.resolve("data/sample.txt") == REPO / "data" / "sample.txt"
        assert paths.resolve(tmp_path / "x") == tmp_path / "x"
        assert load_grid("quick").input == REPO / "data" / "sample.txt"
        assert load_grid("notebooks/grids/tiny.yaml").name == "tiny"
    assert paths.resolve("~/x") == Path.home() / "x" and paths.resolve(None) is None


def test_the_environment_names_another_root(tmp_path):
    code = "from scoring_lib import paths; print(paths.ROOT, paths.RUNS)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={"SCORING_WORKBENCH_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out == [str(tmp_path), str(tmp_path / "results" / "runs")]


def test_every_grid_key_is_documented_in_the_readme():
    from scoring_lib.sweep import GRID_KEYS, POINT_KEYS, SERVICE_KEYS

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| key | meaning | default |"):]
    table = table[:table.index("\n\n")]
    for key in GRID_KEYS | POINT_KEYS | SERVICE_KEYS:
        assert f"`{key}`" in table, key


def test_readme_grid_comments_and_the_sweep_notebook_agree_on_timings():
    import re

    readme = (REPO / "README.md").read_text()
    sweep_nb = (REPO / "notebooks" / "sweep.ipynb").read_text()
    for grid, phrase in (("quick", "`make run` takes about {} minutes"), ("seed", "about {} minutes")):
        minutes = re.search(r"[Aa]bout (\d+) minutes", (REPO / "notebooks" / "grids" / f"{grid}.yaml").read_text())
        assert minutes, grid
        n = minutes.group(1)
        assert phrase.format(n) in readme.replace("\n  ", " "), grid
        assert f"{grid} (about {n} min)" in sweep_nb, grid
