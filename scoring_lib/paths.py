"""Where things are: the project root, found once, so that a relative path means the same file
whether the kernel runs in notebooks/ (JupyterLab), at the repo root (papermill, the CLI) or elsewhere.

Notebook parameters, grid files and the library's defaults name files relative to the project
root; `resolve` turns such a name into an absolute path. Paths typed on the command line keep
the shell's meaning (relative to the current folder).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "SCORING_WORKBENCH_ROOT"
_MARKERS = ("pyproject.toml", "notebooks")


def _is_root(folder: Path) -> bool:
    return all((folder / m).exists() for m in _MARKERS) and (folder / "scoring_lib").is_dir()


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The project root: $SCORING_WORKBENCH_ROOT, else the checkout this package was imported from
    (editable install), else the nearest folder above `start` (default: the current folder) that
    holds the project, else the current folder."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve().parents[1]
    if _is_root(here):
        return here
    cwd = Path(start or os.getcwd()).resolve()
    for folder in (cwd, *cwd.parents):
        if _is_root(folder):
            return folder
    return cwd


ROOT = find_root()
NOTEBOOKS = ROOT / "notebooks"
GRIDS = NOTEBOOKS / "grids"
DATA = ROOT / "data"
RESULTS = ROOT / "results"
RUNS = RESULTS / "runs"                      # run records (ignored by git)
REPORT = RESULTS / "report"                  # generated reports (ignored by git)
EXECUTED = RESULTS / "notebooks"             # notebooks executed by sweeps and tests (ignored by git)
CACHE = RESULTS / "cache"
SCORES = RESULTS / "scores"
REFERENCE = RESULTS / "reference"            # the committed reference: its records and its report
REFERENCE_RUNS = REFERENCE / "runs"
REFERENCE_REPORT = REFERENCE / "report"
RUN_NOTEBOOK = NOTEBOOKS / "run.ipynb"


def resolve(path: str | os.PathLike | None, base: str | os.PathLike | None = None) -> Path | None:
    """`path` as an absolute path: `~` expanded, relative paths taken from `base` (default the project
    root), so 'data/sample.txt' is the same file from notebooks/, the root or anywhere else."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return Path(base or ROOT) / p


def grid_path(grid: str | os.PathLike) -> Path:
    """A grid named as a path (relative to the project root) or by its name alone ('quick')."""
    p = Path(grid)
    if p.suffix not in (".yaml", ".yml") and len(p.parts) == 1:
        return GRIDS / f"{p.name}.yaml"
    return resolve(p)  # type: ignore[return-value]


def shown(path: str | os.PathLike) -> str:
    """A path as a person wants to read it: relative to the project root when it is inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)
