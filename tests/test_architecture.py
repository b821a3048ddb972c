"""The layers of docs/architecture.md, checked: `lint-imports` keeps the import-linter contracts of
pyproject.toml, and an import inside a function is only there to defer an optional heavy dependency."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "scoring_lib"

# Dependencies worth deferring: slow to import, or an optional extra. An import inside a function is for
# one of these, or for a project module that imports one of these at its top.
# pydantic, aiohttp, tqdm and yaml join the four: each costs a `score` process, a `report` or a Ray
# worker tens to hundreds of milliseconds of start-up that the command at hand does not need.
HEAVY = frozenset({"ray", "matplotlib", "papermill", "pandas", "nbformat", "pydantic", "aiohttp", "tqdm", "yaml"})

# In-function imports that stay for another reason: (importing module, imported project module or top-level
# package) -> the reason.
ALLOWED: dict[tuple[str, str], str] = {
    ("scoring_lib.loops", "uvloop"): "not installed on Windows (a dependency only where sys_platform != 'win32')",
    ("scoring_lib.resources", "resource"): "the standard library has no `resource` module on Windows",
    ("scoring_lib.notebook", "IPython"): "only inside a Jupyter kernel (the notebooks extra)",
    ("scoring_lib.engines", "scoring_lib.engines.ray_engine"): "the Ray engine (and Ray) only when a run asks for it",
    ("scoring_lib.bench.ray_cases", "scoring_lib.engines.ray_engine"): "Ray is optional: only the Ray cases load it",
}


@dataclass(frozen=True)
class InnerImport:
    """One import statement inside a function body."""
    module: str      # the importing module, e.g. scoring_lib.ramp
    line: int
    imported: str    # the module it names, e.g. scoring_lib.plots or json

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}"


def module_name(path: Path, root: Path = REPO) -> str:
    """scoring_lib/engines/__init__.py -> scoring_lib.engines."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names an import statement binds: `from x import y` -> x.y (a module or a name in x)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    prefix = node.module or ""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        prefix = ".".join([*base[:len(base) - node.level + 1], *([node.module] if node.module else [])])
    return [prefix if alias.name == "*" else f"{prefix}.{alias.name}" for alias in node.names]


def imports_of(path: Path, root: Path = REPO) -> tuple[set[str], list[InnerImport]]:
    """The modules imported at module level (including under `if`/`try`), and the imports inside functions."""
    module, is_package = module_name(path, root), path.name == "__init__.py"
    top: set[str] = set()
    inner: list[InnerImport] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, module, is_package):
                    if in_function:
                        inner.append(InnerImport(module, child.lineno, target))
                    else:
                        top.add(target)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), False)
    return top, inner


def _root(name: str) -> str:
    return name.split(".")[0]


def _project_module(name: str, modules: set[str]) -> str | None:
    """The project module an import names: `scoring_lib.engines.Result` -> scoring_lib.engines."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def misplaced_inner_imports(package: Path = PACKAGE, root: Path = REPO) -> list[InnerImport]:
    """In-function imports that defer nothing heavy: neither a heavy dependency nor a project module that
    imports one at its top (itself or through the project modules it imports at its top), nor in ALLOWED."""
    files = sorted(package.rglob("*.py"))
    scanned = {module_name(f, root): imports_of(f, root) for f in files}
    heavy_modules = {m for m, (top, _) in scanned.items() if any(_root(t) in HEAVY for t in top)}
    grew = True
    while grew:  # a module is heavy too when a project module it imports at its top is
        before = len(heavy_modules)
        heavy_modules |= {m for m, (top, _) in scanned.items()
                          if any(_project_module(t, set(scanned)) in heavy_modules for t in top)}
        grew = len(heavy_modules) > before
    found = []
    for _, inner in scanned.values():
        for imp in inner:
            project = _project_module(imp.imported, set(scanned))
            ok = project in heavy_modules if project is not None else _root(imp.imported) in HEAVY
            if not ok and (imp.module, project or _root(imp.imported)) not in ALLOWED:
                found.append(imp)
    return found


def lint_imports(cwd: Path = REPO) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "lint-imports is not installed: the dev extra has import-linter (pip install -e '.[dev]')"
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_contracts_are_configured_and_read():
    """The layers and acyclic contracts exist in pyproject.toml and lint-imports checks both."""
    out = lint_imports().stdout
    assert "scoring_lib layers: edge > study > run > service > transport > base" in out
    assert "no import circle between scoring_lib's modules and packages" in out


def test_lint_imports_keeps_the_layers():
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_the_scan_sees_in_function_imports(tmp_path):
    """The scanner itself: a deferred stdlib or light project import is flagged, a deferred heavy one is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "light.py").write_text("import json\n")
    (pkg / "heavy.py").write_text("import pandas\n")
    (pkg / "user.py").write_text(
        "import os\n"
        "def f():\n    import json\n    from . import light\n    from pkg import heavy\n    import pandas as pd\n"
        "    from matplotlib import pyplot\n"
        "class C:\n    def g(self):\n        from .light import x\n")
    found = {(i.module, i.line, i.imported) for i in misplaced_inner_imports(pkg, tmp_path)}
    assert found == {("pkg.user", 3, "json"), ("pkg.user", 4, "pkg.light"), ("pkg.user", 10, "pkg.light.x")}


def test_in_function_imports_only_defer_heavy_dependencies():
    found = misplaced_inner_imports()
    assert not found, f"{len(found)} in-function imports defer nothing heavy:\n" + "\n".join(map(str, found))


def test_notebooks_import_only_the_public_api():
    """The notebooks are the users' code: they import names from `scoring_lib` itself, each in its
    `__all__`, and nothing from inside the package (one public API, not a second undeclared one)."""
    import nbformat

    import scoring_lib

    wrong = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Import) and any(a.name.startswith("scoring_lib") for a in node.names):
                    wrong.append(f"{path.name}: import {', '.join(a.name for a in node.names)}")
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scoring_lib"):
                    outside = [a.name for a in node.names if a.name not in scoring_lib.__all__]
                    if node.module != "scoring_lib" or outside:
                        wrong.append(f"{path.name}: from {node.module} import {', '.join(a.name for a in node.names)}")
    assert not wrong, "\n".join(wrong)
    for name in scoring_lib.__all__:  # and every public name is there to import
        assert getattr(scoring_lib, name) is not None, name
