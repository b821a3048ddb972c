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
