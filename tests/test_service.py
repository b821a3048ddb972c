"""ServiceProfile: figures with their sources, YAML round trip, and the simulator built from a profile."""

import pytest

from scoring_lib.config import ServerConfig
from scoring_lib.errors import ConfigError
from scoring_lib.service import Known, ServiceProfile, load_profile, profile_path

from conftest import REPO as REPO_ROOT


def test_profile_round_trips_through_yaml(tmp_path):
    prof = ServiceProfile(url="http://127.0.0.1:1/score", score_field="result.score",
                          latency=Known(0.2, "probed"), capacity=Known(50, "configured"))
    path = prof.save(tmp_path / "svc.yaml")
    back = load_profile(path)
    assert back.latency == Known(0.2, "probed")
    assert back.capacity == Known(50, "configured")
    assert back.rate_limit == Known()  # unknown stays unknown, never a number
    assert back.score_field == "result.score" and back.name == "svc"


def test_a_bare_name_goes_under_profiles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert profile_path("prod") == profile_path("profiles/prod.yaml")
    ServiceProfile(url="http://127.0.0.1:1/score", latency=Known(1.0, "probed")).save("prod")
    assert (tmp_path / "profiles" / "prod.yaml").is_file()
    assert load_profile("prod").latency.value == 1.0


def test_the_simulator_is_built_from_a_profile_and_back():
    cfg = ServerConfig(latency=4.15, capacity=200, rate_limit=10, time_scale=0.1, shed=True)
    prof = ServiceProfile.from_server_config(cfg)
    assert prof.latency.value == pytest.approx(0.415) and prof.latency.source == "configured"
    assert prof.rate_limit.value == pytest.approx(100)  # requests per real second
    again = prof.server_config()
    assert (again.latency, again.capacity, again.rate_limit, again.time_scale, again.shed) == \
        pytest.approx((4.15, 200, 10, 0.1, True))


def test_unlimited_simulator_has_unknown_capacity():
    prof = ServiceProfile.from_server_config(ServerConfig(capacity=0))
    assert not prof.capacity.known and prof.in_flight_ceiling() == float("inf")


@pytest.mark.parametrize("bad", [{"latency": {"value": 1, "source": "guessed"}}, {"latency": {"value": -1}},
                                 {"latency": "fast"}, {"colour": "red"}, ["not", "a", "mapping"]])
def test_bad_profiles_are_one_line_config_errors(tmp_path, bad):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert "\n" not in str(err.value)


def test_missing_profile_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "nope.yaml")


def test_in_flight_ceiling_takes_the_rate_limit_when_it_binds_first():
    prof = ServiceProfile(latency=Known(0.5, "probed"), capacity=Known(100, "probed"),
                          rate_limit=Known(40, "probed"))
    assert prof.in_flight_ceiling() == pytest.approx(20)


def test_grid_takes_its_url_from_a_profile(tmp_path):
    from scoring_lib.sweep import parse_grid

    path = ServiceProfile(url="http://127.0.0.1:9/score", latency=Known(0.5, "probed")).save(tmp_path / "p.yaml")
    grid = parse_grid({"profile": str(path), "points": [{"max_concurrent_tasks": 4}]})
    assert grid.url == "http://127.0.0.1:9/score" and grid.profile == str(path)


def test_score_with_a_profile_records_it_and_bounds_from_it(tmp_path, make_input):
    import json

    from conftest import cli

    from scoring_lib.server import ServiceProcess

    path = make_input([f"line {i}" for i in range(40)])
    with ServiceProcess(ServerConfig(latency=0.05, capacity=8, score_field="result.score")) as svc:
        # the simulator answers {"result.score": ...}: a key with a dot, matched whole
        prof = ServiceProfile(url=svc.url, score_field="result.score", latency=Known(0.05, "probed"),
                              capacity=Known(8, "probed"))
        prof.save(tmp_path / "svc.yaml")
        out = cli("score", path, "--profile", tmp_path / "svc.yaml", "--no-cache", "--records-dir",
                  tmp_path / "runs", "--output", tmp_path / "out.jsonl", "--max-concurrent-tasks", "16")
    assert out.returncode == 0, out.stderr
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert record["service"]["profile"]["capacity"] == {"value": 8, "source": "probed"}
    from scoring_lib.records import tidy_row

    row = tidy_row(record)
    assert row["bound_source"] == "probed" and row["bound_seconds"] == pytest.approx(5 * 0.05)
    assert 0 < row["efficiency"] <= 1.05


# --------------------------------------------- the profile is one object on every path to a service
KEYS = {"PROD_KEY": "prod-key-x1", "SCORING_API_KEY": "other-key-y2"}


@pytest.fixture
def keyed(tmp_path, monkeypatch):
    """A loopback server recording the Authorization header of every request, and a profile naming
    it with `api_key_env: PROD_KEY` and its own fields; $PROD_KEY and $SCORING_API_KEY both set."""
    from hostile import HostileServer, reply

    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    with HostileServer(lambda r: reply(body={"result": 0.5})) as srv:
        path = ServiceProfile(url=srv.url, name="prod", api_key_env="PROD_KEY", request_field="q",
                              score_field="result", latency=Known(0.01, "probed")).save(tmp_path / "prod.yaml")
        yield srv, path


def seen(srv) -> set:
    assert srv.requests, "no request reached the service"
    return {r.headers.get("authorization") for r in srv.requests}


def test_every_request_of_a_profile_path_carries_its_key_and_fields(keyed, tmp_path, make_input):
    """score, probe and probe --ramp from the CLI: the profile's key variable, never $SCORING_API_KEY."""
    from conftest import cli

    srv, prof = keyed
    make_input([f"line {i}" for i in range(6)], "in.txt")
    for args in (["score", "in.txt", "--no-cache", "--no-record", "--output", "o.jsonl"], ["probe", "--samples", "2"],
                 ["probe", "--ramp", "--max-concurrent-tasks", "2", "--step-seconds", "0.2"]):
        srv.requests.clear()
        proc = cli(*args, "--profile", prof, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        assert seen(srv) == {"Bearer prod-key-x1"}, args
        assert all(r.json and "q" in r.json for r in srv.requests if r.method == "POST" and isinstance(r.json, dict)
                   and not {"data", "items", "lines"} & set(r.json)), args


def test_run_point_and_score_sample_take_the_whole_profile(keyed, tmp_path, make_input):
    """run.ipynb's run_point (what a sweep's point runs) and explore.ipynb's score_sample."""
    from scoring_lib.sweep import run_point, score_sample

    srv, prof = keyed
    path = make_input([f"line {i}" for i in range(6)], "in.txt")
    rows = run_point(input=path, profile=prof, records_dir=tmp_path / "runs", max_concurrent_tasks=2)
    assert rows["ok"].tolist() == [6] and seen(srv) == {"Bearer prod-key-x1"}
    assert all("q" in r.json for r in srv.requests)
    srv.requests.clear()
    result, _rows = score_sample(path, srv.url, 3, load_profile(prof), max_concurrent_tasks=2)
    assert result.stats.counts["ok"] == 3 and seen(srv) == {"Bearer prod-key-x1"}


@pytest.mark.slow  # a sweep through papermill
def test_a_sweep_with_a_profile_sends_the_profiles_key(keyed, tmp_path, make_input):
    from scoring_lib.sweep import load_grid, run_sweep

    import yaml

    srv, prof = keyed
    path = make_input([f"line {i}" for i in range(6)], "in.txt")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "keyed", "input": str(path), "profile": str(prof),
                                    "points": [{"max_concurrent_tasks": 2}]}))
    summary = run_sweep(load_grid(grid), records_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", progress=False)
    assert summary.exit_code == 0, summary.failed
    assert seen(srv) == {"Bearer prod-key-x1"} and all("q" in r.json for r in srv.requests)


def test_url_credentials_are_masked_in_profiles_and_service_info(tmp_path):
    from scoring_lib.server import service_info

    prof = ServiceProfile(url="http://user:pw@127.0.0.1:9/score", latency=Known(1.0, "probed"))
    assert "pw" not in prof.save(tmp_path / "p.yaml").read_text()
    assert service_info("http://user:pw@127.0.0.1:9/score", "external", profile=prof)["profile"]["url"] == \
        "http://***@127.0.0.1:9/score"


@pytest.mark.slow  # a notebook through papermill
def test_the_explore_notebook_talks_to_a_profiles_service_with_its_key(keyed, tmp_path):
    import papermill as pm

    srv, prof = keyed
    pm.execute_notebook(str(REPO_ROOT / "notebooks" / "explore.ipynb"), str(tmp_path / "explore.out.ipynb"),
                        parameters={"profile": str(prof), "sample_lines": 3, "probe_samples": 2, "ramp_ceiling": 2},
                        kernel_name="python3", progress_bar=False, cwd=str(REPO_ROOT))
    assert seen(srv) == {"Bearer prod-key-x1"}
    assert all("q" in r.json for r in srv.requests if isinstance(r.json, dict) and
               not {"data", "items", "lines"} & set(r.json))


def test_score_sample_shows_each_row_beside_the_text_the_reader_cut(service, make_input):
    """explore.ipynb's rows: a line that is not UTF-8 or holds U+2028 is one row, as the reader cuts it
    (a text decoded whole and split by str.splitlines crashed on the first and shifted every text after the
    second); where there is no error the error column is empty, not NaN."""
    from scoring_lib.sweep import score_sample

    path = make_input("a\u2028b\n".encode() + b"c\xff\n\nd\x0be\n12\n")
    result, rows = score_sample(path, service.url, 10, max_concurrent_tasks=4)
    assert rows["line"].tolist() == [1, 2, 3, 4, 5]
    assert rows["text"].tolist() == ["a\u2028b", "", "", "d\x0be", "12"]
    assert rows["status"].tolist() == ["ok", "error", "empty", "ok", "ok"]
    assert rows["error"].tolist()[0] == "" and "UTF-8" in rows["error"].tolist()[1]
    assert not rows["error"].isna().any()
