"""Findings of a newcomer's run from a fresh clone (the `harden` brief): special output paths, a key
given where its variable's name belongs, the open-file limit under auto, run.ipynb's counts, the
regression gate's threshold, stream inputs, a cache that cannot open, the event loop's variable,
and report.md's prose. Each error is one line with its own exit code."""

import os
import stat
import subprocess

import pytest

from scoring_lib import resources
from scoring_lib.cache import ScoreCache
from scoring_lib.errors import ConfigError, OutputError, ResourceLimitError
from scoring_lib.loops import EVENT_LOOP_ENV, event_loop_name
from scoring_lib.page import inline, md_cell, md_text
from scoring_lib.settings import ClientConfig, RunConfig
from scoring_lib.sweep import run_point

from conftest import REPO, cli, read_rows
from hostile import HostileServer, good
from test_hardening import PY, assert_one_line_error, bash, left_in_fs, needs_mount

QUIET = ["--no-progress", "--threads", "2", "--no-cache", "--no-record"]
NOWHERE = "http://127.0.0.1:9/"  # never contacted: every refusal here comes first


# ----------------------------------------------------------------- 1, 2. output on a special path
def _special(tmp_path, kind: str):
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind in ("null", "full"):  # copies of /dev/null and /dev/full: a regression must not replace the real ones
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3 if kind == "null" else 7))
        except PermissionError:
            pytest.skip("mknod needs CAP_MKNOD")
    elif kind == "socket":
        import socket
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    return path


@pytest.mark.parametrize("kind", ["fifo", "null", "full", "socket"])
def test_an_output_that_is_not_a_regular_file_is_refused_and_left_as_it_was(tmp_path, make_input, kind):
    node = _special(tmp_path, kind)
    before = os.stat(node).st_mode
    proc = cli("score", make_input(["a", "b"]), "--url", NOWHERE, "--output", node, *QUIET, timeout=60)
    assert "must be a regular file" in assert_one_line_error(proc, 2)
    assert os.stat(node).st_mode == before


def test_process_substitution_as_output_is_the_same_clear_refusal(tmp_path, make_input):
    path = make_input(["a"])
    proc = bash(f"cd {REPO} && {PY} score {path} --url {NOWHERE} --output >(cat > {tmp_path}/x) "
                f"{' '.join(QUIET)}", tmp_path)
    assert "must be a regular file" in assert_one_line_error(proc, 2)


def test_a_symlinked_output_writes_its_target_and_keeps_the_link(tmp_path, make_input):
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with HostileServer(lambda r: good()) as srv:
        proc = cli("score", make_input(["a", "b"]), "--url", srv.url, "--output", link, *QUIET)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [r["line"] for r in read_rows(target)] == [1, 2]


def test_an_output_ending_with_a_slash_that_is_no_folder_is_refused(tmp_path, make_input):
    proc = cli("score", make_input(["a"]), "--url", NOWHERE, "--output", f"{tmp_path}/newdir/", *QUIET, timeout=60)
    assert "ends with '/'" in assert_one_line_error(proc, 2)
    assert not (tmp_path / "newdir").exists()


# ----------------------------------------------------------------------------- 3. secret hygiene
def test_a_key_given_as_the_variable_name_is_never_echoed(tmp_path, make_input):
    path = make_input(["a"])
    proc = cli("score", path, "--api-key-env", "sk-live-abc123SECRET", *QUIET, timeout=60)
    line = assert_one_line_error(proc, 2)
    assert "sk-live" not in proc.stderr + proc.stdout and "NAME of an environment variable" in line
    profile = tmp_path / "p.yaml"
    profile.write_text(f'url: {NOWHERE}\napi_key_env: "sk-live-THISISNOTAVAR"\n')
    proc = cli("score", path, "--profile", profile, *QUIET, timeout=60)
    line = assert_one_line_error(proc, 2)
    assert "THISISNOTAVAR" not in proc.stderr + proc.stdout and "NAME of an environment variable" in line
    with pytest.raises(ConfigError) as caught:
        ClientConfig(url=NOWHERE, api_key_env="sk-live-xyz")
    assert "sk-live" not in str(caught.value)



def test_a_key_that_reads_as_a_variable_name_is_not_echoed_either(make_input):
    """A key of letters and digits alone passes as a variable's name: it is unset, and the warning and the
    refusal name "the variable named by --api-key-env", not it (only conventional NAMES are shown)."""
    proc = cli("score", make_input(["a"]), "--url", NOWHERE, "--api-key-env", "FAKEKEYa8f3k2j4h5g6d7s8a9", *QUIET,
               timeout=60)
    assert proc.returncode != 0 and "the variable named by --api-key-env" in proc.stderr
    assert "a8f3k2j4" not in proc.stderr + proc.stdout


# ------------------------------------------------------------------------ 4. open files and auto
def _config(**kw) -> RunConfig:
    return RunConfig(input="x.txt", client=ClientConfig(url=NOWHERE), threads=2, **kw)


def test_auto_ceiling_is_lowered_to_what_the_open_file_limit_allows(monkeypatch):
    monkeypatch.setattr(resources, "_hard_limit", lambda: 1024)
    fitted, warning = resources.fit_auto_ceiling(_config(max_concurrent_tasks="auto"), in_process_service=True)
    assert 1 < fitted.max_concurrent_tasks_max < 2000
    assert resources.files_needed(fitted, resources.sockets_needed(fitted)) <= 1024
    assert "ceiling lowered from 2000" in warning and "1024" in warning
    fixed = _config(max_concurrent_tasks=2000)
    assert resources.fit_auto_ceiling(fixed) == (fixed, None)  # a fixed C is the user's: refused, not changed


def test_an_auto_run_that_cannot_fit_names_the_ceiling_option(monkeypatch):
    import resource
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (10, 10))
    with pytest.raises(ResourceLimitError) as caught:
        resources.ensure_open_files(100, "--max-concurrent-tasks auto", "--max-concurrent-tasks-max")
    assert "lower --max-concurrent-tasks-max" in str(caught.value)


def test_auto_under_a_low_ulimit_runs_with_one_warning(tmp_path, make_input):
    path = make_input([f"line {i}" for i in range(600)])
    with HostileServer(lambda r: good()) as srv:
        proc = bash(f"ulimit -n 400 && cd {REPO} && {PY} score {path} --url {srv.url} --output {tmp_path}/o.jsonl "
                    f"--max-concurrent-tasks auto --max-concurrent-tasks-max 600 {' '.join(QUIET)}", tmp_path,
                    timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if "ceiling lowered" in line]
    assert len(read_rows(tmp_path / "o.jsonl")) == 600


# ---------------------------------------------------------------------- 5. run.ipynb's parameters
@pytest.mark.parametrize("counts", [{"lines": -5}, {"lines": 0}, {"repeats": 0}, {"warmup": -1}, {"lines": "3"}])
def test_run_point_checks_its_counts_as_a_grid_does(tmp_path, counts):
    with pytest.raises(ConfigError) as caught:
        run_point(records_dir=tmp_path / "runs", url=NOWHERE, **counts)
    assert next(iter(counts)) in str(caught.value)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 6. the regression gate's RATIO
@pytest.mark.parametrize("ratio", ["nan", "0.5", "inf", "-2"])
def test_fail_above_must_be_a_finite_ratio_of_at_least_one(tmp_path, ratio):
    proc = cli("report", "--compare", tmp_path / "a", tmp_path / "b", "--fail-above", ratio, "--out",
               tmp_path / "out", timeout=60)
    assert "--fail-above" in assert_one_line_error(proc, 2)


# --------------------------------------------------------------------------------- 7. small ones
def test_a_stream_input_needs_an_output(tmp_path):
    with HostileServer(lambda r: good()) as srv:
        proc = bash(f"{PY} score <(printf 'a\\nb\\n') --url {srv.url} {' '.join(QUIET)}", tmp_path,
                    env={"PYTHONPATH": str(REPO)})
    assert "--output" in assert_one_line_error(proc, 2)
    assert not (tmp_path / "results").exists()


@needs_mount
@pytest.mark.parametrize("size, fill", [("4k", 4096), ("32k", 0)])
def test_a_cache_that_cannot_open_on_a_full_disk_leaves_nothing(tmp_path, make_input, size, fill):
    """4 KiB filled: the cache's file can be created (an empty file takes no block), never written (SQLite says
    SQLITE_FULL). 32 KiB empty: the database page fits, its shared-memory file cannot grow (SQLite says 'disk
    I/O error', SQLITE_IOERR_SHMSIZE: it was exit 3, 'cannot open', on a disk that is simply full)."""
    (tmp_path / "fs").mkdir()
    path = make_input(["a"], "in.txt")
    fs = tmp_path / "fs"
    with HostileServer(lambda r: good()) as srv:
        script = (f"mount -t tmpfs -o size={size} tmpfs {fs} && head -c {fill} /dev/zero > {fs}/fill; cd {REPO} && "
                  f"{PY} score {path} --url {srv.url} --output {tmp_path}/o.jsonl --cache {fs}/c.sqlite "
                  f"--no-record --no-progress; rc=$?; ls -aR {fs} > {tmp_path}/after.txt; exit $rc")
        proc = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert "score cache" in assert_one_line_error(proc, 4)
    assert left_in_fs(tmp_path) == ["fill"], "the cache's files were left"


def test_a_cache_that_cannot_open_removes_what_it_created(tmp_path):
    (tmp_path / "c.sqlite-wal").mkdir()  # SQLite cannot open its write-ahead log here
    with pytest.raises(OutputError):
        ScoreCache(tmp_path / "c.sqlite", "ns")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite-wal"]


def test_a_cache_that_cannot_open_removes_the_folders_it_made(tmp_path, monkeypatch):
    import sqlite3

    from scoring_lib import cache

    def refuse(path, **_kw):
        open(path, "w").close()  # SQLite has created its file when the disk turns out full
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(cache.sqlite3, "connect", refuse)
    with pytest.raises(OutputError):
        ScoreCache(tmp_path / "new" / "folders" / "c.sqlite", "ns")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_event_loop_is_refused_naming_the_choices(make_input, monkeypatch):
    proc = cli("score", make_input(["a"]), "--url", NOWHERE, *QUIET, env={EVENT_LOOP_ENV: "bogus"}, timeout=60)
    line = assert_one_line_error(proc, 2)
    assert EVENT_LOOP_ENV in line and "asyncio" in line and "uvloop" in line
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert event_loop_name() == "asyncio"


def test_report_markdown_shows_arrows_and_comparisons_and_html_escapes_them():
    text = "C = 100 -> 2.00 s, C >= 200 ran 1.5x faster; a < b"
    assert md_text(text) == text and md_cell(text) == text
    assert "-&gt;" in str(inline(text)) and "&gt;=" in str(inline(text))
    assert md_text("<script>x</script> &amp;") == "&lt;script&gt;x&lt;/script&gt; &amp;amp;"
