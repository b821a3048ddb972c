"""The CLI under hostile services, odd inputs and a hostile environment (issue 10): no hang, no
lost line, no traceback, no leaked key, each error one line with its own exit code."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scoring_lib import score_file, watchdog
from scoring_lib.client import ScoringClient
from scoring_lib.errors import RunStalled

from conftest import REPO, cli, read_rows, run_config
from hostile import HostileServer, echo, good, hang, redirect, reset, score, slow_body, stable_choice

QUIET = ["--no-progress", "--threads", "2"]


def assert_one_line_error(proc, code):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def strict_rows(path: Path) -> list[dict]:
    def no_constants(name):
        raise ValueError(f"{name} is not strict JSON")
    return [json.loads(line, parse_constant=no_constants) for line in path.read_text(encoding="utf-8").splitlines()]


def bash(script: str, cwd: Path, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ) | (env or {}))


PY = f"{sys.executable} -m scoring_lib"


# ------------------------------------------------------------------------------- 1. piped input
def test_process_substitution_is_read_once_and_every_line_scored(tmp_path):
    with HostileServer(lambda r: good()) as srv:
        proc = bash(f"cd {REPO} && {PY} score <(printf 'a\\nb\\nc\\n') --url {srv.url} --output {tmp_path}/o.jsonl "
                    f"--no-cache --no-record --no-progress", tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = strict_rows(tmp_path / "o.jsonl")
    assert [r["line"] for r in rows] == [1, 2, 3] and all(r["status"] == "ok" for r in rows)
    assert "3 lines" in proc.stdout


def test_a_fifo_streams_like_a_file(tmp_path):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    with HostileServer(lambda r: good()) as srv:
        run = subprocess.Popen([sys.executable, "-m", "scoring_lib", "score", str(fifo), "--url", srv.url,
                                "--output", str(tmp_path / "o.jsonl"), "--no-cache", "--no-record", *QUIET],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with open(fifo, "w") as w:
            for i in range(500):
                w.write(f"line {i}\n")
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    rows = strict_rows(tmp_path / "o.jsonl")
    assert [r["line"] for r in rows] == list(range(1, 501))


def test_stdin_pipe_via_dev_stdin(tmp_path):
    with HostileServer(lambda r: good()) as srv:
        proc = cli("score", "/dev/stdin", "--url", srv.url, "--output", tmp_path / "o.jsonl", "--no-cache",
                   "--no-record", *QUIET, input="x\ny\n")
    assert proc.returncode == 0, proc.stderr
    assert len(strict_rows(tmp_path / "o.jsonl")) == 2


# ------------------------------------------------------------------------------- 2. non-finite scores
@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_one_non_finite_score_is_one_error_row_and_the_run_finishes(tmp_path, make_input, bad):
    lines = [f"text {i}" for i in range(200)]
    path = make_input(lines, "in.txt")
    with HostileServer(lambda r: score(bad) if r.text == "text 77" else good()) as srv:
        args = ["score", path, "--url", srv.url, "--output", tmp_path / "o.jsonl", "--cache", tmp_path / "c.sqlite",
                "--no-record", "--max-retries", "1", "--backoff-base", "0", *QUIET]
        first = cli(*args)
        second = cli(*args)  # the rerun finishes too, and asks only for the line that failed
        asked_again = [t for t in srv.texts()[200 + 1:]]
    for proc in (first, second):
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    rows = strict_rows(tmp_path / "o.jsonl")
    assert len(rows) == 200
    assert rows[77]["status"] == "error" and rows[77]["score"] is None and "finite" in rows[77]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 199
    assert set(asked_again) == {"text 77"}


# ------------------------------------------------------------------------------- 3. bodies that never end
@pytest.mark.parametrize("action", ["slow_body", "hang"])
def test_a_body_that_never_ends_cannot_hang_the_run(tmp_path, make_input, action):
    path = make_input(["a", "b"], "in.txt")
    act = slow_body(0.5) if action == "slow_body" else hang()
    with HostileServer(lambda r: act if r.text == "b" else good()) as srv:
        t0 = time.monotonic()
        proc = cli("score", path, "--url", srv.url, "--timeout", "1", "--max-retries", "1", "--backoff-base", "0",
                   "--output", tmp_path / "o.jsonl", "--no-cache", "--no-record", *QUIET, timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    rows = strict_rows(tmp_path / "o.jsonl")
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "error" and "timeout" in rows[1]["error"]
    assert took < 45, took  # the slow body alone would take over 8 minutes


# ------------------------------------------------------------------------------- 4. the key
def test_a_service_echoing_the_key_never_puts_it_in_any_file_or_output(tmp_path, make_input):
    key = "sk-hostile-7f3a9c"
    path = make_input(["one", "two"], "in.txt")
    env = {"SCORING_API_KEY": key}
    with HostileServer(lambda r: echo(503) if r.text == "two" else echo(401)) as srv:
        run = cli("score", path, "--url", srv.url, "--max-retries", "1", "--backoff-base", "0", "--cache",
                  tmp_path / "c.sqlite", "--records-dir", tmp_path / "runs", "--output", tmp_path / "o.jsonl",
                  *QUIET, env=env)
        probe = cli("probe", "--url", srv.url, "--samples", "2", "--max-retries", "0", env=env)
        probe_json = cli("probe", "--url", srv.url, "--samples", "2", "--max-retries", "0", "--json", env=env)
        assert srv.requests[0].headers["authorization"] == f"Bearer {key}"
    assert run.returncode == 1
    assert "HTTP 401" in strict_rows(tmp_path / "o.jsonl")[0]["error"]
    for proc in (run, probe, probe_json):
        assert key not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert "HTTP 401" in probe.stdout
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f


# ------------------------------------------------------------------------------- 5. disk and paths
def test_output_that_is_a_directory_is_exit_2_and_nothing_written(tmp_path, make_input):
    path = make_input(["a"], "in.txt")
    (tmp_path / "outdir").mkdir()
    with HostileServer(lambda r: good()) as srv:
        proc = cli("score", path, "--url", srv.url, "--output", tmp_path / "outdir", "--no-cache", "--no-record",
                   *QUIET)
        assert not srv.requests
    assert "is a directory" in assert_one_line_error(proc, 2)
    assert list((tmp_path / "outdir").iterdir()) == []


def test_output_equal_to_the_input_is_refused_and_the_input_kept(tmp_path, make_input):
    path = make_input(["a", "b"], "in.txt")
    before = path.read_bytes()
    with HostileServer(lambda r: good()) as srv:
        for out in (path, tmp_path / "." / "in.txt"):
            proc = cli("score", path, "--url", srv.url, "--output", out, "--no-cache", "--no-record", *QUIET)
            assert "is the input file" in assert_one_line_error(proc, 2)
    assert path.read_bytes() == before


def test_output_under_a_file_is_exit_3(tmp_path, make_input):
    path = make_input(["a"], "in.txt")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with HostileServer(lambda r: good()) as srv:
        proc = cli("score", path, "--url", srv.url, "--output", tmp_path / "blocker" / "o.jsonl", "--no-cache",
                   "--no-record", *QUIET)
    assert "cannot write output" in assert_one_line_error(proc, 3)


def _can_mount() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs unshare -rm with tmpfs mounts")


def in_small_fs(tmp_path: Path, args: list, size: str = "64k", ro: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI with tmp_path/fs a fresh tmpfs of `size` (or read-only), in a private mount namespace."""
    fs = tmp_path / "fs"
    fs.mkdir(exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    cmd = " ".join(f"'{a}'" for a in map(str, args))
    script = (f"mount -t tmpfs -o {opts} tmpfs {fs} && cd {REPO} && {PY} {cmd}; rc=$?; "
              f"ls -aR {fs} > {tmp_path}/after.txt; exit $rc")
    return subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True, timeout=120)


def left_in_fs(tmp_path: Path) -> list:
    """What the small file system held after the run (from `ls -aR`), folders' headers left out."""
    return [n for n in (tmp_path / "after.txt").read_text().split() if n not in (".", "..") and not n.endswith(":")]


@needs_mount
def test_output_on_a_full_disk_is_exit_4_and_leaves_no_temporary(tmp_path, make_input):
    path = make_input([f"line number {i} " + "x" * 100 for i in range(3000)], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        proc = in_small_fs(tmp_path, ["score", path, "--url", srv.url, "--output", tmp_path / "fs" / "o.jsonl",
                                      "--no-cache", "--no-record", *QUIET, "--max-concurrent-tasks", "64"])
    assert "disk is full" in assert_one_line_error(proc, 4) or "No space left" in proc.stderr
    assert proc.returncode == 4
    assert left_in_fs(tmp_path) == [], "a torn output or temporary was left"


@needs_mount
def test_cache_on_a_full_disk_is_exit_4(tmp_path, make_input):
    path = make_input([f"line number {i} " + "x" * 100 for i in range(3000)], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        proc = in_small_fs(tmp_path, ["score", path, "--url", srv.url, "--output", tmp_path / "o.jsonl",
                                      "--cache", tmp_path / "fs" / "c.sqlite", "--no-record", *QUIET], size="48k")
    assert "score cache" in assert_one_line_error(proc, 4)
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".o.jsonl.*"))


@needs_mount
def test_read_only_output_folder_is_exit_3(tmp_path, make_input):
    path = make_input(["a"], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        proc = in_small_fs(tmp_path, ["score", path, "--url", srv.url, "--output", tmp_path / "fs" / "o.jsonl",
                                      "--no-cache", "--no-record", *QUIET], ro=True)
    assert "Read-only" in assert_one_line_error(proc, 3)


@needs_mount
@pytest.mark.parametrize("how", ["read-only", "full"])
def test_a_failed_record_write_after_a_good_run_is_a_warning(tmp_path, make_input, how):
    path = make_input(["a", "b"], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        args = ["score", path, "--url", srv.url, "--output", tmp_path / "o.jsonl", "--no-cache", "--records-dir",
                tmp_path / "fs" / "runs", *QUIET]
        # A 4 KiB tmpfs holds the records folder but not a record (several KiB of JSON).
        proc = in_small_fs(tmp_path, args, ro=True) if how == "read-only" else in_small_fs(tmp_path, args, size="4k")
    assert proc.returncode == 0, proc.stderr
    assert "warning: run record not written" in proc.stderr and "Traceback" not in proc.stderr
    assert len(strict_rows(tmp_path / "o.jsonl")) == 2
    if how == "full":
        assert not [name for name in left_in_fs(tmp_path) if name.endswith(".tmp")]


# ------------------------------------------------------------------------------- 6. open-file limit
def test_fd_limit_too_low_for_the_concurrency_is_exit_5_before_any_request(tmp_path, make_input):
    path = make_input([f"l{i}" for i in range(6000)], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        proc = bash(f"ulimit -n 1024 && cd {REPO} && {PY} score {path} --url {srv.url} --max-concurrent-tasks 5000 "
                    f"--output {tmp_path}/o.jsonl --no-cache --no-record --no-progress", tmp_path)
        assert not srv.requests
    line = assert_one_line_error(proc, 5)
    assert "open files" in line and "ulimit -n" in line
    assert not (tmp_path / "o.jsonl").exists()


def test_fd_limit_too_low_for_the_threads_names_threads(tmp_path, make_input):
    """Each event loop holds files of its own: when the threads ask for most of them, the error names
    --threads (lowering --max-concurrent-tasks could not help)."""
    path = make_input(["a", "b", "c"], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        proc = bash(f"ulimit -n 1024 && cd {REPO} && {PY} score {path} --url {srv.url} --threads 5000 "
                    f"--output {tmp_path}/o.jsonl --no-cache --no-record --no-progress", tmp_path)
        assert not srv.requests
    line = assert_one_line_error(proc, 5)
    assert "--threads 5000 needs" in line and "lower --threads," in line and "max-concurrent" not in line


def test_fd_soft_limit_is_raised_to_the_hard_limit_when_that_is_enough(tmp_path, make_input):
    path = make_input([f"l{i}" for i in range(1500)], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        proc = bash(f"ulimit -Sn 256 && cd {REPO} && {PY} score {path} --url {srv.url} --max-concurrent-tasks 1200 "
                    f"--output {tmp_path}/o.jsonl --no-cache --no-record --no-progress", tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = strict_rows(tmp_path / "o.jsonl")
    assert len(rows) == 1500 and all(r["status"] == "ok" for r in rows)


# ------------------------------------------------------------------------------- 8. signals
def _start_slow_run(tmp_path, path, url):
    return subprocess.Popen([sys.executable, "-m", "scoring_lib", "score", str(path), "--url", url, "--output",
                             str(tmp_path / "o.jsonl"), "--cache", str(tmp_path / "c.sqlite"), "--no-record",
                             *QUIET], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "terminated"), (signal.SIGHUP, 129, "hung up")])
def test_sigterm_and_sighup_exit_with_a_message_and_no_temporary(tmp_path, make_input, sig, code, said):
    """SIGHUP (the terminal closed) is SIGTERM's twin: one line, exit 128 + signal, nothing torn left."""
    path = make_input([f"t{i}" for i in range(50)], "in.txt")
    with HostileServer(lambda r: good(0.2) if r.index < 20 else hang()) as srv:
        run = _start_slow_run(tmp_path, path, srv.url)
        deadline = time.monotonic() + 30
        while len(srv.requests) < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".o.jsonl.*.tmp")), "the run should be writing aside"
        run.send_signal(sig)
        out, err = run.communicate(timeout=30)
    assert run.returncode == code, err
    assert err.startswith(f"error: {said}:") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob(".o.jsonl*")) and not (tmp_path / "o.jsonl").exists()


def test_the_next_run_cleans_the_temporary_a_sigkill_left(tmp_path, make_input):
    path = make_input([f"t{i}" for i in range(50)], "in.txt")
    with HostileServer(lambda r: good() if r.index < 20 else hang()) as srv:
        run = _start_slow_run(tmp_path, path, srv.url)
        deadline = time.monotonic() + 30
        while len(srv.requests) < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        run.kill()
        run.wait()
        stale = list(tmp_path.glob(".o.jsonl.*.tmp"))
        assert stale, "SIGKILL leaves the temporary behind"
    with HostileServer(lambda r: good()) as srv:
        proc = cli("score", path, "--url", srv.url, "--output", tmp_path / "o.jsonl", "--cache", tmp_path / "c.sqlite",
                   "--no-record", *QUIET)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob(".o.jsonl*")), "the stale temporary of the killed run is still there"
    assert len(strict_rows(tmp_path / "o.jsonl")) == 50


# ------------------------------------------------------------------------------- 9. concurrency >> lines
def test_huge_concurrency_on_a_tiny_file_is_cheap(tmp_path, make_input):
    # Before: one worker coroutine per unit of concurrency, 1.5 GB and 22 s for three lines.
    path = make_input(["a", "b", "c"], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        run = subprocess.Popen([sys.executable, "-m", "scoring_lib", "score", str(path), "--url", srv.url,
                                "--max-concurrent-tasks", "1000000", "--output", str(tmp_path / "o.jsonl"),
                                "--no-cache", "--no-record", *QUIET], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        _, status, usage = os.wait4(run.pid, 0)
        run.returncode = os.waitstatus_to_exitcode(status)
        err = run.stderr.read().decode()
        run.stderr.close()
    assert run.returncode == 0, err
    assert usage.ru_maxrss / 1024 < 400, f"peak RSS {usage.ru_maxrss / 1024:.0f} MB for three lines"
    assert len(strict_rows(tmp_path / "o.jsonl")) == 3


def test_embedded_service_fd_check_counts_only_the_lines_there_are(tmp_path, make_input):
    path = make_input(["a", "b", "c"], "in.txt")
    proc = bash(f"ulimit -n 1024 && cd {REPO} && {PY} score {path} --max-concurrent-tasks 100000 "
                f"--server-time-scale 0.01 --output {tmp_path}/o.jsonl --no-cache --no-record --no-progress", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(strict_rows(tmp_path / "o.jsonl")) == 3


def test_embedded_service_with_too_many_sockets_for_the_limit_is_exit_5(tmp_path, make_input):
    path = make_input([f"l{i}" for i in range(900)], "in.txt")
    proc = bash(f"ulimit -n 1024 && cd {REPO} && {PY} score {path} --max-concurrent-tasks 800 "
                f"--server-time-scale 0.01 --output {tmp_path}/o.jsonl --no-cache --no-record --no-progress", tmp_path)
    assert "open files" in assert_one_line_error(proc, 5)


# ------------------------------------------------------------------------------- issue 17, class 6: wrong shape
def test_a_score_path_the_service_never_has_stops_early_and_writes_nothing(tmp_path, make_input):
    path = make_input([f"line {i}" for i in range(200)], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        proc = cli("score", path, "--url", srv.url, "--score-field", "result.score", "--backoff-base", "0", "--probe-grace", "60",
                   "--output", tmp_path / "o.jsonl", "--no-cache", "--no-record", *QUIET, timeout=60)
        sent = len(srv.requests)
    line = assert_one_line_error(proc, 1)
    assert "service unusable: wrong shape" in line and "nothing written" in line
    assert "one reply: wrong shape: no number at score path" in line and "result.score" in line  # what it saw
    assert sent <= 20 and not (tmp_path / "o.jsonl").exists()


# ------------------------------------------------------------------------------- issue 17, class 8: redirects
def test_a_service_that_only_redirects_stops_the_run_and_nothing_is_followed(tmp_path, make_input):
    path = make_input([f"line {i}" for i in range(50)], "in.txt")
    with HostileServer(lambda r: good()) as other:
        with HostileServer(lambda r: redirect(307, other.url)) as srv:
            proc = cli("score", path, "--url", srv.url, "--output", tmp_path / "o.jsonl", "--no-cache", "--no-record",
                       "--probe-grace", "60", *QUIET, timeout=60)
            sent = len(srv.requests)
        assert other.requests == []
    line = assert_one_line_error(proc, 1)
    assert "HTTP 307" in line and f"redirects to {other.url}" in line and "nothing written" in line
    assert sent <= 20 and not (tmp_path / "o.jsonl").exists()


# ------------------------------------------------------------------------------- issue 17, class 5: no task dies unseen
@pytest.mark.timeout(120)  # without the guard the run waits forever for the lost lines
@pytest.mark.parametrize("exc", [MemoryError, OverflowError, KeyError])
def test_an_exception_escaping_a_request_is_that_lines_error_row(tmp_path, make_input, monkeypatch, exc):
    real = ScoringClient.score

    async def score_or_raise(self, text):
        if text.startswith("bad"):
            raise exc("cannot convert float infinity to integer")
        return await real(self, text)
    monkeypatch.setattr(ScoringClient, "score", score_or_raise)
    path = make_input(["good 1", "bad 1", "good 2", "bad 2", "good 3"], "in.txt")
    with HostileServer(lambda r: good()) as srv:
        result = score_file(run_config(path, srv.url, tmp_path, max_concurrent_tasks=2, threads=1))
    rows = strict_rows(result.output)
    assert [r["status"] for r in rows] == ["ok", "error", "ok", "error", "ok"] and result.exit_code == 1
    assert rows[1]["error"].startswith(f"internal error: {exc.__name__}") and "Traceback" not in rows[1]["error"]
    assert result.stats.causes["internal error"] == 2 and result.stats.retries == 0  # no request: no retry either


class _LosesEverything:
    """An engine that takes work and never hands anything back (a lost worker), as the watchdog sees it."""

    def __init__(self, config) -> None:
        self.config = config

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def room(self) -> int:
        return 4

    def submit(self, items) -> None:
        pass

    def poll(self, timeout: float) -> list:
        time.sleep(timeout)
        return []

    def info(self) -> dict:
        return {}


@pytest.mark.timeout(60)  # without the watchdog the run waits forever
def test_a_run_that_stops_moving_is_an_error_not_a_hang(tmp_path, make_input, monkeypatch):
    monkeypatch.setattr(watchdog, "WATCHDOG_SLACK", 0.0)
    config = run_config(make_input(["a", "b"], "in.txt"), "http://127.0.0.1:9/score", tmp_path, timeout=0.2,
                        max_retries=1, backoff_cap=0.1)
    with pytest.raises(RunStalled, match="no line finished and nothing moved for 0.8 s with 2 lines outstanding"):
        score_file(config, engine=_LosesEverything)  # the engine seam, not a patch of the pipeline
    assert not (tmp_path / "out.jsonl").exists()


def test_the_watchdog_waits_while_attempts_still_move():
    moves = iter(range(10**6))
    dog = watchdog.Watchdog(0.0, activity=lambda: next(moves))  # attempts keep starting and ending
    for _ in range(5):
        time.sleep(0.01)
        dog.check(False, 3)  # no line finished, but something moved: not stalled
    still = watchdog.Watchdog(0.0, activity=lambda: 7)
    time.sleep(0.01)
    with pytest.raises(RunStalled):
        still.check(False, 3)
