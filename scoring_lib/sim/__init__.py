"""The simulated scoring service: the application and its behaviours (the zoo), and ways to run it."""

from .app import BATCH_KEYS, MAX_REQUEST_BYTES, ScoringService, ServiceStats, deterministic_score
from .process import IDLE_TIMEOUT, ServiceProcess, SimulatedService, serve_args, serve_forever, service_info, start_site

__all__ = ["BATCH_KEYS", "MAX_REQUEST_BYTES", "ScoringService", "ServiceStats", "deterministic_score", "IDLE_TIMEOUT",
           "ServiceProcess", "SimulatedService", "serve_args", "serve_forever", "service_info", "start_site"]
