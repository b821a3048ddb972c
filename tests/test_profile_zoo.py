"""The zoo as part of a service profile: one profile is one simulated service on every path (serve,
score and probe without a url, a grid's sweep and its points, the notebooks), and a profile whose
`simulated` behaviour is garbage is one line, exit 2, before anything runs."""

import json
from dataclasses import replace

import pytest
import yaml
from conftest import cli
from test_calibration import papermill_in_process  # noqa: F401 - a fixture: run.ipynb's run_point, in this process

from scoring_lib.config import ServerConfig
from scoring_lib.errors import ConfigError, GridError
from scoring_lib.service import SIMULATED_KEYS, Known, ServiceProfile, load_profile

ZOO = dict(rate_burst=3.0, retry_after="whole", shed_retry_after=0.0, queue_limit=4, quota=2, quota_window=900.0,
           halve_after=50, warmup=0.5, flaky=1, reset_rate=0.0, latency_dist="exp", seed=7)
# A service that scores two requests, then answers 429 (no Retry-After) until its quota window ends.
QUOTA = {"url": None, "latency": {"value": 0.01, "source": "configured"}, "time_scale": 0.5,
         "simulated": {"quota": 2, "quota_window": 900, "retry_after": "none"}}


def _profile(tmp_path, data: dict = QUOTA):
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _bare(cfg: ServerConfig) -> ServerConfig:
    """A simulator's behaviour, leaving out where it listens."""
    return replace(cfg, host="127.0.0.1", port=0, require_api_key=None)


def test_every_zoo_setting_is_a_profile_key_defined_once_in_settings():
    zoo = {"rate_burst", "retry_after", "shed_retry_after", "queue_limit", "quota", "quota_window", "halve_after",
           "warmup", "flaky"}
    assert zoo <= set(SIMULATED_KEYS)
    assert not {"host", "port", "latency", "capacity", "rate_limit", "time_scale"} & set(SIMULATED_KEYS)


def test_a_zoo_simulator_survives_the_profile_yaml_round_trip(tmp_path):
    cfg = ServerConfig(latency=0.2, capacity=8, rate_limit=30, time_scale=0.5, **ZOO)
    path = ServiceProfile.from_server_config(cfg).save(tmp_path / "p.yaml")
    assert load_profile(path).server_config() == cfg


def test_one_profile_is_the_same_service_on_every_path(tmp_path):
    from scoring_lib.cli import build_parser
    from scoring_lib.cli_service import resolve_service, serve_config
    from scoring_lib.grid import parse_grid
    from scoring_lib.sweep import _sweep_server

    path = _profile(tmp_path)
    want = load_profile(path).server_config()
    assert (want.quota, want.quota_window, want.retry_after, want.latency) == (2, 900, "none", 0.02)
    parser = build_parser()
    seen = {}
    for command in ("score", "probe"):
        args = parser.parse_args([command, *(["in.txt"] if command == "score" else []), "--profile", str(path)])
        seen[command] = resolve_service(args).server_config(args)
    args = parser.parse_args(["serve", "--profile", str(path), "--port", "0"])
    seen["serve"] = serve_config(args, host=args.host, port=args.port)
    seen["sweep"] = _sweep_server(parse_grid({"profile": str(path), "points": [{"max_concurrent_tasks": 2}]}))
    assert {name: _bare(cfg) for name, cfg in seen.items()} == {name: want for name in seen}


def test_options_and_a_grid_service_win_over_the_profile(tmp_path):
    from scoring_lib.cli import build_parser
    from scoring_lib.cli_service import resolve_service, serve_config
    from scoring_lib.grid import parse_grid
    from scoring_lib.sweep import _sweep_server

    path = _profile(tmp_path)
    args = build_parser().parse_args(["score", "in.txt", "--profile", str(path), "--server-quota", "5"])
    assert resolve_service(args).server_config(args).quota == 5
    args = build_parser().parse_args(["serve", "--profile", str(path), "--flaky", "2"])
    assert (serve_config(args).flaky, serve_config(args).quota) == (2, 2)
    grid = parse_grid({"profile": str(path), "service": {"quota": 9}, "points": [{"max_concurrent_tasks": 2}]})
    assert (_sweep_server(grid).quota, _sweep_server(grid).retry_after) == (9, "none")


def test_score_and_a_grid_point_meet_the_same_429s(tmp_path, make_input):
    """The profile's quota, live: `score --profile` (its embedded service) and a grid point run through
    run_point (what run.ipynb calls, its own simulated service) each see 2 scores, then 429s."""
    from scoring_lib.errors import PointFailed
    from scoring_lib.sweep import run_point

    path, data = _profile(tmp_path), make_input([f"line {i}" for i in range(5)])
    out = cli("score", data, "--profile", path, "--no-cache", "--max-retries", "0", "--max-concurrent-tasks", "1",
              "--records-dir", tmp_path / "cli", "--output", tmp_path / "out.jsonl", cwd=tmp_path)
    assert "Traceback" not in out.stderr
    with pytest.raises(PointFailed):  # its error rows (the 429s) fail the point, recorded
        run_point(input=str(data), profile=str(path), records_dir=tmp_path / "point", max_retries=0,
                  max_concurrent_tasks=1)
    records = {where: json.loads(next((tmp_path / where).rglob("*.json")).read_text()) for where in ("cli", "point")}
    for rec in records.values():
        assert (rec["ok"], rec["error"], rec["limits"]["http_429"]) == (2, 3, 3)
        assert (rec["service"]["quota"], rec["service"]["retry_after"]) == (2, "none")
    assert records["point"]["service"]["kind"] == "embedded"


def test_a_sweep_of_a_grid_naming_the_profile_meets_the_same_429s(tmp_path, make_input, papermill_in_process):
    """The grid path whole: run_sweep starts the sweep's one service from the grid's profile, and its
    point (run.ipynb's run_point, here in this process) records the profile's quota as score did."""
    from scoring_lib.grid import parse_grid
    from scoring_lib.sweep import run_sweep

    data = make_input([f"line {i}" for i in range(5)])
    grid = parse_grid({"name": "zoo", "input": str(data), "profile": str(_profile(tmp_path)), "calibration_lines": 0,
                       "points": [{"max_concurrent_tasks": 1, "max_retries": 0}]})
    summary = run_sweep(grid, records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    assert [point for point, _why in summary.failed] == [grid.points[0].id]  # its 429s are error rows
    # The run's own record (in this process the point's failure is recorded beside it, as a kernel's would not be)
    [rec] = [r for p in (tmp_path / "runs" / "zoo").glob("*.json") if (r := json.loads(p.read_text())).get("limits")]
    assert (rec["ok"], rec["error"], rec["limits"]["http_429"]) == (2, 3, 3)
    assert (rec["service"]["kind"], rec["service"]["quota"], rec["service"]["retry_after"]) == ("simulated", 2, "none")


# ---------------------------------------------------------------------------- a hostile profile
BAD_SIMULATED = [
    ("simulated: {quota: -1}", "simulated: quota must be a whole number"),
    ("simulated: {quota_window: -5}", "simulated: quota_window must be a number from 0 to 86400"),
    ("simulated: {quota_window: 0}", "simulated: quota_window must be a number from 0 to 86400"),
    ("simulated: {quota: 1, quota_window: 1.0e-300}", "simulated: quota_window x time_scale must be at least 0.001 s"),
    ("simulated: {warmup: 1.0e+300}", "simulated: warmup must be a number from 0 to 86400"),
    ("simulated: {shed_retry_after: 1.0e+300}", "simulated: shed_retry_after must be a number from 0 to 86400"),
    ("simulated: {quota: 99999999999999999999999}", "simulated: quota must be a whole number"),
    ("simulated: {seed: -1}", "simulated: seed must be a whole number"),
    ("simulated: {retry_after: [exact]}", "simulated: retry_after must be one of"),
    ("simulated: {latency_dist: !!python/object/apply:os.getpid []}", "cannot read service profile"),
    ("simulated: !!binary aGVsbG8=", "simulated must be a mapping"),
    ("simulated: !!set {quota: null}", "simulated must be a mapping"),
    ("simulated: {retry_after: later}", "simulated: retry_after must be one of"),
    ("simulated: {flaky: 1.5}", "simulated: flaky must be a whole number"),
    ("simulated: {flaky: true}", "simulated: flaky must be a whole number"),
    ("simulated: {warmup: .inf}", "simulated: warmup must be a number from 0 to 86400"),
    ("simulated: {rate_burst: .nan}", "simulated: rate_burst must be a finite number"),
    ("simulated: {quota: 1.0e+400}", "simulated: quota must be a whole number"),
    ("simulated: {shed: true, queue_limit: 4}", "simulated: shed (no queue) and queue_limit"),
    ("simulated: {quota: !!binary aGVsbG8=}", "simulated: quota must be a whole number of at least 0, got b'hello'"),
    ("simulated: {queue_limit: [1, 2]}", "simulated: queue_limit must be a whole number"),
    ("simulated: {latency: 3}", "simulated: unknown key 'latency'"),
    ("simulated: {time_scale: 3}", "simulated: unknown key 'time_scale'"),
    ("simulated: {port: 80}", "simulated: unknown key 'port'"),
    ("simulated: garbage", "simulated must be a mapping"),
    ("simulated: !!python/object:os.system {}", "cannot read service profile"),
    ("simulated: !!python/name:os.system ''", "cannot read service profile"),
    ("simulated: {quota: 2", "cannot read service profile"),
]


@pytest.mark.parametrize("body, needle", BAD_SIMULATED)
def test_a_bad_behaviour_in_a_profile_is_one_line_naming_file_and_key(tmp_path, body, needle):
    path = tmp_path / "bad.yaml"
    path.write_text("latency: 0.01\n" + body + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["score", "serve", "probe"])
def test_a_bad_behaviour_is_exit_2_one_line_and_nothing_runs(tmp_path, command):
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "bad.yaml").write_text("latency: 0.01\nsimulated: {quota_window: -1}\n")
    args = {"score": ["in.txt", "--records-dir", "runs"], "serve": ["--port", "0"], "probe": []}[command]
    out = cli(command, *args, "--profile", "bad.yaml", cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "quota_window" in out.stderr
    assert not (tmp_path / "runs").exists() and "serving on" not in out.stdout


def test_a_huge_duration_in_a_profile_is_exit_2_before_its_service_starts(tmp_path):
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "huge.yaml").write_text("latency: 0.01\nsimulated: {warmup: 1.0e+300}\n")
    out = cli("score", "in.txt", "--profile", "huge.yaml", "--records-dir", "runs", cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
    assert "warmup must be a number from 0 to 86400" in out.stderr and not (tmp_path / "runs").exists()


def test_a_notebook_service_is_the_profiles(tmp_path):
    from scoring_lib.notebook import start_service

    prof = load_profile(_profile(tmp_path))
    url, proc = start_service(None, None, prof)
    try:
        assert _bare(proc.config) == prof.server_config() and url.startswith("http://127.0.0.1:")
    finally:
        proc.stop()
    assert start_service({"quota": 9}, "http://127.0.0.1:9/score", prof) == ("http://127.0.0.1:9/score", None)


def test_a_grid_whose_profile_cannot_be_simulated_is_refused_before_it_runs(tmp_path):
    from scoring_lib.grid import parse_grid

    path = _profile(tmp_path, {"simulated": {"quota": 2}})  # no latency: nothing to simulate
    with pytest.raises(GridError, match="needs a known latency"):
        parse_grid({"profile": str(path), "points": [{"max_concurrent_tasks": 2}]})
    path = _profile(tmp_path, QUOTA)
    with pytest.raises(GridError, match="shed"):
        parse_grid({"profile": str(path), "service": {"shed": True, "queue_limit": 3},
                    "points": [{"max_concurrent_tasks": 2}]})


def test_a_profile_with_a_url_is_not_simulated_by_a_sweep(tmp_path):
    from scoring_lib.grid import parse_grid

    path = ServiceProfile(url="http://127.0.0.1:9/score", simulated={"flaky": 3}).save(tmp_path / "p.yaml")
    grid = parse_grid({"profile": str(path), "points": [{"max_concurrent_tasks": 2}]})  # no latency: not needed
    assert grid.url == "http://127.0.0.1:9/score"
    assert ServiceProfile(latency=Known(1.0, "configured"), simulated={"flaky": 3}).server_config().flaky == 3


# A "billion laughs": nine lines of YAML aliases make a list of 9**9 items whose full repr is gigabytes.
BOMB = ('[&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"], ' + ", ".join(
    f"&{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")) + "]")


@pytest.mark.parametrize("body", [f"latency: 0.01\nsimulated: {BOMB}", f"latency: 0.01\nnotes: {BOMB}",
                                  f"latency: {{value: {BOMB}}}", f"latency: 0.01\nsimulated: {{quota: {BOMB}}}",
                                  "latency: 0.01\nsimulated: {quota: " + "1" * 5000 + "}"],
                         ids=["bomb-simulated", "bomb-notes", "bomb-figure", "bomb-zoo-value", "endless-int"])
def test_an_alias_bomb_or_an_endless_number_is_one_line_exit_2(tmp_path, body):
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "bomb.yaml").write_text(body + "\n")
    out = cli("score", "in.txt", "--profile", "bomb.yaml", "--records-dir", "runs", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr[-300:]
    assert len(out.stderr) < 400 and not (tmp_path / "runs").exists()


def test_a_refused_value_is_shown_without_walking_all_of_it():
    from scoring_lib.kinds import Whole, shown

    class Deep:
        def __repr__(self):
            raise AssertionError("walked too deep")

    assert shown([[[[Deep()]]]]) == "[[[[...]]]]"
    with pytest.raises(ConfigError, match=r"got \[\[\[\[\.\.\.\]\]\]\]"):
        Whole().check("quota", [[[[Deep()]]]])
    assert shown("x" * 100) == "'" + "x" * 76 + "..."  # long text: cut at its end, as before


def test_a_file_too_large_for_a_profile_is_refused_before_it_is_read_whole(tmp_path):
    """A profile or grid is a few KB; /dev/zero or a data file named by mistake is one line, exit 2."""
    from scoring_lib.grid import load_grid

    big = tmp_path / "big.yaml"
    big.write_text("latency: 0.01\n" + "#" * (2 << 20) + "\n")  # valid YAML, 2 MB of comment
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_profile(big)
    with pytest.raises(GridError, match="larger than 1048576 bytes"):
        load_grid(big)
