"""Studies: a published claim, its figures and the tolerances that decide a verdict, as data.

The report tests a study against the records; `seed` is the one this workbench was built for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerances:
    """How far measurements may stray before a verdict flips (shares of a time, or ratios)."""

    plateau: float = 0.15        # raising C above the pool changes the wall time by less than this share
    at_bound: float = 1.2        # measured / bound below this: at the bound
    lifted_speedup: float = 1.6  # lifting the pool is at least this much faster
    same: float = 0.15           # two settings within this share run "the same"
    cpu_note: float = 1.2        # measured / predicted above this: say the machine has fewer CPUs
    fit: float = 0.10            # a prediction "fits" a published figure within this share


@dataclass(frozen=True)
class Study:
    """A published performance claim to reproduce."""

    name: str
    lines: int                   # requests the published runs made
    latency: float               # seconds per request at the service
    capacity: int                # requests the service serves at once (the hypothesis)
    cpus: int                    # CPUs of the machine the published figures came from
    asyncio_pool100_s: float     # published wall time, asyncio with aiohttp's pool of 100
    ray_32x64_s: float           # published wall time, Ray with 32 workers x 64 threads
    hypothesis: str              # the claim, as the page states it
    tolerances: Tolerances = Tolerances()
