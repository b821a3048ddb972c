"""`report --compare A B`: per setting the ratio B/A with its interval; only changes beyond the
noise are flagged, and --fail-above turns a regression into a non-zero exit."""

import pytest

from scoring_lib.compare import compare_runs
from scoring_lib.errors import ReportError
from scoring_lib.records import save_record
from test_report import record

SETTINGS = {(100, 100): [4.30, 4.41, 4.36], (200, "auto"): [2.20, 2.26, 2.23], (400, "auto"): [2.31, 2.25, 2.36]}


def sweep(folder, name, factor=1.0, commit="1111111aaaaaaa"):
    i = 0
    for (c, pool), times in SETTINGS.items():
        for s in times:
            rec = record(i, "asyncio", round(s * factor, 4), c, pool, 1)
            rec["extra"]["sweep"] = name
            rec["extra"]["point_id"] = f"asyncio-c{c}-pool{pool}"
            rec["git_commit"] = commit
            save_record(rec, folder / name)
            i += 1
    return folder / name


def test_two_sweeps_of_the_same_records_flag_nothing(tmp_path):
    a, b = sweep(tmp_path / "runs", "first"), sweep(tmp_path / "runs", "second")
    found = compare_runs(a, b, out_dir=tmp_path / "cmp")
    assert len(found.table) == 3 and found.flagged.empty and found.regressions(1.10).empty
    assert (found.table["ratio"] == 1).all()
    by_name = compare_runs("first", "second", runs_dir=tmp_path / "runs", out_dir=tmp_path / "cmp")
    assert by_name.flagged.empty and by_name.a == "sweep first"
    assert (tmp_path / "cmp" / "compare.png").is_file() and "ratio" in (tmp_path / "cmp" / "compare.md").read_text()


def test_runs_twenty_percent_slower_are_flagged_in_every_setting(tmp_path):
    a, b = sweep(tmp_path / "runs", "before"), sweep(tmp_path / "runs", "after", factor=1.2)
    found = compare_runs(a, b, out_dir=tmp_path / "cmp")
    assert list(found.table["change"]) == ["slower"] * 3
    assert (found.table["ratio_low"] > 1.1).all() and (found.table["ratio"].round(6) == 1.2).all()
    assert len(found.regressions(1.10)) == 3 and found.regressions(1.25).empty
    faster = compare_runs(b, a, out_dir=tmp_path / "cmp")
    assert list(faster.table["change"]) == ["faster"] * 3 and faster.regressions(1.10).empty


def test_a_change_inside_the_noise_is_not_flagged(tmp_path):
    a = sweep(tmp_path / "runs", "before")
    noisy = tmp_path / "runs" / "noisy"
    for i, s in enumerate([2.0, 3.0, 2.2, 2.9]):  # mean 2.5 vs 2.23: 1.12x, but its interval spans 1
        rec = record(i, "asyncio", s, 200, "auto", 1)
        rec["extra"] |= {"sweep": "noisy", "point_id": "asyncio-c200-poolauto"}
        save_record(rec, noisy)
    found = compare_runs(a, noisy, out_dir=tmp_path / "cmp")
    [row] = found.table.to_dict("records")
    assert row["ratio"] > 1.1 and row["ratio_low"] < 1 and row["change"] == "within noise"
    assert found.regressions(1.10).empty


def test_a_side_can_be_a_commit_and_an_unknown_side_is_one_error(tmp_path):
    sweep(tmp_path / "runs", "before", commit="aaaaaaa1111")
    sweep(tmp_path / "runs", "after", factor=1.2, commit="bbbbbbb2222")
    found = compare_runs("aaaaaaa", "bbbbbbb", runs_dir=tmp_path / "runs", out_dir=tmp_path / "cmp")
    assert found.a == "commit aaaaaaa" and len(found.flagged) == 3
    with pytest.raises(ReportError, match="neither a folder of records, nor a sweep, nor a commit"):
        compare_runs("nope", "after", runs_dir=tmp_path / "runs", out_dir=tmp_path / "cmp")


def test_report_compare_cli_exits_non_zero_on_a_regression_only(tmp_path):
    from conftest import cli

    a, b = sweep(tmp_path / "runs", "before"), sweep(tmp_path / "runs", "after", factor=1.2)
    same = sweep(tmp_path / "runs", "again")
    ok = cli("report", "--compare", a, same, "--fail-above", "1.10", "--out", tmp_path / "r", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "0 changed beyond the noise" in ok.stdout
    bad = cli("report", "--compare", a, b, "--fail-above", "1.10", "--out", tmp_path / "r", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stdout.count("slower") == 3 and "Traceback" not in bad.stderr
    assert (tmp_path / "r" / "compare" / "compare.png").is_file()


@pytest.mark.slow
def test_the_report_notebook_compares_two_folders_named_from_the_project_root(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import papermill as pm

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "clone"
    (root / "scoring_lib").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    shutil.copytree(repo / "notebooks", root / "notebooks")
    sweep(root / "results" / "runs", "before")
    sweep(root / "results" / "runs", "after", factor=1.2)
    monkeypatch.setenv("SCORING_WORKBENCH_ROOT", str(root))
    out = tmp_path / "report.out.ipynb"
    pm.execute_notebook(str(root / "notebooks" / "report.ipynb"), str(out), kernel_name="python3",
                        progress_bar=False, cwd=str(root / "notebooks"),
                        parameters={"sweeps": ["all"], "compare": ["results/runs/before", "results/runs/after"]})
    text = out.read_text()
    assert "3 changed beyond the noise" in text and text.count("slower") >= 3
    assert (root / "results" / "report" / "compare" / "compare.png").is_file()
