"""Each run setting defined once (scoring_lib/settings.py): the CLI, grids, run.ipynb and the record's
settings all come from that one definition, and every boundary checks values by it."""

import subprocess
import sys
from dataclasses import dataclass

import papermill as pm
import pytest

from scoring_lib import cli, settings
from scoring_lib.errors import ConfigError, GridError
from scoring_lib.grid import parse_grid, point_keys
from scoring_lib.server import ServiceProcess
from scoring_lib.service import ServiceProfile
from scoring_lib.settings import ClientConfig, RunConfig, ServerConfig, Whole, settings_of, settings_record

from conftest import REPO, cli as run_cli, read_rows

TINY = {"name": "tiny", "input": str(REPO / "data/sample.txt"), "lines": 20,
        "service": {"time_scale": 0.005}, "points": [{"max_concurrent_tasks": 4}]}
# run.ipynb's parameters that are not run settings: what the notebook itself needs.
NOTEBOOK_ONLY = {"input", "repeats", "warmup", "lines", "url", "service", "profile", "records_dir", "sweep",
                 "point_id", "skip_repeats"}


def parse(*argv):
    return cli.build_parser().parse_args(["score", "in.txt", *argv])


def usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def help_text(capsys, command="score") -> str:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_cli_setting_is_an_option_with_its_one_default_in_the_help(capsys):
    text = help_text(capsys)
    for cls in (ClientConfig, RunConfig):
        for name, spec, default in settings_of(cls):
            if spec.cli:
                assert f"--{name.replace('_', '-')}" in text, name
            if spec.cli and default is not None and not isinstance(default, bool) and spec.default_text is None:
                shown = f"{default:g}" if isinstance(default, float) else str(default)
                assert f"(default {shown})" in text, name
    for name, spec, _ in settings_of(ServerConfig):
        if spec.cli and name not in ("request_field", "score_field"):
            assert f"--server-{name.replace('_', '-')}" in text, name


def test_options_left_out_are_none_so_the_settings_class_holds_every_default():
    args = parse()
    assert all(getattr(args, name) is None for name, spec, _ in settings_of(RunConfig) if spec.cli)
    assert cli.options_given(args, ClientConfig) == {} and cli.options_given(args, RunConfig) == {}
    assert parse("--timeout", "7", "--max-concurrent-tasks", "auto").timeout == 7.0


@pytest.mark.parametrize("argv", [["--timeout", "inf"], ["--timeout", "nan"], ["--rate-limit", "nan"],
                                  ["--rate-limit", "inf"], ["--rate-limit", "0"], ["--rate-limit", "-1"], ["--rate-limit", "1e-300"],
                                  ["--backoff-cap", "inf"], ["--server-time-scale", "inf"],
                                  ["--server-latency", "nan"], ["--max-concurrent-tasks", "99999999999"],
                                  ["--server-error-rate", "2"], ["--api-key-env", "not a name"]])
def test_settings_that_cannot_work_are_one_line_exit_2(capsys, argv):
    assert "must be" in usage_error(capsys, *argv)


@pytest.mark.parametrize("key, value", [("timeout", float("inf")), ("timeout", float("nan")),
                                        ("rate_limit", float("inf")), ("rate_limit", 0), ("rate_limit", 0.001),
                                        ("max_concurrent_tasks", 10**40), ("backoff_base", True)])
def test_grids_refuse_them_by_the_same_definition(key, value):
    with pytest.raises(GridError, match=f"{key} must be"):
        parse_grid(TINY | {key: value})
    with pytest.raises(GridError, match=f"points\\[0\\]: {key} must be"):
        parse_grid(TINY | {"points": [{key: value}]})


def test_a_count_past_the_top_says_the_top(capsys):
    """99999999999 is a whole number of at least 1: the message must say what it breaks (the top every
    count shares); a count below the minimum keeps the short message."""
    assert "at least 1 and at most 2147483647, got '99999999999'" in usage_error(
        capsys, "--max-concurrent-tasks", "99999999999")
    with pytest.raises(GridError, match="threads must be a whole number of at least 1 and at most 2147483647"):
        parse_grid(TINY | {"threads": 10**40})
    assert "at most" not in usage_error(capsys, "--threads", "0")


def test_connector_limit_has_one_spelling():
    assert ClientConfig(url="http://h/s").connector_limit == "auto"
    assert ClientConfig(url="http://h/s", connector_limit=None).connector_limit == "auto"  # older callers' None
    assert ClientConfig(url="http://h/s").pool_size(7) == 7
    assert ClientConfig(url="http://h/s", connector_limit=0).pool_size(7) == 0
    assert parse("--connector-limit", "auto").connector_limit == "auto"
    assert parse_grid(TINY | {"points": [{"connector_limit": "auto"}]}).points[0].connector_limit == "auto"
    with pytest.raises(ConfigError, match="connector_limit must be 'auto' or a whole number of at least 0"):
        ClientConfig(url="http://h/s", connector_limit=-1)


def test_an_explicit_field_option_wins_over_the_profile(tmp_path, make_input):
    """The profile names other fields; `--request-field text --score-field score` given on purpose win
    (they equal the defaults, which the CLI used to take for "not given")."""
    make_input(["alpha", "beta"], "in.txt")
    with ServiceProcess(ServerConfig(latency=0)) as svc:  # speaks text/score
        prof = ServiceProfile(url=svc.url, name="other", request_field="q", score_field="s").save(tmp_path / "p.yaml")
        proc = run_cli("score", "in.txt", "--profile", prof, "--request-field", "text", "--score-field", "score",
                       "--no-cache", "--no-record", "--output", "o.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in read_rows(tmp_path / "o.jsonl")] == ["ok", "ok"]


def test_run_notebook_parameters_are_the_settings_with_none_for_their_default():
    params = pm.inspect_notebook(str(REPO / "notebooks" / "run.ipynb"))
    assert set(params) == point_keys() | NOTEBOOK_ONLY
    for name in point_keys():
        assert params[name]["default"] == "None", name  # the default lives in settings.py only


@pytest.mark.slow  # a notebook through the papermill command
def test_papermill_run_notebook_with_workers_and_threads(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "papermill", str(REPO / "notebooks" / "run.ipynb"),
                           str(tmp_path / "out.ipynb"), "-p", "workers", "32", "-p", "threads", "64",
                           "-p", "lines", "20",
                           "-p", "records_dir", str(tmp_path / "runs"), "-y", "service: {time_scale: 0.005}",
                           "--cwd", str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from scoring_lib.records import read_records

    [record] = read_records(tmp_path / "runs")
    assert record["threads"] == 64 and record["ok"] == 20


def test_a_new_setting_defined_in_one_place_reaches_the_cli_the_grid_and_the_record(monkeypatch, capsys):
    @dataclass(frozen=True)
    class WithNewSetting(settings.RunConfig):
        probe_budget: int = settings.setting(3, Whole(1), "a setting added for this test", unit="N", group="engine",
                                             grid=True)

    monkeypatch.setattr(settings, "RunConfig", WithNewSetting)
    assert "--probe-budget N a setting added for this test (default 3)" in help_text(capsys)
    assert parse("--probe-budget", "7").probe_budget == 7
    usage_error(capsys, "--probe-budget", "0")
    grid = parse_grid(TINY | {"points": [{"max_concurrent_tasks": 4, "probe_budget": [1, 2]}]})
    assert [p.id for p in grid.points] == ["asyncio-tdefault-c4-poolauto-probe_budget1",
                                           "asyncio-tdefault-c4-poolauto-probe_budget2"]
    assert grid.parameters(grid.points[1])["probe_budget"] == 2
    with pytest.raises(GridError, match="probe_budget must be a whole number of at least 1, got 0"):
        parse_grid(TINY | {"points": [{"probe_budget": 0}]})
    config = WithNewSetting(input="in.txt", client=ClientConfig(url="http://127.0.0.1/score"), probe_budget=5)
    assert settings_record(config)["probe_budget"] == 5
    with pytest.raises(ConfigError, match="probe_budget must be"):
        WithNewSetting(input="in.txt", client=ClientConfig(url="http://127.0.0.1/score"), probe_budget=1.5)


def test_settings_record_is_plain_json_with_the_url_masked():
    import json

    config = RunConfig(input="in.txt", client=ClientConfig(url="http://user:pw@127.0.0.1/score", timeout=5))
    record = settings_record(config)
    assert json.loads(json.dumps(record)) == record
    assert record["url"] == "http://***@127.0.0.1/score" and record["timeout"] == 5
    assert record["max_concurrent_tasks"] == 256 and record["connector_limit"] == "auto"
