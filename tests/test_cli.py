"""The CLI as a user meets it: exit codes, one-line errors, resume, Ctrl-C, secrets."""

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scoring_lib import ServerConfig
from scoring_lib.server import ServiceProcess

from conftest import REPO, cli, read_rows

FAST_SERVER = ["--server-time-scale", "0.01"]


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


def assert_one_line_error(proc, code=2):
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["missing.txt"], "not found"),
    (["."], "directory"),
    (["IN", "--url", "ftp://example.invalid/x"], "http"),
    (["IN", "--max-concurrent-tasks", "0"], "at least 1"),
    (["IN", "--max-concurrent-tasks", "-3"], "at least 1"),
    (["IN", "--threads", "0"], "at least 1"),
    (["IN", "--connector-limit", "lots"], "whole number"),
    (["IN", "--frobnicate"], "unrecognized"),
    (["IN", "--engine", "spark"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, make_input, args, needle):
    make_input(["hello"], "in.txt")
    args = [str(tmp_path / "in.txt") if a == "IN" else a for a in args]
    before = files_under(tmp_path)
    proc = cli("score", *args, "--output", tmp_path / "o.jsonl", "--records-dir", tmp_path / "runs",
               "--cache", tmp_path / "c.sqlite", *FAST_SERVER, cwd=tmp_path)
    assert needle in assert_one_line_error(proc)
    assert files_under(tmp_path) == before


def test_unreadable_input_is_exit_2(tmp_path, make_input):
    import os
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    path = make_input(["x"])
    path.chmod(0)
    assert "cannot read" in assert_one_line_error(cli("score", path, cwd=tmp_path))


def test_success_is_exit_0_with_summary_and_default_paths(tmp_path, make_input):
    make_input(["alpha", "beta", ""], "words.txt")
    proc = cli("score", "words.txt", *FAST_SERVER, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 lines: 2 ok, 1 empty, 0 error; 2 requests, 0 retries" in proc.stdout
    rows = read_rows(tmp_path / "results/scores/words.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok", "empty"]
    assert len(list((tmp_path / "results/runs").glob("*.json"))) == 1
    assert (tmp_path / "results/cache/scores.sqlite").exists()


def test_some_errors_are_exit_1_with_a_complete_output(tmp_path, make_input):
    make_input([b"ok line".decode(), "x" * 50, "fine"], "in.txt")
    proc = cli("score", "in.txt", "--max-line-bytes", "20", *FAST_SERVER, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    rows = read_rows(tmp_path / "results/scores/in.jsonl")
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]


def test_service_down_gives_error_rows_and_exit_1(tmp_path, make_input):
    make_input(["a", "b"], "in.txt")
    proc = cli("score", "in.txt", "--url", "http://127.0.0.1:9/score", "--max-retries", "2",
               "--backoff-base", "0.01", cwd=tmp_path)
    assert proc.returncode == 1
    rows = read_rows(tmp_path / "results/scores/in.jsonl")
    assert all(r["status"] == "error" and r["attempts"] == 3 for r in rows)


@pytest.fixture
def serve():
    """`python -m scoring_lib serve` in a child process on a free loopback port."""
    servers = []

    def start(*, env=None, **config):
        servers.append(ServiceProcess(ServerConfig(**config), env=env).start())
        return servers[-1]
    yield start
    for s in servers:
        s.stop()


def cached_count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    except sqlite3.OperationalError:  # the file exists a moment before its table does
        return 0
    finally:
        db.close()


def _sigint_as_a_terminal_sends_it() -> None:
    # A run started in the background by a non-interactive shell (as a CI job may be) inherits SIGINT
    # ignored, and Python then keeps it ignored: the child gets the disposition a terminal's Ctrl-C meets.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_score(tmp_path, url, *extra):
    return subprocess.Popen([sys.executable, "-m", "scoring_lib", "score", str(tmp_path / "in.txt"), "--url", url,
                             "--cache", str(tmp_path / "c.sqlite"), "--output", str(tmp_path / "out.jsonl"),
                             "--records-dir", str(tmp_path / "runs"), "--max-concurrent-tasks", "10", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_as_a_terminal_sends_it)


def wait_for_cache(path: Path, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.exists() and cached_count(path) >= at_least:
                return
        except sqlite3.OperationalError:  # the file is there, its table not yet
            pass
        time.sleep(0.05)
    raise AssertionError("the run never cached enough scores")


def test_a_killed_run_resumes_requesting_at_most_the_lines_that_were_in_flight(tmp_path, make_input, serve):
    lines = 300
    make_input([f"resumable line {i}" for i in range(lines)], "in.txt")
    svc = serve(latency=0.1, capacity=0)
    first = start_score(tmp_path, svc.url)
    wait_for_cache(tmp_path / "c.sqlite", 60)
    first.kill()
    first.wait()
    assert not (tmp_path / "out.jsonl").exists()
    cached = cached_count(tmp_path / "c.sqlite")
    first_requests = svc.stats().requests
    assert first_requests <= cached + 10  # what was not cached was at most what was in flight
    second = start_score(tmp_path, svc.url)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    second_requests = svc.stats().requests - first_requests
    assert second_requests == lines - cached
    assert first_requests + second_requests <= lines + 10
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == lines and all(r["status"] == "ok" for r in rows)


def test_ctrl_c_exits_130_keeps_the_cache_and_writes_no_output(tmp_path, make_input, serve):
    make_input([f"interrupted line {i}" for i in range(400)], "in.txt")
    svc = serve(latency=0.1, capacity=0)
    run = start_score(tmp_path, svc.url)
    wait_for_cache(tmp_path / "c.sqlite", 30)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists() and not list(tmp_path.glob(".out.jsonl*"))
    assert cached_count(tmp_path / "c.sqlite") >= 30


def test_the_api_key_never_appears_in_any_file_or_output(tmp_path, make_input, serve):
    key = "sk-test-9f8e7d6c5b4a"
    make_input([f"secret line {i}" for i in range(20)], "in.txt")
    svc = serve(latency=0, require_api_key=key)
    proc = cli("score", "in.txt", "--url", svc.url, cwd=tmp_path, env={"SCORING_API_KEY": key})
    assert proc.returncode == 0, proc.stderr
    assert svc.stats().ok == 20
    written = files_under(tmp_path)
    assert any(p.suffix == ".json" for p in written) and any(p.suffix == ".jsonl" for p in written)
    for p in written:
        assert key.encode() not in p.read_bytes(), p
    assert key not in proc.stdout + proc.stderr
    wrong = cli("score", "in.txt", "--url", svc.url, "--no-cache", "--output", "w.jsonl", "--probe-grace", "60", cwd=tmp_path,
                env={"SCORING_API_KEY": "wrong"})
    # A 401 on every first request fails fast (issue 9): exit 1, the cause on stderr, nothing written.
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr and not (tmp_path / "w.jsonl").exists()


def test_probe_reports_determinism_batch_refusal_and_latency(tmp_path):
    proc = cli("probe", "--samples", "5", *FAST_SERVER, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "deterministic: yes" in proc.stdout
    assert "batch bodies: refused (data: 422, items: 422, lines: 422)" in proc.stdout
    assert "latency over 5 requests" in proc.stdout


def test_probe_json(tmp_path):
    proc = cli("probe", "--samples", "3", "--json", *FAST_SERVER, cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert report["deterministic"] is True and report["batch_refused"] is True
    assert report["latency"]["p50"] >= 0.04


def test_serve_rejects_a_busy_port(serve):
    svc = serve(latency=0)
    port = svc.url.split(":")[2].split("/")[0]
    proc = cli("serve", "--port", port, timeout=20)
    assert "cannot listen" in assert_one_line_error(proc)


def test_unwritable_output_is_one_line_exit_3(tmp_path, make_input):
    make_input(["a"], "in.txt")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    proc = cli("score", "in.txt", "--output", "blocker/out.jsonl", *FAST_SERVER, cwd=tmp_path)
    assert "cannot write output" in assert_one_line_error(proc, 3) and "not a folder" in proc.stderr
    proc = cli("score", "in.txt", "--cache", "blocker/c.sqlite", *FAST_SERVER, cwd=tmp_path)
    assert "score cache" in assert_one_line_error(proc, 3)


# ------------------------------------------------------------------------------- `-`: standard input
def sh(script: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=timeout)


PY = f"{sys.executable} -m scoring_lib"


def test_dash_reads_a_pipe_to_its_end_and_resumes_from_the_cache(tmp_path, serve):
    """`score -` reads standard input: a pipe that pauses half-way and ends without a newline is read
    to its last line, progress has no total, and a second run of the same stream comes from the cache."""
    svc = serve(latency=0)
    feed = f"{{ seq 1 1500; sleep 0.5; seq 1501 3000; printf 'last line'; }}"
    run = f"{feed} | {PY} score - --url {svc.url} --progress --threads 2 --output out.jsonl"
    first = sh(f"cd {tmp_path} && {run}", REPO)
    assert first.returncode == 0, first.stderr
    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["line"] for r in rows] == list(range(1, 3002)) and all(r["status"] == "ok" for r in rows)
    assert "3001 lines: 3001 ok" in first.stdout and "0 from cache" in first.stdout
    assert "/3001" not in first.stderr and re.search(r"\d+line \[", first.stderr)  # progress: a count, no total
    record = json.loads(next((tmp_path / "results/runs").glob("*.json")).read_text())
    assert record["input"] == "-"
    again = sh(f"cd {tmp_path} && {run}", REPO)
    assert again.returncode == 0, again.stderr
    assert "0 requests" in again.stdout and "3001 from cache" in again.stdout
    assert read_rows(tmp_path / "out.jsonl") == [r | {"attempts": 0} for r in rows]


@pytest.mark.parametrize("feed", ["printf 'a\\nb\\n' |", "< in.txt"])
def test_dash_without_output_is_one_line_exit_2_as_two_piped_runs_would_share_a_name(tmp_path, serve, feed):
    """`cat a.txt | score -` and `cat b.txt | score -` in one folder wrote one default output
    (results/scores/stdin.jsonl), each run's results replacing the other's: `-` needs --output."""
    svc = serve(latency=0)
    (tmp_path / "in.txt").write_text("a\nb\n")
    proc = sh(f"cd {tmp_path} && {feed} {PY} score - --url {svc.url} --no-record", REPO)
    line = assert_one_line_error(proc)
    assert "input - (standard input) needs --output PATH" in line and "stdin.jsonl" in line
    assert not (tmp_path / "results/scores").exists()


def test_two_runs_writing_one_output_at_once_the_second_is_refused_in_one_line(tmp_path, serve):
    """`score x/in.txt` and `score y/in.txt` both write results/scores/in.jsonl: while one is writing it
    (its temporary .in.jsonl.PID.tmp, PID alive), the other is refused (exit 2) instead of replacing its rows."""
    svc = serve(latency=0)
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "in.txt").write_text(f"{folder} 1\n{folder} 2\n")
    writing = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (tmp_path / "results/scores").mkdir(parents=True)
        (tmp_path / f"results/scores/.in.jsonl.{writing.pid}.tmp").write_text("")
        proc = sh(f"cd {tmp_path} && {PY} score y/in.txt --url {svc.url} --no-record --no-cache", REPO)
        line = assert_one_line_error(proc)
        assert f"being written by another run (process {writing.pid})" in line and "--output" in line
    finally:
        writing.communicate(b"")
    again = sh(f"cd {tmp_path} && {PY} score y/in.txt --url {svc.url} --no-record --no-cache", REPO)
    assert again.returncode == 0, again.stderr  # its writer gone, the temporary is stale: removed, not a refusal
    assert len(read_rows(tmp_path / "results/scores/in.jsonl")) == 2
    assert not list((tmp_path / "results/scores").glob(".in.jsonl.*.tmp"))


def test_dash_redirected_from_a_file_is_counted_and_read_from_where_it_stands(tmp_path, make_input, serve):
    """Standard input redirected from a regular file is counted (a total for progress), from the offset
    the shell left it at: a line read before the run is not scored again."""
    svc = serve(latency=0)
    make_input([f"item {i}" for i in range(1, 201)], "in.txt")
    proc = sh(f"{{ read -r header; {PY} score - --url {svc.url} --progress --output {tmp_path}/o.jsonl "
              f"--no-cache --no-record; }} < {tmp_path}/in.txt", REPO)
    assert proc.returncode == 0, proc.stderr
    assert "/199 [" in proc.stderr and "199 lines: 199 ok" in proc.stdout
    assert len(read_rows(tmp_path / "o.jsonl")) == 199


def test_dash_on_a_closed_stdin_is_one_line_exit_2(tmp_path):
    proc = sh(f"{PY} score - --server-time-scale 0.01 --output {tmp_path}/o.jsonl <&-", REPO)
    assert "standard input is closed" in assert_one_line_error(proc)
    assert not (tmp_path / "o.jsonl").exists()


def test_probe_ramp_takes_its_input_from_a_pipe(tmp_path, serve):
    """`probe --ramp --input -`: the lines sent and the line count come from one read of the pipe."""
    svc = serve(latency=0.02)
    proc = sh(f"{{ seq 1 250; seq 1 50; echo; }} | {PY} probe --ramp --json --input - --url {svc.url} "
              "--max-concurrent-tasks 4 --step-seconds 0.3", REPO)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["input_lines"] == 250 and data["predicted_seconds"] > 0  # distinct non-empty lines
    assert svc.stats().ok > 0


def test_help_says_dash_is_standard_input():
    assert "- reads standard input" in " ".join(cli("score", "--help").stdout.split())
    assert "- = standard input" in " ".join(cli("probe", "--help").stdout.split())


# ------------------------------------------------------------------------------- a profile's api_key_env
def _profile_yaml(path: Path, url: str, api_key_env: str) -> Path:
    from scoring_lib.service import ServiceProfile

    return ServiceProfile(url=url, name="prod", api_key_env=api_key_env).save(path)


def test_score_with_a_profile_reads_the_key_from_the_variable_it_names(tmp_path, make_input, serve, monkeypatch):
    """`score --profile` sends the key held by the profile's api_key_env ($SCORING_API_KEY is another
    service's here); the key is in no file, record, output or message, even from a service that echoes
    it; --api-key-env says otherwise; a named variable that is unset is one warning, and no key is sent."""
    monkeypatch.delenv("SCORING_API_KEY", raising=False)
    key = "prod-key-5e4d3c2b1a"
    make_input([f"line {i}" for i in range(30)], "in.txt")
    svc = serve(latency=0, require_api_key=key)
    prof = _profile_yaml(tmp_path / "prod.yaml", svc.url, "PROD_SCORING_KEY")
    env = {"PROD_SCORING_KEY": key, "SCORING_API_KEY": "another-services-key"}
    proc = cli("score", "in.txt", "--profile", prof, "--no-progress", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "30 ok" in proc.stdout and svc.stats().ok == 30 and proc.stderr == ""
    record = json.loads(next((tmp_path / "results/runs").glob("*.json")).read_text())
    assert record["service"]["profile"]["api_key_env"] == "PROD_SCORING_KEY"  # the name, never the key
    # --api-key-env names another variable: the profile's is not used (here: a wrong key, 401, fail fast)
    other = cli("score", "in.txt", "--profile", prof, "--api-key-env", "SCORING_API_KEY", "--no-cache",
                "--output", "other.jsonl", cwd=tmp_path, env=env)
    assert other.returncode == 1 and "HTTP 401" in other.stderr
    # the profile's variable unset: one warning, no key sent (not $SCORING_API_KEY in its place)
    unset = cli("score", "in.txt", "--profile", prof, "--no-cache", "--output", "unset.jsonl", cwd=tmp_path,
                env={"SCORING_API_KEY": key})
    assert unset.returncode == 1 and "HTTP 401" in unset.stderr
    assert unset.stderr.count("warning: $PROD_SCORING_KEY") == 1 and "profile prod" in unset.stderr
    # a careless service echoes the Authorization header in its error bodies: masked in rows and messages
    from hostile import HostileServer, echo

    with HostileServer(lambda r: echo(400)) as bad:
        echoed = _profile_yaml(tmp_path / "echo.yaml", bad.url, "PROD_SCORING_KEY")
        leak = cli("score", "in.txt", "--profile", echoed, "--no-cache", "--output", "echo.jsonl", "--no-progress",
                   cwd=tmp_path, env=env)
        assert any(key in json.dumps(r.headers) for r in bad.requests)  # the key was sent, and echoed back
    assert leak.returncode == 1 and "request was" in (tmp_path / "echo.jsonl").read_text()
    for out in (proc, other, unset, leak):
        assert key not in out.stdout + out.stderr
    for p in files_under(tmp_path):
        assert key.encode() not in p.read_bytes(), p


def test_a_password_in_the_url_is_never_shown_or_written(tmp_path, make_input):
    make_input(["a", "b"], "in.txt")
    proc = cli("score", "in.txt", "--url", "http://user:pw-s3cr3t@127.0.0.1:9/score", "--max-retries", "0",
               cwd=tmp_path)
    assert proc.returncode == 1
    assert "pw-s3cr3t" not in proc.stdout + proc.stderr
    for p in files_under(tmp_path):
        assert b"pw-s3cr3t" not in p.read_bytes(), p
    bad = cli("score", "in.txt", "--url", "ftp://user:pw-s3cr3t@host/x", cwd=tmp_path)
    assert "pw-s3cr3t" not in bad.stderr and "***" in assert_one_line_error(bad)
