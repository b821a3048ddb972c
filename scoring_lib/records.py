"""Run records, one JSON file per run: the names other modules and notebooks import, gathered.

The typed record and its migration live in record.py, provenance in provenance.py, statistics in
stats.py, folders of records and the tidy frame in runs.py."""

from __future__ import annotations

from .provenance import git_commit, machine_info, package_versions
from .record import (SCHEMA_VERSION, RecordError, RunRecord, RunStatus, build_record, failure_record, migrate,
                     parse_record, save_record, settings_section)
from .runs import (load_runs, read_record, read_records, record_profile, select_records, sweep_of, sweeps_in,
                   tidy_frame, tidy_row)
from .stats import TIMELINE_POINTS, in_flight_timeline, percentiles

__all__ = ["SCHEMA_VERSION", "RecordError", "RunRecord", "RunStatus", "build_record", "failure_record", "migrate",
           "parse_record", "save_record", "settings_section", "git_commit", "machine_info", "package_versions",
           "load_runs", "read_record", "read_records", "record_profile", "select_records", "sweep_of", "sweeps_in",
           "tidy_frame", "tidy_row", "TIMELINE_POINTS", "in_flight_timeline", "percentiles"]
