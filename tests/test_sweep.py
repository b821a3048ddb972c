"""Grids as validated data, and sweeps run through papermill."""

import json
import re

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
    assert grid.points[1].connector_limit == "auto"


def test_auto_concurrency_is_a_point_of_its_own_and_reaches_the_run_as_auto():
    grid = parse_grid(TINY | {"points": [{"engine": "asyncio", "threads": 1, "max_concurrent_tasks": [8, "auto"]}]})
    assert [p.id for p in grid.points] == ["asyncio-t1-c8-poolauto", "asyncio-t1-cauto-poolauto"]
    assert grid.points[1].max_concurrent_tasks == "auto"
    assert grid.points[1].parameters()["max_concurrent_tasks"] == "auto"
    ray = parse_grid(TINY | {"points": [{"engine": "ray", "workers": 2, "threads": 4, "max_concurrent_tasks": "auto"}]})
    assert [p.id for p in ray.points] == ["ray-w2-t4-cauto-poolauto"]


def test_workers_are_ignored_for_asyncio_so_points_are_not_duplicated():
    grid = parse_grid(TINY | {"points": [{"engine": "asyncio", "workers": [1, 2, 3]}]})
    assert len(grid.points) == 1 and grid.points[0].workers is None


@pytest.mark.parametrize("data, needle", [
    (TINY | {"colour": "blue"}, "unknown key 'colour'"),
    (TINY | {"points": [{"engine": "asyncio", "thread": 2}]}, "unknown parameter 'thread'"),
    (TINY | {"points": [{"engine": "spark"}]}, "engine must be one of"),
    (TINY | {"points": [{"max_concurrent_tasks": 0}]}, "'auto' or a whole number of at least 1, got 0"),
    (TINY | {"points": [{"max_concurrent_tasks": "Auto"}]}, "'auto' or a whole number of at least 1, got 'Auto'"),
    (TINY | {"points": [{"max_concurrent_tasks": [8, 2.5]}]}, "max_concurrent_tasks must be 'auto' or"),
    (TINY | {"points": [{"max_concurrent_tasks": True}]}, "max_concurrent_tasks must be 'auto' or"),
    (TINY | {"points": [{"connector_limit": "lots"}]}, "'auto' or a whole number"),
    (TINY | {"points": []}, "non-empty list"),
    (TINY | {"points": [{"max_concurrent_tasks": []}]}, "max_concurrent_tasks is an empty list"),
    (TINY | {"points": [{"engine": "asyncio", "threads": []}]}, "threads is an empty list"),
    (TINY | {"repeats": 0}, "repeats"),
    (TINY | {"service": {"latency": 1, "speed": 3}}, "unknown service setting 'speed'"),
    (TINY | {"service": {"latency_dist": "normal"}}, "latency_dist must be one of const, exp, lognormal"),
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
    bad = TINY | {"points": [{"engine": "asyncio", "max_concurrent_tasks": ["auto", "lots"]}]}
    proc = cli("sweep", write_grid(tmp_path, bad), "--records-dir", tmp_path / "runs", "--notebooks-dir",
               tmp_path / "nb", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "max_concurrent_tasks must be 'auto' or a whole number of at least 1, got 'lots'" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nb").exists()


def test_a_point_id_is_file_safe_whatever_a_text_setting_holds():
    """A point's id names its notebooks and logs: a value with / or markup in it does not reach a path
    as it is, and two values that differ only in such characters stay two points."""
    grid = parse_grid(TINY | {"points": [{"score_field": ["<b>x</b>", "result/score", "result_score", "a/b", "a_b"]}]})
    ids = [p.id for p in grid.points]
    assert len(set(ids)) == 5 and all(re.fullmatch(r"[A-Za-z0-9._=+-]+", i) for i in ids), ids
    assert ids[2].endswith("-score_fieldresult_score")  # a safe value keeps the id it always had


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
    # no terminal here: a line per run says the sweep is alive (the bar would need a terminal)
    assert "run 1/2 ray-w1-t1" in proc.stderr and "failed" in proc.stderr and "run 2/2 asyncio" in proc.stderr
    records = read_records(tmp_path / "runs")
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 1 and "ray is not installed" in failed[0]["failure"]
    assert [r["engine"] for r in records if r["status"] == "ok"] == ["asyncio"]


@pytest.mark.parametrize("data, needle", [
    (TINY | {"timeout": "abc"}, "timeout must be a finite number"),
    (TINY | {"timeout": 0}, "timeout must be a finite number above 0"),
    (TINY | {"timeout": True}, "timeout must be a finite number"),
    (TINY | {"max_retries": [1, 2]}, "max_retries must be a whole number"),
    (TINY | {"max_retries": -1}, "max_retries must be a whole number"),
    (TINY | {"max_retries": 1.5}, "max_retries must be a whole number"),
    (TINY | {"name": "../../x"}, "plain name"),
    (TINY | {"name": "a/b"}, "plain name"),
    (TINY | {"name": ".."}, "plain name"),
    (TINY | {"name": "/abs"}, "plain name"),
    (TINY | {"name": 5}, "plain name"),
    (TINY | {"url": 123}, "url must be an http"),
    (TINY | {"url": "ftp://example.invalid/x"}, "http"),
    (TINY | {"input": ["a"]}, "input must be a path"),
    (TINY | {"service": {"reset_rate": 2}}, "reset_rate must be a number from 0 to 1"),
])
def test_every_grid_setting_is_validated_before_anything_runs(data, needle):
    with pytest.raises(GridError, match=needle):
        parse_grid(data)


def test_a_bad_timeout_in_a_grid_is_one_line_exit_2_and_nothing_runs(tmp_path):
    proc = cli("sweep", write_grid(tmp_path, TINY | {"timeout": "abc"}), "--records-dir", tmp_path / "runs",
               "--notebooks-dir", tmp_path / "nb", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "timeout" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nb").exists()


@pytest.mark.slow
def test_a_point_with_error_rows_is_failed_and_kept_out_of_the_report(tmp_path):
    from hostile import HostileServer, reply

    from scoring_lib.errors import ReportError
    from scoring_lib.report import build_report

    # Half the lines get a 404 (a dead service is stopped earlier, by the fail-fast rule): the run
    # finishes with error rows, and such a point must not count as a success.
    lines = (REPO / "data/sample.txt").read_text(encoding="utf-8").splitlines()[:20]
    bad = set(lines[::2])
    with HostileServer(lambda r: reply(404, "no such endpoint") if r.text in bad else reply()) as half_dead:
        grid = load_grid(write_grid(tmp_path, TINY | {"url": half_dead.url, "repeats": 2, "max_retries": 0,
                                                      "points": [{"max_concurrent_tasks": 4}]}))
        summary = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    errors = sum(1 for line in lines if line in bad)
    assert summary.exit_code == 1 and summary.done == [] and len(summary.failed) == 1
    assert f"{errors} of 20 rows are errors" in summary.failed[0][1] and "HTTP 404" in summary.failed[0][1]
    records = read_records(tmp_path / "runs")
    assert len(records) == 1, "the point stops at its first failed repeat, with one record"
    assert records[0]["status"] == "failed" and records[0]["error"] == errors
    from scoring_lib.records import save_record

    with pytest.raises(ReportError, match="no measured runs") as nothing:  # failed runs alone are nothing to time
        build_report(tmp_path / "runs", tmp_path / "report")
    assert "all 1 runs failed (first: asyncio-" in str(nothing.value) and "HTTP 404" in str(nothing.value)
    # Beside a measured point of the same sweep, the failed one is listed, and kept out of the timings.
    good = records[0].to_json() | {"run_id": "f" * 32, "status": "ok", "failure": None, "error": 0,
                         "ok": records[0]["lines"], "extra": records[0]["extra"] | {"point_id": "measured"}}
    save_record(good, tmp_path / "runs" / "tiny")
    report = build_report(tmp_path / "runs", tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Failed runs" in text and "HTTP 404" in text
    assert list(report.points["point_id"]) == ["measured"]


@pytest.mark.slow
def test_resume_runs_only_the_missing_repeats(tmp_path):
    from scoring_lib.server import ServiceProcess
    from scoring_lib.sweep import run_point
    from scoring_lib import ServerConfig

    grid = load_grid(write_grid(tmp_path, TINY | {"repeats": 3, "points": [{"max_concurrent_tasks": 4}]}))
    point = grid.points[0]
    # As a sweep killed in the middle of the point leaves it: repeats 0 and 2 recorded, 1 missing.
    with ServiceProcess(ServerConfig(**grid.service)) as svc:
        run_point(input=grid.input, lines=grid.lines, max_concurrent_tasks=4, url=svc.url, repeats=3,
                  skip_repeats=[1], records_dir=tmp_path / "runs" / "tiny", sweep="tiny", point_id=point.id,
                  service=grid.service)
    assert sorted(r["extra"]["repeat"] for r in read_records(tmp_path / "runs")) == [0, 2]
    summary = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", resume=True,
                        progress=False)
    assert summary.done == [point.id]
    repeats = sorted(r["extra"]["repeat"] for r in read_records(tmp_path / "runs") if r["status"] == "ok")
    assert repeats == [0, 1, 2], "resume ran the missing repeat only, once"


@pytest.mark.slow
def test_a_sweep_killed_mid_point_leaves_no_process_and_resume_completes_it_exactly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    data = TINY | {"lines": 200, "repeats": 3, "points": [{"max_concurrent_tasks": 4}],
                   "service": {"latency": 4.15, "capacity": 200, "time_scale": 0.01}}  # ~2 s a run
    path = write_grid(tmp_path, data)
    args = [sys.executable, "-m", "scoring_lib", "sweep", str(path), "--records-dir", str(tmp_path / "runs"),
            "--notebooks-dir", str(tmp_path / "nb"), "--no-progress"]
    sweep = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not read_records(tmp_path / "runs") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert read_records(tmp_path / "runs"), "no run finished in time"
    family = psutil.Process(sweep.pid).children(recursive=True)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    gone, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        p.kill()
    assert not alive, f"left running after the sweep was killed: {[p.cmdline()[:4] for p in alive]}"
    partial = sorted(r["extra"]["repeat"] for r in read_records(tmp_path / "runs"))
    assert 1 <= len(partial) < 3
    proc = cli(*args[3:], "--resume", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ok = sorted(r["extra"]["repeat"] for r in read_records(tmp_path / "runs") if r["status"] == "ok")
    assert ok == [0, 1, 2], f"repeats recorded: {ok} (before resume: {partial})"


@pytest.mark.slow  # runs notebooks through papermill
def test_a_sweep_with_an_auto_point_records_it_as_auto_and_the_report_compares_it(tmp_path):
    from scoring_lib.report import build_report

    data = TINY | {"lines": 200, "service": {"latency": 4.15, "capacity": 50, "time_scale": 0.01},
                   "points": [{"engine": "asyncio", "threads": 1, "max_concurrent_tasks": [50, "auto"]}]}
    summary = run_sweep(load_grid(write_grid(tmp_path, data)), records_dir=tmp_path / "runs",
                        notebooks_dir=tmp_path / "nb", progress=False)
    assert summary.exit_code == 0 and summary.done == ["asyncio-t1-c50-poolauto", "asyncio-t1-cauto-poolauto"]
    [auto] = [r for r in read_records(tmp_path / "runs") if r["extra"]["point_id"].endswith("cauto-poolauto")]
    assert auto["ok"] == 200 and auto["concurrency"] == "auto" and auto["max_concurrent_tasks"] == 2000
    limits = auto["limits"]
    assert limits["mode"] == "adaptive" and limits["limit_history"] and 1 <= limits["final_limit"] <= 2000
    report = build_report(tmp_path / "runs", tmp_path / "report")
    line = next(v for v in report.verdicts if v.startswith("**`auto` beside the best fixed setting:**"))
    assert "`asyncio-t1-cauto-poolauto` took" in line and "best fixed asyncio setting `asyncio-t1-c50-poolauto`" in line
    assert f"its limit ended at {limits['final_limit']:.0f} (ceiling 2000, service capacity 50)" in line
    pts = report.points.set_index("point_id")
    # C = the ceiling, above the capacity: both settings share the capacity's bound, ceil(200 / 50) x 41.5 ms.
    assert pts["bound_seconds"].tolist() == pytest.approx([4 * 4.15 * 0.01] * 2)


def test_a_url_with_credentials_reaches_kernels_through_the_environment_only(monkeypatch):
    from scoring_lib import sweep

    monkeypatch.setenv(sweep.SWEEP_URL_ENV, "http://u:pw@127.0.0.1:9/score")
    assert sweep._real_url("http://***@127.0.0.1:9/score") == "http://u:pw@127.0.0.1:9/score"
    assert sweep._real_url("http://***@127.0.0.2:9/score") == "http://***@127.0.0.2:9/score"  # not the same url
    assert sweep._real_url("http://127.0.0.1:9/score") == "http://127.0.0.1:9/score"


@pytest.mark.slow  # runs notebooks through papermill
def test_a_sweep_against_a_url_with_a_password_keeps_it_out_of_every_file(tmp_path):
    from hostile import HostileServer, reply

    with HostileServer(lambda r: reply()) as srv:
        url = srv.url.replace("http://", "http://user:pw-s3cr3t@")
        grid = load_grid(write_grid(tmp_path, TINY | {"url": url, "points": [{"max_concurrent_tasks": 4}]}))
        summary = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
        assert summary.exit_code == 0, summary.failed
        assert all("authorization" in r.headers for r in srv.requests)  # the credentials were used
    for p in (tmp_path / "runs").rglob("*"):
        assert p.is_dir() or b"pw-s3cr3t" not in p.read_bytes(), p
    for p in (tmp_path / "nb").rglob("*.ipynb"):
        assert b"pw-s3cr3t" not in p.read_bytes(), p


def test_a_sweep_started_over_sets_the_last_one_aside_and_the_report_reads_only_the_new(tmp_path, capsys):
    """Run twice without --resume, a sweep's records were added to the old ones: the report counted 2
    repeats of a 1-repeat grid and mixed two sweeps' code and load."""
    from scoring_lib.records import save_record
    from scoring_lib.sweep import PREVIOUS, set_aside

    runs = tmp_path / "runs"
    old = runs / "tiny"
    old.mkdir(parents=True)
    (old / "calibration.json").write_text("{}")
    (old / "a.json").write_text("{}")
    aside = set_aside(old)
    assert aside.parent == runs / PREVIOUS and aside.name.startswith("tiny-") and not old.exists()
    assert sorted(p.name for p in aside.iterdir()) == ["a.json", "calibration.json"]
    assert set_aside(old) is None and set_aside(runs / "never") is None
    assert read_records(runs) == []  # the hidden folder is not read (its damaged record not even warned of)
    assert capsys.readouterr().err == ""
    assert "skipped record" in (read_records(aside) or capsys.readouterr().err)  # named, it is read


def test_a_notebook_input_path_that_is_not_there_is_one_line_naming_the_root():
    """run.ipynb's kernel runs in notebooks/, so `../data/sample.txt` is natural there; the paths are the
    project's: the error says so in one line (it was a FileNotFoundError traceback from the head file)."""
    from scoring_lib.errors import InputFileError
    from scoring_lib.sweep import run_point

    for lines in (None, 20):
        with pytest.raises(InputFileError, match="relative to the project root"):
            run_point(input="../data/sample.txt", lines=lines)
