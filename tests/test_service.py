"""ServiceProfile: figures with their sources, YAML round trip, and the simulator built from a profile."""

import pytest

from scoring_lib.config import ServerConfig
from scoring_lib.errors import ConfigError
from scoring_lib.service import Known, ServiceProfile, load_profile, profile_path


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
