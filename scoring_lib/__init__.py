"""scoring-workbench: score every line of a file through a slow HTTP service, and measure how fast.

The public API is small: build a RunConfig (with a ClientConfig), call score_file; start a
SimulatedService for local runs; probe a service.

Names are imported when first used (module `__getattr__`, PEP 562): `python -m scoring_lib` runs
this file first, and a `score` process should not pay for the simulator's web server or the probe.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__all__ = ["ClientConfig", "RunConfig", "ServerConfig", "ScoringError", "RunResult", "score_file",
           "score_file_async", "ProbeReport", "probe", "SimulatedService", "deterministic_score",
           "build_report", "compare_runs", "load_runs",
           # what the notebooks use, and nothing else from inside the package
           "paths", "safe_url", "client_config", "load_profile", "start_service", "score_sample", "ramp",
           "latency_histogram", "run_point", "run_sweep", "POINT_KEYS"]
__version__ = "0.1.0"

_HOME = {"ClientConfig": "config", "RunConfig": "config", "ServerConfig": "config", "ScoringError": "errors",
         "RunResult": "pipeline", "score_file": "pipeline", "score_file_async": "pipeline", "ProbeReport": "probe",
         "probe": "probe", "SimulatedService": "server", "deterministic_score": "server",
         # the study side pulls pandas, which `score` never needs
         "build_report": "report", "compare_runs": "compare", "load_runs": "runs",
         "safe_url": "redact", "client_config": "service", "load_profile": "service", "start_service": "notebook",
         "score_sample": "sweep", "ramp": "ramp", "latency_histogram": "plots", "run_point": "sweep",
         "run_sweep": "sweep", "POINT_KEYS": "grid"}
_MODULES = {"paths"}  # public modules (project paths: resolve, shown, ROOT)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from .config import ClientConfig, RunConfig, ServerConfig
    from .errors import ScoringError
    from .pipeline import RunResult, score_file, score_file_async
    from .probe import ProbeReport, probe
    from .server import SimulatedService, deterministic_score
    from .report import build_report
    from .compare import compare_runs
    from .runs import load_runs
    from . import paths
    from .grid import POINT_KEYS
    from .notebook import start_service
    from .plots import latency_histogram
    from .ramp import ramp
    from .redact import safe_url
    from .service import client_config, load_profile
    from .sweep import run_point, run_sweep, score_sample


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # the next lookup finds it directly
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


class _Package(types.ModuleType):
    """`scoring_lib.probe` is the function (the public API), as when this file imported it eagerly: the
    import system, loading the submodule of the same name later, must not put the module in its place."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _HOME.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
