"""A newcomer's first report: with no sweep recorded, `report` and report.ipynb show the committed
reference and say so, with the command that makes one's own; with one, they show the user's."""

import shutil
from pathlib import Path

import pytest

from scoring_lib.records import save_record
from test_report import record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_root(tmp_path):
    """A folder laid out like a fresh clone: the project markers, the notebooks, the committed reference."""
    root = tmp_path / "clone"
    (root / "scoring_lib").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    shutil.copytree(REPO / "results" / "reference" / "runs", root / "results" / "reference" / "runs")
    return root


def own_sweep(root: Path) -> None:
    for i, s in enumerate([2.2, 2.3]):
        rec = record(i, "asyncio", s, 200, "auto", 1)
        rec["extra"]["sweep"] = "mine"
        save_record(rec, root / "results" / "runs" / "mine")


def test_report_with_no_sweep_shows_the_reference_and_says_so_then_the_users_own(fresh_root):
    from conftest import cli

    env = {"SCORING_WORKBENCH_ROOT": str(fresh_root)}
    first = cli("report", env=env, cwd=fresh_root)
    assert first.returncode == 0, first.stderr
    assert "the committed reference" in first.stdout and "sweep reference" in first.stdout
    assert "make one with python -m scoring_lib sweep quick" in first.stdout
    page = (fresh_root / "results" / "report" / "report.md").read_text()
    assert "**This is the committed reference**" in page and "`python -m scoring_lib sweep quick`" in page
    own_sweep(fresh_root)
    second = cli("report", env=env, cwd=fresh_root)
    assert second.returncode == 0, second.stderr
    assert "sweep mine" in second.stdout and "reference" not in second.stdout
    assert "committed reference" not in (fresh_root / "results" / "report" / "report.md").read_text()


@pytest.mark.slow
def test_report_notebook_from_notebooks_folder_draws_the_reference_first(fresh_root, monkeypatch):
    import nbformat
    import papermill as pm

    monkeypatch.setenv("SCORING_WORKBENCH_ROOT", str(fresh_root))
    out = fresh_root / "report.out.ipynb"
    pm.execute_notebook(str(fresh_root / "notebooks" / "report.ipynb"), str(out), kernel_name="python3",
                        progress_bar=False, cwd=str(fresh_root / "notebooks"))
    text = out.read_text()
    assert "This is the committed reference" in text and "image/png" in text
    assert not [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])
                if o.output_type == "error"]
    own_sweep(fresh_root)
    pm.execute_notebook(str(fresh_root / "notebooks" / "report.ipynb"), str(out), kernel_name="python3",
                        progress_bar=False, cwd=str(fresh_root / "notebooks"))
    assert "This is the committed reference" not in out.read_text() and "sweep mine" in out.read_text()
