"""Shared fixtures: real loopback services started by the tests themselves, and CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring_lib import ClientConfig, RunConfig, ServerConfig, SimulatedService

REPO = Path(__file__).resolve().parents[1]
FAST = 0.01  # time scale: the default 4.15 s latency becomes 41.5 ms


@pytest.fixture
def service():
    with SimulatedService(ServerConfig(time_scale=FAST)) as svc:
        yield svc


@pytest.fixture
def make_input(tmp_path):
    def make(lines_or_bytes, name: str = "input.txt") -> Path:
        path = tmp_path / name
        if isinstance(lines_or_bytes, bytes):
            path.write_bytes(lines_or_bytes)
        else:
            path.write_text("".join(f"{line}\n" for line in lines_or_bytes), encoding="utf-8")
        return path
    return make


def run_config(path: Path, url: str, tmp_path: Path, **kw) -> RunConfig:
    client_kw = {k: kw.pop(k) for k in list(kw) if k in ClientConfig.__dataclass_fields__}
    client = ClientConfig(url=url, **({"backoff_base": 0.01, "backoff_cap": 0.05} | client_kw))
    defaults = dict(output=tmp_path / "out.jsonl", cache=tmp_path / "cache.sqlite", records_dir=tmp_path / "runs",
                    progress=False, threads=2, max_concurrent_tasks=16)
    return RunConfig(input=path, client=client, **(defaults | kw))


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120,
        **popen) -> subprocess.CompletedProcess:
    full_env = dict(os.environ) | (env or {})
    return subprocess.run([sys.executable, "-m", "scoring_lib", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout, **popen)


def git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@localhost", GIT_COMMITTER_NAME="test",
               GIT_COMMITTER_EMAIL="test@localhost")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_clone(tmp_path: Path, sweep_grid: str = "tiny") -> Path:
    """A fresh clone of this repository (committed state) with the nbstripout git filter installed as
    `make venv` does, its sweep notebook pointed at a small grid (committed, so the clone starts clean)."""
    import nbformat

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["make", "--no-print-directory", "git-filter", f"PY={sys.executable}"], cwd=clone, check=True,
                   capture_output=True)
    path = clone / "notebooks" / "sweep.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace('"notebooks/grids/quick.yaml"', f'"{sweep_grid}"')
    nbformat.write(nb, path)
    git("commit", "-qam", f"sweep notebook: {sweep_grid} grid", cwd=clone)
    assert git("status", "--porcelain", cwd=clone) == ""
    return clone
