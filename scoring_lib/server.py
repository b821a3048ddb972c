"""The simulated scoring service (kept as the name other modules import; it lives in `sim/`).

It stands in for the real service in tests, notebooks, benchmarks and the CLI's embedded default,
so that every measurement has a known physical limit: ceil(N / min(pool, C, capacity)) * latency.
"""

from .sim import (BATCH_KEYS, IDLE_TIMEOUT, MAX_REQUEST_BYTES, ScoringService, ServiceProcess, ServiceStats,
                  SimulatedService, deterministic_score, serve_args, serve_forever, service_info, start_site)

__all__ = ["BATCH_KEYS", "IDLE_TIMEOUT", "MAX_REQUEST_BYTES", "ScoringService", "ServiceProcess", "ServiceStats",
           "SimulatedService", "deterministic_score", "serve_args", "serve_forever", "service_info", "start_site"]
