"""Grid and profile files are data: every YAML tag, every wrong type is exit 2 with one line naming the
file, the key and the type expected, or a faithful value; never code run, never a traceback."""

import datetime
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from scoring_lib import cli
from scoring_lib.errors import ConfigError, GridError, ScoringError
from scoring_lib.grid import GRID_KEYS, POINT_KEYS, SERVICE_KEYS, load_grid, plain_json
from scoring_lib.service import ServiceProfile, load_profile, save_path

from conftest import REPO, cli as run_cli

HEAD = f"name: hostile\ninput: {REPO / 'data/sample.txt'}\nlines: 5\n"


def grid_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


def run_parameters(grid) -> list[dict]:
    """What run_sweep hands papermill for each point (the shared part of it), through the one gate."""
    return [plain_json(grid.parameters(p) | {"service": grid.service, "description": grid.description})
            for p in grid.points]


@pytest.mark.parametrize("body, needle", [
    ("request_field: !!binary aGVsbG8=\npoints: [{engine: asyncio}]\n", "request_field must be a non-empty string"),
    ("points: [{max_concurrent_tasks: !!binary MTA=}]\n", "max_concurrent_tasks must be 'auto' or a whole number"),
    ("points: !!set {a, b}\n", "'points' must be a non-empty list"),
    ("points: [!!set {engine}]\n", "points[0] must be a mapping"),
    ("description: !!timestamp 2020-01-01\npoints: [{}]\n", "description must be a string"),
    ("timeout: !!float .nan\npoints: [{}]\n", "timeout must be a finite number above 0, got nan"),
    ("timeout: .inf\npoints: [{}]\n", "timeout must be a finite number above 0, got inf"),
    ("points: [{threads: 123456789012345678901234567890}]\n", "threads must be a whole number of at least 1"),
    ("points: [{threads: [[1, [2]]]}]\n", "threads must be a whole number"),
    ("service: {latency: !!binary MTA=}\npoints: [{}]\n", "latency must be a finite number"),
    ("service: {latency: 1, seed: 2020-01-01}\npoints: [{}]\n", "seed must be a whole number"),
    ("points: [{1: 2}]\n", "unknown parameter 1"),
    ("? [a, b]\n: 1\npoints: [{}]\n", "cannot parse grid"),
    ("points: [{max_concurrent_tasks: 50, max_concurrent_tasks: 60}]\n", "key 'max_concurrent_tasks' given twice"),
    ("repeats: 2\nrepeats: 3\npoints: [{}]\n", "key 'repeats' given twice"),
])
def test_every_yaml_type_that_is_not_the_settings_type_is_refused(tmp_path, body, needle):
    with pytest.raises(GridError) as err:
        load_grid(grid_file(tmp_path, body))
    assert needle in str(err.value) and str(tmp_path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system",
                                 "!!python/name:os.system", "!!python/module:os"])
def test_python_tags_run_nothing(tmp_path, tag):
    marker = tmp_path / "marker"
    path = grid_file(tmp_path, f"description: {tag} ['touch {marker}']\npoints: [{{}}]\n")
    with pytest.raises(GridError, match="cannot parse grid"):
        load_grid(path)
    assert not marker.exists()


def test_a_crafted_string_reaches_the_notebook_as_the_same_string_and_runs_nothing(tmp_path):
    """Quotes, newlines and triple quotes in a string setting: papermill's parameters cell gives the
    kernel exactly that string, and the code inside it is never run."""
    from nbformat.v4 import new_code_cell, new_notebook
    from papermill.parameterize import parameterize_notebook

    marker = tmp_path / "marker"
    crafted = f'x"""\n\'\'\'\nimport os; os.system("touch {marker}")\n"""\\" # \x00'
    path = grid_file(tmp_path, f"request_field: {yaml.safe_dump(crafted).strip()}\n"
                               "points: [&p {max_concurrent_tasks: 4}, *p]\n")
    grid = load_grid(path)
    assert len(grid.points) == 1 and grid.settings["request_field"] == crafted  # alias: the same point, once
    [params] = run_parameters(grid)
    nb = new_notebook(cells=[new_code_cell("request_field = None", metadata={"tags": ["parameters"]})])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["papermill"] = {}
    injected = parameterize_notebook(nb, params).cells[1].source
    namespace: dict = {}
    exec(compile(injected, "<parameters>", "exec"), namespace)  # what the kernel runs
    assert namespace["request_field"] == crafted and not marker.exists()


def test_bytes_never_reach_papermill():
    with pytest.raises(GridError, match=r"parameters.service.x must be plain data"):
        plain_json({"service": {"x": b'"; import os #'}})
    with pytest.raises(GridError, match="plain data"):
        plain_json({"timeout": float("nan")})
    assert plain_json({"a": [1, 2.5, None, True, "s", {"b": []}]}) == {"a": [1, 2.5, None, True, "s", {"b": []}]}


def test_a_bad_grid_value_is_one_line_exit_2_from_the_cli(tmp_path):
    proc = run_cli("sweep", grid_file(tmp_path, "request_field: !!binary aGVsbG8=\npoints: [{}]\n"),
                   "--records-dir", tmp_path / "runs", "--notebooks-dir", tmp_path / "nb", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "grid.yaml: request_field must be a non-empty string, got b'hello'" in proc.stderr


# ---------------------------------------------------------------------------------------- profiles
@pytest.mark.parametrize("body, needle", [
    ("api_key_env: 123", "api_key_env must be the NAME of an environment variable"),
    ("url: 123", "url must be an http(s) URL, got 123"),
    ("latency: {value: abc}", "latency: value must be a finite number above 0, got 'abc'"),
    ("capacity: {value: 1e400}", "capacity: value must be a finite number above 0, got '1e400'"),
    ("capacity: {value: 1.0e+400}", "capacity: value must be a finite number above 0, got inf"),
    ("capacity: {value: 5, sorce: probed}", "capacity: unknown key 'sorce'"),
    ("rate_limit: {value: 5, source: [x]}", "rate_limit: source must be one of"),
    ("time_scale: x", "time_scale must be a finite number above 0, got 'x'"),
    ("request_field: 7", "request_field must be a non-empty string, got 7"),
    ("score_field: 5", "score_field must be a non-empty string, got 5"),
    ("name: [a]", "name must be a string"),
    ("simulated: {seed: x}", "simulated: seed must be a whole number"),
    ("simulated: {colour: red}", "simulated: unknown key 'colour'"),
    ("simulated: [1]", "simulated must be a mapping"),
    ("url: !!binary aGVsbG8=", "url must be an http(s) URL, got b'hello'"),
])
def test_a_profile_of_the_wrong_type_is_one_line_naming_file_and_key(tmp_path, body, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(body + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_hand_written_timestamp_is_kept_as_text(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("url: http://127.0.0.1:9/score\nprobed_at: 2024-05-01 10:00:00\n", encoding="utf-8")
    assert load_profile(path).probed_at == "2024-05-01T10:00:00"


def test_a_bad_profile_is_one_line_exit_2_from_the_cli(tmp_path):
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "bad.yaml").write_text("request_field: 7\n")
    proc = run_cli("score", "in.txt", "--profile", "bad.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "bad.yaml: request_field must be a non-empty string, got 7" in proc.stderr


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "/tmp/x", ".yaml", "x/../../y"])
def test_save_profile_stays_under_profiles_or_a_yaml_path(name, capsys):
    with pytest.raises(ConfigError):
        save_path(name)
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["probe", "--ramp", "--save-profile", name])
    assert exit_.value.code == 2 and "--save-profile" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        ServiceProfile(url="http://127.0.0.1:9/score").save(name)


def test_save_profile_names_and_yaml_paths(tmp_path):
    assert save_path("prod") == Path("profiles/prod.yaml") and save_path("prod-2.b") == Path("profiles/prod-2.b.yaml")
    assert save_path(tmp_path / "x.yaml") == tmp_path / "x.yaml"


# ------------------------------------------------------------------------- random YAML documents
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                     st.text(max_size=12), st.binary(max_size=6), st.dates(),
                     st.sampled_from(["auto", "asyncio", "ray", "const", "probed", "http://127.0.0.1:9/s", "x"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.frozensets(st.integers(0, 3), max_size=2).map(set),
    st.dictionaries(st.sampled_from(sorted(POINT_KEYS | SERVICE_KEYS | {"value", "source", "zz"})), inner,
                    max_size=3)), max_leaves=8)
_GRID_DOCS = st.dictionaries(st.sampled_from(sorted(GRID_KEYS | {"zz"})), _VALUES, max_size=6)
_PROFILE_DOCS = st.dictionaries(st.sampled_from(sorted(ServiceProfile.__dataclass_fields__) + ["zz"]), _VALUES,
                                max_size=6)
_TEXT_NOISE = st.sampled_from(["", "\n!!binary", "\n: :", " &a [*a]", "\n- !!set {x}", "\t", "\n  - [", "{", "%"])


def _dump(doc: dict, noise: str) -> str:
    return yaml.safe_dump(doc, allow_unicode=True) + noise


@hsettings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_GRID_DOCS, points=st.lists(st.dictionaries(st.sampled_from(sorted(POINT_KEYS | {"zz"})), _VALUES,
                                                          max_size=3), max_size=3), noise=_TEXT_NOISE)
def test_random_grid_documents_load_or_give_exit_2(doc, points, noise):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.yaml"
        path.write_text(_dump(doc | {"points": points}, noise), encoding="utf-8")
        try:
            grid = load_grid(path)
        except ScoringError as exc:
            assert exc.exit_code == 2 and "\n" not in str(exc)
            return
        run_parameters(grid)  # a grid that loads gives plain data only


@hsettings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_PROFILE_DOCS, noise=_TEXT_NOISE)
def test_random_profile_documents_load_or_give_exit_2(doc, noise):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_text(_dump(doc, noise), encoding="utf-8")
        try:
            prof = load_profile(path)
        except ScoringError as exc:
            assert exc.exit_code == 2 and "\n" not in str(exc)
            return
        assert plain_json(prof.to_dict() | {"probed_at": prof.probed_at})
