"""The typed run record: one type built, written, read back and projected; older records migrate
through one function; hand-edited records are refused by file and key, never with a traceback."""

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring_lib.record import SCHEMA_VERSION, RecordError, RunRecord, RunStatus, failure_record, parse_record
from scoring_lib.runs import TIDY_COLUMNS, read_records, tidy_row

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "runs"
SWEEP = REFERENCE / "reference"


def reference_record() -> dict:
    return json.loads(next(iter(sorted(SWEEP.glob("*-asyncio-*.json")))).read_text())


def test_every_committed_reference_record_migrates_to_the_current_schema():
    files = [f for f in sorted(REFERENCE.rglob("*.json")) if f.name != "calibration.json"]
    records = read_records(REFERENCE, strict=True)
    assert len(records) == len(files) > 0
    assert all(r.schema_version == SCHEMA_VERSION and isinstance(r, RunRecord) for r in records)
    first = records[0]
    assert first.settings["engine"] == first.engine and first.settings["timeout"] == first.timeout
    assert all(r.provenance.text.endswith("+dirty") == bool(r.provenance.dirty) for r in records)


def test_a_record_written_and_read_back_is_the_same_record(tmp_path):
    from scoring_lib.record import save_record

    rec = parse_record(reference_record())
    path = save_record(rec, tmp_path)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and "record_file" not in raw and raw["status"] == "ok"
    [back] = read_records(tmp_path, strict=True)
    assert back.to_json() == rec.to_json() and back.record_file == path.name


def test_the_tidy_row_is_a_projection_of_the_record():
    rec = parse_record(reference_record())
    row = tidy_row(rec)
    assert list(row) == TIDY_COLUMNS
    assert row["scoring_seconds"] == rec.scoring_seconds and row["latency_p99"] == rec.latency.p99
    assert row["point_id"] == rec.tags.point_id and row["git_commit"] == rec.provenance.text
    assert row["time_scale"] == rec.service["time_scale"]


def test_a_failure_record_is_the_same_type_with_a_status():
    rec = failure_record({"engine": "ray", "threads": 8, "workers": 2, "max_concurrent_tasks": "auto",
                          "connector_limit": "auto", "service": {"kind": "simulated"}}, "kernel died",
                         {"sweep": "s", "point_id": "p"})
    assert isinstance(rec, RunRecord) and rec.status is RunStatus.FAILED and rec.failure == "kernel died"
    assert rec.concurrency == "auto" and rec.max_concurrent_tasks is None and rec.settings["max_concurrent_tasks"] == "auto"
    assert tidy_row(rec)["status"] == "failed"


HAND_EDITS = {  # name: (change, the key the refusal names)
    "threads as a string": ({"threads": "4"}, "threads"),
    "seconds as a string": ({"scoring_seconds": "4.5"}, "scoring_seconds"),
    "NaN seconds": ({"scoring_seconds": math.nan}, "scoring_seconds"),
    "a huge number": ({"scoring_seconds": 1e400}, "scoring_seconds"),
    "a huge count": ({"lines": 10**40}, "lines"),
    "a negative count": ({"ok": -3}, "ok"),
    "an unknown status": ({"status": "great"}, "status"),
    "a list for the service": ({"service": [1, 2]}, "service"),
    "a damaged time scale": ({"service": {"kind": "simulated", "time_scale": "x"}}, "service.time_scale"),
    "a warm-up flag as text": ({"extra": {"sweep": "seed", "warmup": "no"}}, "extra.warmup"),
    "a sweep name as a number": ({"extra": {"sweep": 7}}, "extra.sweep"),
    "a latency of text": ({"latency": {"p50": "fast"}}, "latency.p50"),
    "a damaged timeline": ({"timeline": [[0.0, "x"]]}, "timeline"),
    "a commit as a number": ({"provenance": {"commit": 123, "dirty": False, "unknown": None}}, "provenance.commit"),
    "an unknown schema": ({"schema_version": 99}, "schema_version"),
    "no schema at all": ({"schema_version": None}, "schema_version"),
}


@pytest.mark.parametrize("name", list(HAND_EDITS))
def test_a_hand_edited_record_is_refused_naming_its_key(name):
    change, key = HAND_EDITS[name]
    with pytest.raises(RecordError, match=f"key '{key}"):
        parse_record(reference_record() | change)


def test_damaged_files_are_skipped_with_one_warning_line_each(tmp_path):
    good = reference_record()
    (tmp_path / "good.json").write_text(json.dumps(good))
    for i, (change, _) in enumerate(HAND_EDITS.values()):
        (tmp_path / f"bad{i:02d}.json").write_text(json.dumps(good | change))
    (tmp_path / "torn.json").write_text('{"schema": 1, "run_')
    (tmp_path / "list.json").write_text("[1, 2]")
    said = []
    records = read_records(tmp_path, warn=said.append)
    assert [r.record_file for r in records] == ["good.json"]
    assert len(said) == len(HAND_EDITS) + 2 and all(line.count("\n") == 0 for line in said)
    assert all(line.startswith("warning: skipped record ") for line in said)
    with pytest.raises(RecordError, match="bad00.json: key 'threads'"):
        read_records(tmp_path, strict=True)


def test_report_cli_on_hand_edited_records_warns_per_file_and_never_shows_a_traceback(tmp_path):
    from conftest import cli

    runs = tmp_path / "runs"
    shutil.copytree(SWEEP, runs / "reference")
    victims = sorted((runs / "reference").glob("2*.json"))[:len(HAND_EDITS)]
    for path, (change, _) in zip(victims, HAND_EDITS.values()):
        path.write_text(json.dumps(json.loads(path.read_text()) | change))
    proc = cli("report", "--runs", runs, "--out", tmp_path / "r", cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning: skipped record") == len(victims)


def test_a_new_record_carries_the_settings_model_and_this_process_provenance(tmp_path):
    from scoring_lib import provenance
    from scoring_lib.config import ClientConfig, RunConfig
    from scoring_lib.record import build_record, save_record
    from scoring_lib.settings import settings_record
    from scoring_lib.stats import RunStats

    config = RunConfig(input=tmp_path / "in.txt", client=ClientConfig(url="http://user:pw@127.0.0.1:1/score"))
    stats = RunStats(lines=3, counts={"ok": 3, "empty": 0, "error": 0}, scoring_seconds=1.5)
    rec = build_record(config, stats)
    assert rec.settings == settings_record(config) and "pw" not in json.dumps(rec.to_json())
    assert rec.provenance in (provenance.UNREAD, provenance.current()) and rec.schema_version == SCHEMA_VERSION
    [back] = read_records(tmp_path if save_record(rec, tmp_path) else None, strict=True)
    assert tidy_row(back)["lines"] == 3 and back.settings == rec.settings
    assert back.provenance == provenance.current()  # asked when saved


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
KEYS = sorted(set(reference_record()) | {"schema_version", "provenance", "settings"})


@settings(max_examples=300, deadline=None)
@given(edits=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=4), whole=JSON)
def test_any_json_is_a_record_or_one_record_error(edits, whole):
    for doc in (reference_record() | edits, whole):
        try:
            rec = parse_record(doc)
        except RecordError as exc:
            assert "\n" not in str(exc)
        else:
            assert list(tidy_row(rec)) == TIDY_COLUMNS
