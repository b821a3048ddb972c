"""A directory put first on the PYTHONPATH of the Ray processes this workbench starts (never on the
user's): every Ray process imports jsonschema, and jsonschema imports the optional format checkers that
are installed (JupyterLab brings them): rfc3987_syntax builds an Earley parser when imported (seconds of
CPU), and the others (rfc3986_validator, isoduration with arrow, ...) compile regular expressions and
build classes, paid in each of 30-odd worker, agent and driver processes on a 2-core machine. The
stand-ins here make those optional imports fail, as if they were not installed; Ray checks no format
with them (jsonschema checks formats only when asked to)."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PATH = os.path.dirname(os.path.abspath(__file__))
# jsonschema's optional format checkers, one stand-in module each in this directory
KEPT_OUT = ("rfc3987_syntax", "rfc3986_validator", "rfc3339_validator", "isoduration", "webcolors", "uri_template",
            "jsonpointer", "fqdn")


def environ(env: dict[str, str]) -> dict[str, str]:
    """`env` with this directory first on PYTHONPATH (the rest kept, so the workbench stays importable)."""
    rest = env.get("PYTHONPATH")
    return env | {"PYTHONPATH": os.pathsep.join([PATH, rest] if rest else [PATH])}


@contextmanager
def lean_import() -> Iterator[None]:
    """Import Ray in this process without jsonschema's optional format checkers, if jsonschema is not
    imported yet (after that, jsonschema has made its choice and this changes nothing). Only format checks,
    which jsonschema makes only when asked, go missing from this process; the modules stay importable."""
    if "jsonschema" in sys.modules:
        yield
        return
    blocked = [name for name in KEPT_OUT if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


@contextmanager
def in_environ() -> Iterator[None]:
    """This process's environment as the Ray processes it starts now should get it (they inherit it)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = environ(dict(os.environ))["PYTHONPATH"]
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
