import json

import pytest

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
