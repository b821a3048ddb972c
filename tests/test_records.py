"""Run records: one file per run, loaded into one tidy table with the bound beside each run."""

import json
import math

from scoring_lib.records import load_runs, read_records, save_record
from scoring_lib.stats import in_flight_timeline, percentiles


def test_percentiles_and_timeline():
    p = percentiles([float(i) for i in range(1, 101)])
    assert p["p50"] == 50 and p["p90"] == 90 and p["p99"] == 99 and p["max"] == 100
    tl = in_flight_timeline([(0.0, 2.0), (1.0, 3.0), (1.5, 2.5)], 0.0, 4.0, points=8)
    assert dict((t, n) for t, n in tl)[2.0] == 2 and dict((t, n) for t, n in tl)[1.5] == 3


def test_concurrent_runs_write_separate_files(tmp_path):
    base = {"created": "2026-01-01T00:00:00+00:00", "engine": "asyncio", "schema": 1}
    a = save_record(base | {"run_id": "a" * 32}, tmp_path)
    b = save_record(base | {"run_id": "b" * 32}, tmp_path)
    assert a != b and len(read_records(tmp_path)) == 2


def test_tidy_rows_carry_bound_and_efficiency(tmp_path):
    rec = {"schema": 1, "status": "ok", "run_id": "x" * 32, "created": "2026-01-01T00:00:00+00:00",
           "engine": "asyncio", "threads": 1, "workers": None, "max_concurrent_tasks": 500, "connector_limit": 100,
           "service": {"kind": "embedded", "latency": 4.15, "capacity": 200, "time_scale": 0.1},
           "unique_requested": 2000, "scoring_seconds": 8.5, "engine_info": {"sessions": 1},
           "latency": {"p50": 0.415}, "extra": {}, "machine": {"cpu_count": 2}, "versions": {}}
    save_record(rec, tmp_path)
    df = load_runs(tmp_path)
    row = df.iloc[0]
    assert row["effective_pool"] == 100
    assert math.isclose(row["bound_seconds"], 20 * 0.415)
    assert math.isclose(row["efficiency"], 8.3 / 8.5)
