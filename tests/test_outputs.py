import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring_lib.errors import ConfigError
from scoring_lib.outputs import OrderedRowWriter, Row


def test_rows_added_out_of_order_are_written_in_line_order(tmp_path):
    out = tmp_path / "sub" / "out.jsonl"
    w = OrderedRowWriter(out)
    for n in (3, 1, 4, 2):
        w.add(Row(n, n / 10, "ok", None, 1))
        assert not out.exists(), "the output must not appear before it is complete"
    assert w.pending == 0
    w.commit()
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {"line", "score", "status", "error", "attempts"}
    assert not list(tmp_path.glob("sub/.*.tmp"))


def test_commit_refuses_while_a_gap_remains(tmp_path):
    w = OrderedRowWriter(tmp_path / "out.jsonl")
    w.add(Row(2, 0.5, "ok", None, 1))
    assert w.pending == 1
    with pytest.raises(RuntimeError):
        w.commit()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_rows_are_strict_json_or_not_written(tmp_path):
    w = OrderedRowWriter(tmp_path / "out.jsonl")
    with pytest.raises(ValueError):
        w.add(Row(1, float("nan"), "ok", None, 1))
    w.abort()


def test_stale_temporaries_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_tmp = tmp_path / f".out.jsonl.{int(dead.stdout)}.tmp"
    live_tmp = tmp_path / f".out.jsonl.{os.getppid()}.tmp"  # a process that is alive
    other = tmp_path / f".other.jsonl.{int(dead.stdout)}.tmp"  # not this output's
    for p in (dead_tmp, live_tmp, other):
        p.write_text("partial")
    with pytest.raises(ConfigError, match="being written by another run"):  # a live run's output: not two writers
        OrderedRowWriter(tmp_path / "out.jsonl")
    assert not dead_tmp.exists() and live_tmp.exists() and other.exists()
    live_tmp.unlink()
    w = OrderedRowWriter(tmp_path / "out.jsonl")
    w.add(Row(1, 0.5, "ok", None, 1))
    w.commit()
    assert other.exists()


@given(line=st.integers(1, 10**9),
       score=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**6, 10**6)),
       status=st.sampled_from(["ok", "empty", "error"]), error=st.one_of(st.none(), st.text()),
       attempts=st.integers(0, 100))
@settings(max_examples=300, deadline=None)
def test_a_row_is_the_text_json_dumps_gives(line, score, status, error, attempts):
    row = Row(line, score, status, error, attempts)
    expected = json.dumps({"line": line, "score": score, "status": status, "error": error, "attempts": attempts},
                          ensure_ascii=False, allow_nan=False)
    assert row.to_json() == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_row_with_a_non_finite_score_is_refused(bad):
    with pytest.raises(ValueError):
        Row(1, bad, "ok", None, 1).to_json()
