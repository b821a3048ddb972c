"""Where a run came from: the commit (and whether the tree had changes), the machine, the versions.

The commit is read once per process, only when a record is saved (a run that writes none, such as
`score --no-record`, never starts git), and a sweep hands its reading to the kernels it starts
through an environment variable, so a run never waits for git. Git is asked with the notebook
filter disabled: in a fresh clone `git status` runs nbstripout on every "racily clean" notebook."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

PROVENANCE_ENV = "SCORING_PROVENANCE"  # JSON of a Provenance, set by a sweep for its kernels
GIT_TIMEOUT = 10.0
# The notebook filter turned into a no-op for this one reading: a notebook saved with outputs then
# counts as a change (it is one on disk), and no Python process starts per notebook.
_NO_FILTERS = ("-c", "filter.nbstripout.clean=cat", "-c", "filter.nbstripout.required=false",
               "-c", "core.fsmonitor=false")


@dataclass(frozen=True)
class Provenance:
    """The commit the code ran from; `unknown` says why a missing figure is missing."""

    commit: str | None = None
    dirty: bool | None = None
    unknown: str | None = None

    @property
    def text(self) -> str | None:
        """The commit as tables show it: the sha, '+dirty' when the tree had changes."""
        if self.commit is None:
            return None
        return self.commit + ("+dirty" if self.dirty else "")

    @classmethod
    def from_text(cls, text: str | None, why_unknown: str) -> "Provenance":
        """From the older records' one string ('sha' or 'sha+dirty', or nothing)."""
        if not text:
            return cls(unknown=why_unknown)
        sha, _, flag = text.partition("+")
        return cls(commit=sha, dirty=flag == "dirty")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *_NO_FILTERS, *args], cwd=root, capture_output=True, text=True,
                          timeout=GIT_TIMEOUT)


def read_git(root: str | os.PathLike | None = None) -> Provenance:
    """Ask git (two quick plumbing commands, no `git status`) for the commit and the dirty flag."""
    here = Path(root) if root is not None else Path(__file__).resolve().parent
    try:
        sha = _git(here, "rev-parse", "--verify", "HEAD")
        if sha.returncode != 0:
            return Provenance(unknown="not a git checkout (git rev-parse HEAD failed)")
        commit = sha.stdout.strip()
        diff = _git(here, "diff", "--quiet", "--no-ext-diff", "--no-textconv", "HEAD", "--")
    except FileNotFoundError:
        return Provenance(unknown="git is not installed")
    except subprocess.TimeoutExpired:
        return Provenance(unknown=f"git did not answer within {GIT_TIMEOUT:g} s")
    except OSError as exc:
        return Provenance(unknown=f"git could not run: {exc.strerror or exc}")
    if diff.returncode not in (0, 1):
        return Provenance(commit=commit, unknown="dirty state unknown (git diff failed)")
    return Provenance(commit=commit, dirty=diff.returncode == 1)


def _from_env() -> Provenance | None:
    raw = os.environ.get(PROVENANCE_ENV)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Provenance(**{k: data.get(k) for k in ("commit", "dirty", "unknown")})
    except (ValueError, TypeError, AttributeError):
        return Provenance(unknown=f"${PROVENANCE_ENV} is not a provenance object")


@functools.lru_cache(maxsize=1)
def current() -> Provenance:
    """This process's provenance: the one its sweep passed down, else git's answer (asked once)."""
    return _from_env() or read_git()


# What a record carries until it is saved, when git has not been asked yet (save_record asks it then).
UNREAD = Provenance(unknown="not read: git is asked only when a record is saved")


def known() -> Provenance:
    """This process's provenance if it costs no git call (a sweep passed it down, or git was asked
    already), else UNREAD."""
    if current.cache_info().currsize:
        return current()
    return _from_env() or UNREAD


def resolved(provenance: Provenance) -> Provenance:
    """`provenance`, or this process's reading (git asked now, once) when it is still UNREAD."""
    return current() if provenance == UNREAD else provenance


@contextmanager
def shared_with_children():
    """Pass this process's provenance to child processes (a sweep's kernels) for the block's duration."""
    old = os.environ.get(PROVENANCE_ENV)
    os.environ[PROVENANCE_ENV] = json.dumps(asdict(current()))
    try:
        yield current()
    finally:
        if old is None:
            os.environ.pop(PROVENANCE_ENV, None)
        else:
            os.environ[PROVENANCE_ENV] = old


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit as one string, with '+dirty' when the tree has changes (bench's records)."""
    return (read_git(cwd) if cwd is not None else current()).text


def machine_info() -> dict:
    return {
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def package_versions() -> dict:
    out = {}
    for name in ("scoring-workbench", "aiohttp", "uvloop", "ray", "pandas", "papermill"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
