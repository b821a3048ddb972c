"""`python -m scoring_lib bench`: the engines against the simulated service, the bare aiohttp client and
the physical limit.

Each case prints measured wall time beside its bound or the bare client, as ratios within one run (the
machine is small and noisy: compare ratios, not absolute seconds), with each target marked met or
missed. The service runs in a child process so that it does not share the measured client's
interpreter. One module per group of cases: whole processes (z, b, c), services with limits (a, p, l),
the soak, Ray (r, w), the driver alone (d).
"""

from .driver import InstantEngine, case_driver
from .measure import Measurement, ProcessRun, Target, run_process, score_args, tally, write_unique_lines
from .run import run_bench

__all__ = ["run_bench", "Measurement", "Target", "tally", "InstantEngine", "case_driver", "ProcessRun",
           "run_process", "score_args", "write_unique_lines"]
