"""scoring-workbench: score every line of a file through a slow HTTP service, and measure how fast.

The public API is small: build a RunConfig (with a ClientConfig), call score_file; start a
SimulatedService for local runs; probe a service.
"""

from .config import ClientConfig, RunConfig, ServerConfig
from .errors import ScoringError
from .pipeline import RunResult, score_file, score_file_async
from .probe import ProbeReport, probe
from .server import SimulatedService, deterministic_score

__all__ = ["ClientConfig", "RunConfig", "ServerConfig", "ScoringError", "RunResult", "score_file",
           "score_file_async", "ProbeReport", "probe", "SimulatedService", "deterministic_score"]
__all__ += ["build_report", "compare_runs", "load_runs"]
__version__ = "0.1.0"

_STUDY = {"build_report": "report", "compare_runs": "compare", "load_runs": "runs"}


def __getattr__(name: str):
    """The study side (report, compare, the tidy frame) on first use: it pulls pandas, which `score` never needs."""
    if name in _STUDY:
        import importlib

        return getattr(importlib.import_module(f".{_STUDY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
