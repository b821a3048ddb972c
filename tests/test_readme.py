"""The README as a tested path: every fenced command runs as written from a fresh clone, and nothing it
writes shows in `git status`. A few commands need what a test cannot have (a real service, a cluster of
machines, conda, 10 minutes): SUBSTITUTES says what runs instead of each, and why."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, git
from scoring_lib import ServerConfig, SimulatedService

README = REPO / "README.md"
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)
COMMENT = re.compile(r"\s+#\s.*$")
SERVICE_PLACEHOLDERS = ("https://scorer.example/score", "--url URL")  # the user's service: here the test's


@dataclass(frozen=True)
class Command:
    """One command of a fenced block, as written (continuation lines joined, trailing comment dropped)."""
    lang: str
    text: str
    block: int


@dataclass(frozen=True)
class Substitute:
    """What runs instead of a README command (None: nothing), and why."""
    run: str | None
    why: str
    serves: str | None = None  # a server running until stopped: the URL (with {port}) that must answer
    conda: bool = False        # the rest of its block runs as in an activated conda env (no .venv)


SEED_SIZE = "workers take 15-30 s to start on 2 cores; 2 workers run the same path"
CLUSTER = ("needs several machines (HEAD_IP), and `ray start`/`ray stop` on a shared machine would join or end "
           "other users' Ray processes; tests/engines/test_ray_multinode.py runs this path on one machine")
SUBSTITUTES: dict[str, Substitute] = {
    "make run": Substitute("make run GRID=notebooks/grids/tiny.yaml",
                           "the quick grid takes minutes; the tiny grid runs the same sweep -> report chain"),
    "make test": Substitute("make test ARGS='--collect-only -q'",
                            "the suite is this test's caller; collecting it shows the target finds and imports it"),
    "make test-fast": Substitute("make test-fast ARGS='--collect-only -q'", "as make test"),
    "make lab": Substitute("make lab LAB_PORT={port}", "a server running until stopped; a free port, not 8888",
                           serves="http://127.0.0.1:{port}/lab"),
    "conda env create -f environment.yml && conda activate scoring-workbench": Substitute(
        None, "no conda here: the block's other commands run with this test's environment first on PATH and no "
              ".venv, as in an activated conda environment", conda=True),
    ".venv/bin/python -m scoring_lib score data/sample.txt --url URL --engine ray --workers 32 --threads 8":
        Substitute(".venv/bin/python -m scoring_lib score data/sample.txt --url URL --engine ray --workers 2 "
                   "--threads 8", SEED_SIZE),
    ".venv/bin/ray start --head --port=6379 --node-ip-address=HEAD_IP --num-cpus=2":
        Substitute(".venv/bin/ray start --help", CLUSTER),
    ".venv/bin/ray get-auth-token": Substitute(".venv/bin/ray get-auth-token --help", CLUSTER),
    "RAY_AUTH_MODE=token .venv/bin/ray start --address=HEAD_IP:6379": Substitute(".venv/bin/ray start --help",
                                                                                 CLUSTER),
    ".venv/bin/python -m scoring_lib score data/sample.txt --url URL --engine ray --workers 64 --threads 32 "
    "--ray-address HEAD_IP:6379": Substitute(".venv/bin/python -m scoring_lib score --help", CLUSTER),
    ".venv/bin/ray status": Substitute(".venv/bin/ray status --help", CLUSTER),
    ".venv/bin/papermill notebooks/run.ipynb results/notebooks/run-ray.ipynb -p engine ray -p workers 32 "
    "-p threads 64": Substitute(".venv/bin/papermill notebooks/run.ipynb results/notebooks/run-ray.ipynb "
                                "-p engine ray -p workers 2 -p threads 64 -p lines 200", SEED_SIZE),
    ".venv/bin/python -m scoring_lib sweep notebooks/grids/quick.yaml": Substitute(
        ".venv/bin/python -m scoring_lib sweep notebooks/grids/tiny.yaml", "as make run"),
    ".venv/bin/python -m scoring_lib report --sweep quick": Substitute(
        ".venv/bin/python -m scoring_lib report --sweep tiny", "the sweep recorded here is tiny"),
    ".venv/bin/python -m scoring_lib sweep seed --resume": Substitute(
        ".venv/bin/python -m scoring_lib sweep tiny --resume",
        "the seed grid takes about 10 minutes; resuming tiny, already recorded, runs the same code"),
    ".venv/bin/python -m scoring_lib report --sweep quick --sweep seed": Substitute(
        ".venv/bin/python -m scoring_lib report --sweep tiny --sweep tiny",
        "two --sweep options; tiny is the only sweep recorded here"),
    ".venv/bin/python -m scoring_lib serve --port 8000 --latency 4.15 --capacity 200 --time-scale 0.1": Substitute(
        ".venv/bin/python -m scoring_lib serve --port {port} --latency 4.15 --capacity 200 --time-scale 0.1",
        "a server running until stopped; a free port, not 8000", serves="http://127.0.0.1:{port}/stats"),
    "make bench": Substitute("make bench ARGS='--cases a --time-scale 0.01'",
                             "the default cases take about 15 minutes; case a writes its results the same way"),
    ".venv/bin/python -m scoring_lib bench --cases zd": Substitute(
        ".venv/bin/python -m scoring_lib bench --help", "minutes of full CPU (50,000 lines in whole processes)"),
    ".venv/bin/python -m scoring_lib bench --cases rw": Substitute(
        ".venv/bin/python -m scoring_lib bench --help", "Ray 32 workers x 64 threads: minutes on 2 cores"),
    ".venv/bin/python -m scoring_lib bench --cases zbc --strict": Substitute(
        ".venv/bin/python -m scoring_lib bench --help", "minutes of full CPU (a million lines among them), and "
        "--strict makes a speed target missed on a busy machine exit 1: speed is bench's to judge, not a test's"),
}


def readme_commands(text: str) -> list[Command]:
    """Every command of the README's fenced bash blocks (one per logical line) and every python block."""
    commands = []
    for block, match in enumerate(FENCE.finditer(text)):
        lang, body = match.groups()
        if lang == "python":
            commands.append(Command(lang, body, block))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r" {2,}", " ", COMMENT.sub("", line).strip())
            if line and not line.startswith("#"):
                commands.append(Command(lang, line, block))
    return commands


def test_every_substitute_names_a_readme_command_and_says_why():
    """The allow-list follows the README: a command renamed there must be renamed here (or run as written)."""
    written = {c.text for c in readme_commands(README.read_text(encoding="utf-8"))}
    assert not set(SUBSTITUTES) - written, "substitutes for commands the README no longer has"
    assert all(s.why for s in SUBSTITUTES.values())


def test_sweep_resume_help_says_what_the_readme_and_contract_say():
    """`--resume` runs the repeats not yet recorded (it used to say it skips points)."""
    out = subprocess.run([sys.executable, "-m", "scoring_lib", "sweep", "--help"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert "run only the measured repeats not yet recorded as ok" in " ".join(out.split())
    assert "`--resume` runs only the repeats not yet recorded" in " ".join(README.read_text().split())


# --- the path itself: a fresh clone, every command, then `git status` -------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_clone(dest: Path) -> Path:
    """A clone of this checkout's HEAD plus its uncommitted changes to tracked files (committed in the clone),
    sharing this test's environment as `.venv` so that nothing is installed."""
    git("clone", "--quiet", "--no-hardlinks", str(REPO), str(dest), cwd=REPO)
    git("checkout", "--quiet", "--detach", git("rev-parse", "HEAD", cwd=REPO).strip(), cwd=dest)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=REPO, capture_output=True, check=True).stdout
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=dest, input=diff, check=True)
        git("commit", "--quiet", "-am", "uncommitted changes under test", cwd=dest)
    (dest / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    # A symlink is not a directory to git, so `.venv/` in .gitignore does not cover this test's link.
    with open(dest / ".git" / "info" / "exclude", "a", encoding="utf-8") as f:
        f.write("/.venv\n")
    old = time.time() - 10 * 365 * 86400  # older than .venv/.installed: make installs nothing
    os.utime(dest / "pyproject.toml", (old, old))
    return dest


@dataclass
class Runner:
    """Runs README commands in a clone, collecting failures rather than stopping at the first."""
    clone: Path
    url: str
    env: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def command_for(self, cmd: Command) -> tuple[str | list[str] | None, Substitute | None]:
        sub = SUBSTITUTES.get(cmd.text)
        text = sub.run if sub else cmd.text
        if text is None or cmd.lang == "python":
            return (None if text is None else [".venv/bin/python", "-c", text]), sub
        text = text.replace("https://scorer.example/score", self.url).replace("--url URL", f"--url {self.url}")
        return text, sub

    def run(self, cmd: Command, env: dict) -> None:
        argv, sub = self.command_for(cmd)
        if argv is None:
            return
        if sub and sub.serves:
            return self.serve(argv, sub.serves, env)
        if isinstance(argv, str) and not self.make_passes_args(argv, env):
            self.failures.append(f"$ {argv}\nnot run: the Makefile does not pass ARGS (it would run in full)")
            return
        shell = argv if isinstance(argv, list) else ["bash", "-o", "pipefail", "-c", argv]
        done = subprocess.run(shell, cwd=self.clone, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            self.failures.append(f"$ {argv}\nexit {done.returncode}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}")

    def make_passes_args(self, text: str, env: dict) -> bool:
        """A substitute's `make X ARGS='...'` shrinks X only if the Makefile passes ARGS: ask `make -n` first."""
        args = re.match(r"make \S+ ARGS='([^']*)'", text)
        if not args:
            return True
        dry = subprocess.run(["bash", "-c", text.replace("make ", "make -n ", 1)], cwd=self.clone, env=env,
                             capture_output=True, text=True, timeout=120)
        return args.group(1) in dry.stdout

    def serve(self, text: str, url: str, env: dict) -> None:
        """Start a server command, wait until its URL answers (or it exits), then stop it."""
        port = _free_port()
        proc = subprocess.Popen(["bash", "-c", f"exec {text.format(port=port)}"], cwd=self.clone, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        answered = False
        deadline = time.monotonic() + 300
        while not answered and proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url.format(port=port), timeout=5).close()
                answered = True
            except urllib.error.HTTPError:
                answered = True  # any HTTP answer (a login redirect, a 403) means it serves
            except OSError:
                time.sleep(0.5)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if not answered:
            self.failures.append(f"$ {text}\nnever answered at {url}\n{proc.stdout.read()[-3000:]}")

    def run_all(self, commands: list[Command]) -> None:
        venv = self.clone / ".venv"
        for block in sorted({c.block for c in commands}):
            env = dict(self.env)
            try:
                for cmd in (c for c in commands if c.block == block):
                    sub = SUBSTITUTES.get(cmd.text)
                    if sub and sub.conda:  # as after `conda activate`: its python first on PATH, no .venv
                        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
                        venv.rename(self.clone / ".venv-aside")
                    self.run(cmd, env)
            finally:
                if (self.clone / ".venv-aside").exists():
                    (self.clone / ".venv-aside").rename(venv)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(3600)
def test_readme_commands_run_from_a_fresh_clone_and_leave_git_status_clean(tmp_path):
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    if not (Path(sys.prefix) / ".installed").exists():
        pytest.skip("this environment was not made by `make venv` (no .installed stamp): make would install")
    clone = fresh_clone(tmp_path / "clone")
    commands = readme_commands((clone / "README.md").read_text(encoding="utf-8"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SCORING_API_KEY")}
    env["PYTHONPATH"] = str(clone)  # the clone's scoring_lib, also in kernels and Ray workers
    env["PYTEST_ADDOPTS"] = "--collect-only -q"  # never the whole suite inside the suite, whatever make passes
    with SimulatedService(ServerConfig(time_scale=0.01)) as svc:
        runner = Runner(clone, svc.url, env)
        runner.run_all(commands)
    assert not runner.failures, f"{len(runner.failures)} README commands failed:\n\n" + "\n\n".join(runner.failures)
    status = git("status", "--porcelain", cwd=clone)
    assert status == "", f"README commands left files that git shows:\n{status}"
