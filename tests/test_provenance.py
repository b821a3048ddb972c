"""Provenance that costs nothing: the commit and dirty flag from two plumbing commands with the
notebook filter disabled (never `git status`), read once, handed to a sweep's kernels by environment."""

import json
import os
import subprocess

import pytest

from scoring_lib import provenance
from scoring_lib.provenance import PROVENANCE_ENV, Provenance, read_git
from conftest import git


@pytest.fixture
def repo(tmp_path):
    """A repository whose notebooks pass a clean filter that leaves a marker each time it runs."""
    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", cwd=root)
    marker = tmp_path / "filter-ran"
    git("config", "filter.nbstripout.clean", f"sh -c 'touch {marker}; cat'", cwd=root)
    git("config", "filter.nbstripout.required", "true", cwd=root)
    (root / ".gitattributes").write_text("*.ipynb filter=nbstripout\n")
    (root / "a.ipynb").write_text("{}\n")
    (root / "b.txt").write_text("b\n")
    git("add", ".", cwd=root)
    git("commit", "-qm", "one", cwd=root)
    marker.unlink(missing_ok=True)
    return root, marker


def test_a_clean_tree_then_a_dirty_one_without_running_the_notebook_filter(repo):
    root, marker = repo
    head = git("rev-parse", "HEAD", cwd=root).strip()
    os.utime(root / "a.ipynb", (1, 1))  # stat no longer matches the index: git must look at the content
    subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True)
    assert marker.exists()  # what `git status` costs: the filter (a Python process), once per such notebook
    marker.unlink()
    os.utime(root / "a.ipynb", (2, 2))
    assert read_git(root) == Provenance(commit=head, dirty=False)
    assert not marker.exists(), "the notebook filter ran"
    (root / "b.txt").write_text("changed\n")
    assert read_git(root) == Provenance(commit=head, dirty=True)
    assert read_git(root).text == head + "+dirty"


def test_outside_a_checkout_the_record_says_why_the_commit_is_unknown(tmp_path):
    found = read_git(tmp_path)
    assert found.commit is None and found.dirty is None and "not a git checkout" in found.unknown


def test_never_git_status(monkeypatch, repo):
    seen = []
    real = subprocess.run

    def spy(cmd, *args, **kwargs):
        seen.append(cmd)
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    read_git(repo[0])
    assert len(seen) == 2 and not [c for c in seen if "status" in c]
    assert all("filter.nbstripout.clean=cat" in c for c in seen)


def test_a_sweep_hands_its_reading_to_children_and_they_never_ask_git(monkeypatch):
    provenance.current.cache_clear()
    monkeypatch.delenv(PROVENANCE_ENV, raising=False)
    monkeypatch.setattr(provenance, "read_git", lambda root=None: Provenance("c0ffee", False))
    with provenance.shared_with_children() as mine:
        assert json.loads(os.environ[PROVENANCE_ENV]) == {"commit": "c0ffee", "dirty": False, "unknown": None}
        provenance.current.cache_clear()
        monkeypatch.setattr(provenance, "read_git", lambda root=None: pytest.fail("a child asked git"))
        assert provenance.current() == mine  # what a kernel of the sweep sees
    assert PROVENANCE_ENV not in os.environ
    provenance.current.cache_clear()


def test_a_record_carries_the_provenance_and_says_when_it_is_unknown(monkeypatch):
    from scoring_lib.record import failure_record

    provenance.current.cache_clear()
    monkeypatch.setenv(PROVENANCE_ENV, json.dumps({"commit": None, "dirty": None, "unknown": "git is not installed"}))
    rec = failure_record({"engine": "asyncio"}, "boom")
    assert rec.provenance.commit is None and rec.provenance.unknown == "git is not installed"
    provenance.current.cache_clear()


def test_a_run_that_saves_no_record_never_asks_git_and_a_saved_one_does(service, make_input, tmp_path, monkeypatch):
    from scoring_lib import score_file
    from scoring_lib.record import save_record
    from conftest import run_config

    provenance.current.cache_clear()
    monkeypatch.delenv(PROVENANCE_ENV, raising=False)
    asked = []
    monkeypatch.setattr(provenance, "read_git", lambda root=None: asked.append(root) or Provenance("c0ffee", True))
    path = make_input(["one", "two"])
    result = score_file(run_config(path, service.url, tmp_path, records_dir=None, cache=None))
    assert asked == [] and result.record.provenance == provenance.UNREAD
    saved = save_record(result.record, tmp_path / "runs")
    assert len(asked) == 1 and json.loads(saved.read_text())["provenance"]["commit"] == "c0ffee"
    again = score_file(run_config(path, service.url, tmp_path, cache=None))  # its record is saved: git was read
    assert len(asked) == 1 and again.record.provenance.text == "c0ffee+dirty"
    provenance.current.cache_clear()


def test_a_sweep_kernel_record_carries_the_sweep_provenance_before_it_is_saved(monkeypatch):
    provenance.current.cache_clear()
    monkeypatch.setenv(PROVENANCE_ENV, json.dumps({"commit": "beef", "dirty": False, "unknown": None}))
    monkeypatch.setattr(provenance, "read_git", lambda root=None: pytest.fail("a kernel asked git"))
    assert provenance.known() == Provenance("beef", False)
    provenance.current.cache_clear()
