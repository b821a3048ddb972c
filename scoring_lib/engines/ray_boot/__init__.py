"""A directory put first on the PYTHONPATH of the Ray processes this workbench starts (never on the
user's): every Ray process imports jsonschema, which imports rfc3987_syntax if it is installed (JupyterLab
brings it), and that module builds an Earley parser when imported: seconds of CPU in every worker, agent
and driver process, paid 30-odd times on a 2-core machine. The stand-in here makes that optional import
fail, as if it were not installed; Ray validates no IRI with it."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PATH = os.path.dirname(os.path.abspath(__file__))


def environ(env: dict[str, str]) -> dict[str, str]:
    """`env` with this directory first on PYTHONPATH (the rest kept, so the workbench stays importable)."""
    rest = env.get("PYTHONPATH")
    return env | {"PYTHONPATH": os.pathsep.join([PATH, rest] if rest else [PATH])}


@contextmanager
def lean_import() -> Iterator[None]:
    """Import Ray in this process without rfc3987_syntax, if jsonschema is not imported yet (after that,
    jsonschema has made its choice and this changes nothing). Only IRI format checks, which jsonschema
    makes only when asked, go missing from this process."""
    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        yield
        return
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("rfc3987_syntax", 0) is None:
            del sys.modules["rfc3987_syntax"]


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
