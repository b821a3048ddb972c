"""Property: whatever bytes the input holds and whatever the service answers, the run writes exactly
one strict-JSON row per input line, in order, with the status the contract gives, and never raises."""

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring_lib import ClientConfig, RunConfig
from scoring_lib.pipeline import score_file

from hostile import HostileServer, reply, stable_choice

MAX_LINE = 256

pieces = st.one_of(
    st.text(max_size=20).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=12),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\xc3", b" ", b"\t", b"\xc2\xa0",
                     b"\n\n", b"x" * MAX_LINE, b"y" * (MAX_LINE + 1), b"z" * 3000]),
)
input_bytes = st.lists(pieces, max_size=40).map(b"".join)

finite = st.floats(allow_nan=False, allow_infinity=False)
bodies = st.one_of(
    finite.map(lambda x: (json.dumps({"score": x}), x)),
    st.integers(min_value=-10**6, max_value=10**6).map(lambda n: (json.dumps({"score": n}), float(n))),
    st.sampled_from(['{"score": NaN}', '{"score": Infinity}', '{"score": -Infinity}', '{"score": 1e400}',
                     '{"score": -1e999}', '{"score": 1' + '0' * 400 + '}']).map(lambda b: (b, None)),
    st.sampled_from(['{"score": "0.5"}', '{"score": true}', '{"score": null}', '[0.5]', '{}', '', 'null',
                     '[' * 5000 + ']' * 5000]).map(lambda b: (b, None)),
    st.text(max_size=30).map(lambda b: (b, None)),
)
statuses = st.sampled_from([200] * 8 + [400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504])
replies = st.lists(st.tuples(statuses, bodies), min_size=1, max_size=6)

STATE: dict = {"table": [(200, ('{"score": 0.5}', 0.5))]}


def behave(request):
    status, (body, _) = stable_choice(request.text, STATE["table"])
    return reply(status, body)


@pytest.fixture(scope="module")
def server():
    with HostileServer(behave) as srv:
        yield srv


def expected_rows(data: bytes, table) -> list:
    """The contract, restated: (status, score) per line."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    unterminated = not data.endswith(b"\n")
    out = []
    for i, raw in enumerate(lines):
        # "\r\n" is an ending; a "\r" on a last line without "\n" is text.
        if raw.endswith(b"\r") and not (unterminated and i == len(lines) - 1):
            raw = raw[:-1]
        if i == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if len(raw) > MAX_LINE:
            out.append(("error", None))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append(("error", None))
            continue
        if not text.strip():
            out.append(("empty", None))
            continue
        status, (_, score) = stable_choice(text, table)
        out.append(("ok", score) if status == 200 and score is not None and math.isfinite(score) else ("error", None))
    return out


def strict(line: str) -> dict:
    def refuse(name):
        raise AssertionError(f"{name} in output: not strict JSON")
    return json.loads(line, parse_constant=refuse)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=input_bytes, table=replies)
def test_one_strict_row_per_line_in_order_with_the_contract_status(server, data, table):
    STATE["table"] = table
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.txt"
        path.write_bytes(data)
        client = ClientConfig(url=server.url, max_retries=1, backoff_base=0.0, backoff_cap=0.0, timeout=60.0)
        config = RunConfig(input=path, client=client, output=Path(tmp) / "out.jsonl", cache=Path(tmp) / "c.sqlite",
                           records_dir=None, progress=False, threads=1, max_concurrent_tasks=8,
                           max_line_bytes=MAX_LINE)
        result = score_file(config, write_record=False)  # raising at all would be the failure
        rows = [strict(line) for line in result.output.read_text(encoding="utf-8").splitlines()]
    want = expected_rows(data, table)
    assert [r["line"] for r in rows] == list(range(1, len(want) + 1))
    assert [(r["status"], r["score"]) for r in rows] == want
    for r in rows:
        assert (r["error"] is None) == (r["status"] != "error")
        assert isinstance(r["attempts"], int) and 0 <= r["attempts"] <= 2
    assert result.exit_code == (1 if any(s == "error" for s, _ in want) else 0)
