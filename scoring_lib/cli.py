"""`python -m scoring_lib ...`: thin argument parsing over the library; every error is one line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from .config import (API_KEY_ENV, DEFAULT_MAX_LINE_BYTES, EMBEDDED_CACHE_NAMESPACE, ClientConfig, RunConfig,
                     ServerConfig)
from . import paths
from .errors import ConfigError, ScoringError, Terminated
from .redact import redact

PROG = "python -m scoring_lib"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def _float_at_least(minimum: float, strict: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'above' if strict else 'at least'} {minimum:g}, got {text}")
        return value
    return parse


def _concurrency(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        return _int_at_least(1)(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or auto)") from None


def _connector_limit(text: str) -> int | None:
    if text == "auto":
        return None
    return _int_at_least(0)(text)


def _add_server_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    d = ServerConfig()
    g = p.add_argument_group("simulated service" + (" (when --url is absent)" if prefix else ""))
    g.add_argument(f"--{prefix}latency", type=_float_at_least(0), default=d.latency, metavar="SECONDS",
                   help=f"mean service time per request (default {d.latency})")
    g.add_argument(f"--{prefix}latency-dist", choices=("const", "exp", "lognormal"), default=d.latency_dist,
                   help=f"latency distribution (default {d.latency_dist})")
    g.add_argument(f"--{prefix}capacity", type=_int_at_least(0), default=d.capacity, metavar="N",
                   help=f"requests served at once, the rest queue; 0 = unlimited (default {d.capacity})")
    g.add_argument(f"--{prefix}shed", action="store_true",
                   help="above capacity answer 503 at once (load shedding) instead of queueing")
    g.add_argument(f"--{prefix}rate-limit", type=_float_at_least(0), default=d.rate_limit, metavar="RPS",
                   help="requests per second before 429 + Retry-After; 0 = none (default 0)")
    g.add_argument(f"--{prefix}error-rate", type=_float_at_least(0), default=d.error_rate, metavar="P",
                   help="share of requests answered with a transient 503 (default 0)")
    g.add_argument(f"--{prefix}reset-rate", type=_float_at_least(0), default=d.reset_rate, metavar="P",
                   help="share of requests whose connection is reset (default 0)")
    g.add_argument(f"--{prefix}slow-body-rate", type=_float_at_least(0), default=d.slow_body_rate, metavar="P",
                   help="share of requests answered with a body trickling at 1 byte/s (default 0)")
    g.add_argument(f"--{prefix}time-scale", type=_float_at_least(0, strict=True), default=d.time_scale,
                   metavar="F", help="multiplies every duration: 0.01 runs 100x faster (default 1)")
    g.add_argument(f"--{prefix}seed", type=int, default=d.seed, help="random seed (default 0)")
    _add_zoo_options(g, prefix, d)


def _add_zoo_options(g, prefix: str, d: ServerConfig) -> None:
    """The zoo of behaviours (issue 16): each a ServerConfig field of the same name."""
    g.add_argument(f"--{prefix}rate-burst", type=_float_at_least(0), default=d.rate_burst, metavar="N",
                   help="the rate limit's bucket size in requests; 0 = one second of --rate-limit (default 0)")
    g.add_argument(f"--{prefix}retry-after", choices=("exact", "whole", "none"), default=d.retry_after,
                   help="a 429's Retry-After: exact, whole seconds rounded up, or none (default exact)")
    g.add_argument(f"--{prefix}shed-retry-after", type=_float_at_least(0), default=d.shed_retry_after,
                   metavar="SECONDS", help="Retry-After on a 503 over capacity; 0 = none (default 0)")
    g.add_argument(f"--{prefix}queue-limit", type=_int_at_least(0), default=d.queue_limit, metavar="N",
                   help="requests that may wait for a slot, then 503 at once (a proxy queue); 0 = unbounded")
    g.add_argument(f"--{prefix}quota", type=_int_at_least(0), default=d.quota, metavar="N",
                   help="requests per quota window, then 429 until it ends; 0 = none (default 0)")
    g.add_argument(f"--{prefix}quota-window", type=_float_at_least(0, strict=True), default=d.quota_window,
                   metavar="SECONDS", help=f"the quota's window (default {d.quota_window:g})")
    g.add_argument(f"--{prefix}halve-after", type=_int_at_least(0), default=d.halve_after, metavar="N",
                   help="capacity halves once N requests were admitted; 0 = never (default 0)")
    g.add_argument(f"--{prefix}warmup", type=_float_at_least(0), default=d.warmup, metavar="SECONDS",
                   help="latency is 5x for this long from the first request (default 0)")
    g.add_argument(f"--{prefix}flaky", type=_int_at_least(0), default=d.flaky, metavar="N",
                   help="each line's first N attempts fail with mixed 503/429/reset/non-JSON/500 (default 0)")


def _server_config(args: argparse.Namespace, prefix: str = "", **overrides) -> ServerConfig:
    p = prefix.replace("-", "_")
    get = lambda name: getattr(args, p + name)  # noqa: E731
    return ServerConfig(latency=get("latency"), latency_dist=get("latency_dist"), capacity=get("capacity"),
                        rate_limit=get("rate_limit"), error_rate=get("error_rate"), reset_rate=get("reset_rate"),
                        slow_body_rate=get("slow_body_rate"), time_scale=get("time_scale"),
                        seed=get("seed"), request_field=args.request_field, score_field=args.score_field,
                        shed=get("shed"), **{k: get(k) for k in ZOO_FIELDS}, **overrides)


ZOO_FIELDS = ("rate_burst", "retry_after", "shed_retry_after", "queue_limit", "quota", "quota_window",
              "halve_after", "warmup", "flaky")


def _add_client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("service and client")
    g.add_argument("--url", help="scoring endpoint; without it an embedded simulated service runs on loopback")
    g.add_argument("--request-field", default="text", help="JSON field carrying the line (default text)")
    g.add_argument("--score-field", default="score", help="path to the score in the reply: score, "
                   "result.score, 0.score for a list reply (default score)")
    g.add_argument("--profile", metavar="NAME", help="service profile (profiles/NAME.yaml or a .yaml path): "
                   "url, fields, the variable holding the API key, and the known latency/capacity/rate limit "
                   "the bounds use")
    g.add_argument("--api-key-env", metavar="VAR", help=f"the NAME of the environment variable holding the API "
                   f"key, never the key itself (default: the profile's api_key_env, else {API_KEY_ENV})")
    g.add_argument("--timeout", type=_float_at_least(0, strict=True), default=30.0, metavar="S",
                   help="per-request timeout in seconds (default 30)")
    g.add_argument("--max-retries", type=_int_at_least(0), default=5, metavar="N",
                   help="retries per line after the first try (default 5)")
    g.add_argument("--backoff-base", type=_float_at_least(0), default=0.5, metavar="S",
                   help="first backoff ceiling; doubles each retry, full jitter (default 0.5)")
    g.add_argument("--backoff-cap", type=_float_at_least(0), default=20.0, metavar="S",
                   help="longest wait between tries, Retry-After included (default 20)")
    g.add_argument("--connector-limit", type=_connector_limit, default=None, metavar="N|auto",
                   help="connections per aiohttp session; 0 = unlimited; auto = the session's concurrency "
                        "(default auto; 100 is aiohttp's own default)")


def _client_config(args: argparse.Namespace, url: str) -> ClientConfig:
    return ClientConfig(url=url, request_field=args.request_field, score_field=args.score_field,
                        timeout=args.timeout, max_retries=args.max_retries, backoff_base=args.backoff_base,
                        backoff_cap=args.backoff_cap, connector_limit=getattr(args, "connector_limit", None),
                        api_key_env=_api_key_env(args))


def _api_key_env(args: argparse.Namespace) -> str:
    """Which variable holds the API key: --api-key-env, else the profile's api_key_env (set on args by
    _profile), else $SCORING_API_KEY. A variable named on purpose but unset is said once on stderr:
    no key is sent, and $SCORING_API_KEY is not used in its place (it may belong to another service)."""
    name = getattr(args, "api_key_env", None) or API_KEY_ENV
    if name != API_KEY_ENV and not os.environ.get(name) and not getattr(args, "_key_warned", False):
        args._key_warned = True
        print(f"warning: ${name} (the API key's variable, from {getattr(args, '_key_from', '--api-key-env')}) is "
              "not set: requests carry no key", file=sys.stderr, flush=True)
    return name


def _secrets(args: argparse.Namespace | None) -> tuple[str | None, ...]:
    """The run's API key when it lives in a variable other than $SCORING_API_KEY, for redact()."""
    name = getattr(args, "api_key_env", None)
    return (os.environ.get(name),) if name else ()


@contextmanager
def _service_url(args: argparse.Namespace):
    """Yield (url, server_info): the user's url, or an embedded simulated service for this command."""
    from .server import SimulatedService, service_info

    profile = _profile(args)
    if args.url:
        yield args.url, service_info(args.url, "external", profile=profile)
        return
    config = profile.server_config() if profile is not None else _server_config(args, "server-")
    with SimulatedService(config) as service:
        yield service.url, service_info(service.url, "embedded", config, profile=profile)


def _profile(args: argparse.Namespace):
    """The --profile, if any; it gives the url and the field names the user did not give."""
    if not getattr(args, "profile", None):
        return None
    from .service import load_profile

    profile = load_profile(args.profile)
    args.url = args.url or profile.url
    if not getattr(args, "api_key_env", None):  # --api-key-env, when given, says otherwise
        args.api_key_env, args._key_from = profile.api_key_env, f"profile {profile.name or args.profile}"
    if args.request_field == "text":
        args.request_field = profile.request_field
    if args.score_field == "score":
        args.score_field = profile.score_field
    return profile


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Score every line of a text file through a slow HTTP scoring "
                                            "service, and measure which settings are fastest.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("score", help="score every line of INPUT", description="Score every line of INPUT; "
                       f"the API key, if any, comes from ${API_KEY_ENV} (or the variable --api-key-env or the "
                       "profile names).")
    p.add_argument("input", metavar="INPUT", help="UTF-8 text file, one item per line; - reads standard input "
                   "(a pipe is read once, streamed, progress without a total)")
    _add_client_options(p)
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("asyncio", "ray"), default="asyncio", help="default asyncio")
    g.add_argument("--threads", type=_int_at_least(1), metavar="N",
                   help="asyncio: event-loop threads (default CPU count); ray: request slots per worker, "
                        "all on the worker's one event loop (default: its share of C)")
    g.add_argument("--workers", type=_int_at_least(1), metavar="N",
                   help="ray: worker processes, may exceed CPUs (default CPU count)")
    g.add_argument("--max-concurrent-tasks", type=_concurrency, default=256, metavar="N|auto",
                   help="requests in flight for the whole run; auto = find the service's limit (default 256)")
    g.add_argument("--max-concurrent-tasks-max", type=_int_at_least(1), default=2000, metavar="N",
                   help="ceiling of --max-concurrent-tasks auto (default 2000)")
    g.add_argument("--rate-limit", type=_float_at_least(0, strict=True), default=None, metavar="RPS",
                   help="requests per second for the whole run, shared by every thread and worker (default none)")
    g.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None, metavar="ADDR",
                   help="join this Ray cluster instead of starting a local one (default $RAY_ADDRESS)")
    g.add_argument("--ray-dashboard", action="store_true", help="start Ray's dashboard on 127.0.0.1 and say how "
                   "to get in (it ends with the run)")
    g.add_argument("--ray-verbose", action="store_true", help="show Ray's own logs and workers' output")
    g = p.add_argument_group("files")
    g.add_argument("--output", type=Path, metavar="PATH", help="default results/scores/<input stem>.jsonl")
    g.add_argument("--cache", type=Path, default=Path("results/cache/scores.sqlite"), metavar="PATH",
                   help="persistent score cache (default results/cache/scores.sqlite)")
    g.add_argument("--no-cache", action="store_true", help="use no persistent cache (identical lines are "
                   "still requested once)")
    g.add_argument("--records-dir", type=Path, default=Path("results/runs"), metavar="DIR",
                   help="where the run record goes (default results/runs)")
    g.add_argument("--no-record", action="store_true", help="write no run record")
    g.add_argument("--max-line-bytes", type=_int_at_least(1), default=DEFAULT_MAX_LINE_BYTES, metavar="N",
                   help=f"longest line sent (default {DEFAULT_MAX_LINE_BYTES})")
    g.add_argument("--label", help="free text stored in the run record")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")
    _add_server_options(p, "server-")

    p = sub.add_parser("serve", help="run the simulated scoring service until stopped")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    p.add_argument("--port", type=_int_at_least(0), default=8000, help="default 8000; 0 = a free port")
    p.add_argument("--request-field", default="text")
    p.add_argument("--score-field", default="score")
    p.add_argument("--require-key", action="store_true",
                   help=f"answer 401 unless requests carry ${API_KEY_ENV} as a bearer token")
    p.add_argument("--exit-with-stdin", action="store_true",
                   help="stop when standard input closes (a parent process holds it open)")
    _add_server_options(p)

    p = sub.add_parser("probe", help="check a service: determinism, batch refusal, latency")
    _add_client_options(p)
    p.add_argument("--samples", type=_int_at_least(1), default=20, help="requests timed (default 20)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (one object)")
    g = p.add_argument_group("ramp: find capacity and rate limit")
    g.add_argument("--ramp", action="store_true", help="raise the requests in flight 1, 2, 4, ... until the "
                   "service's throughput stops rising; report latency, capacity, rate limit, recommended settings")
    g.add_argument("--max-concurrent-tasks", type=_int_at_least(1), default=1024, metavar="N",
                   help="the ramp never has more than N requests in flight (default 1024)")
    g.add_argument("--input", type=Path, metavar="PATH", help="send real lines from PATH (- = standard input, "
                   "read once), and predict its wall time at the recommended settings")
    g.add_argument("--save-profile", metavar="NAME", help="write the probed service profile to "
                   "profiles/NAME.yaml (or to NAME if it is a path ending in .yaml)")
    g.add_argument("--figure", type=Path, metavar="PATH", help="save the ramp's figure (PNG) to PATH")
    g.add_argument("--step-seconds", type=_float_at_least(0, strict=True), metavar="S",
                   help="seconds per step (default: 6 unloaded latencies, at least 2 s)")
    _add_server_options(p, "server-")

    p = sub.add_parser("sweep", help="run every point of a grid through papermill (notebooks/run.ipynb)")
    p.add_argument("grid", metavar="GRID.yaml", help="grid file, e.g. notebooks/grids/quick.yaml")
    p.add_argument("--resume", action="store_true", help="skip points already recorded for this grid")
    p.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS") or None, metavar="ADDR",
                   help="Ray points join this cluster (default $RAY_ADDRESS); without it the sweep starts one "
                        "local Ray cluster for all its Ray points and stops it at the end")
    p.add_argument("--ray-dashboard", action="store_true", help="the sweep's local Ray cluster serves its "
                   "dashboard on 127.0.0.1 for the whole sweep")
    p.add_argument("--records-dir", type=Path, default=paths.RUNS,
                   help="records go to DIR/<grid name>/ (default results/runs under the project root)")
    p.add_argument("--notebooks-dir", type=Path, default=paths.EXECUTED,
                   help="executed notebooks go to DIR/<grid name>/ (default results/notebooks)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")

    p = sub.add_parser("report", help="build the performance report from the run records of a sweep",
                       description="Report on the records of the named sweeps (default: the sweep run last); "
                                   "plain `score` runs only with --adhoc. Runs against different services or "
                                   "time scales are refused (exit 2), as is a report with no measured run.")
    p.add_argument("--runs", type=Path, default=paths.RUNS, help="records, searched recursively "
                   "(default results/runs under the project root)")
    p.add_argument("--sweep", action="append", metavar="NAME|GRID.yaml",
                   help="a sweep to report, by name or grid file; repeat for several; 'all' for every sweep "
                        "recorded (default: the sweep run last)")
    p.add_argument("--adhoc", action="store_true", help="also report runs made outside any sweep (`score`)")
    p.add_argument("--out", type=Path, default=paths.REPORT,
                   help="report.md, report.html, figures and CSVs (default results/report, ignored by git)")
    p.add_argument("--profile", metavar="NAME", help="service profile whose capacity tests the seed's hypothesis")

    p = sub.add_parser("bench", help="measure the engines against the simulated service and the physical limit")
    p.add_argument("--cases", default="zdabcrw", help="which cases: z (zero latency: score vs a bare aiohttp "
                   "client), d (the single-driver ceiling), a (pool 100 vs auto), b (10k lines at C=1000), "
                   "c (peak RSS), r (Ray 32x64), w (a Ray sweep's start-up); not in the default: l (limits: fixed "
                   "best / too high / auto), p (probe --ramp: probed vs configured capacity, predicted vs "
                   "measured), s (soak: faults, SIGKILL and resume), o (the zoo: auto vs best fixed on every kind of "
                   "service); default zdabcrw")
    p.add_argument("--soak-lines", type=_int_at_least(1), default=200_000, help="input length of the soak case")
    p.add_argument("--time-scale", type=_float_at_least(0, strict=True), default=0.05,
                   help="time scale of case a's 4.15 s latency (default 0.05)")
    p.add_argument("--b-time-scale", type=_float_at_least(0, strict=True), default=1.0,
                   help="time scale of case b's 1 s latency (default 1)")
    p.add_argument("--rss-sizes", default="100000,1000000", help="input lengths for case c")
    p.add_argument("--ray", action="store_true", help="add Ray (4 workers x 64 threads) to case a")
    p.add_argument("--p-time-scale", type=_float_at_least(0, strict=True), default=0.5,
                   help="time scale of case p's 4.15 s latency (probe --ramp at capacities 50, 200, 1000; "
                        "not in the default cases; default 0.5)")
    p.add_argument("--p-capacities", default="50,200,1000", help="service capacities of case p")
    return parser


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_grid, run_sweep

    grid = load_grid(args.grid)  # every grid error surfaces here, before anything runs
    summary = run_sweep(grid, records_dir=args.records_dir, notebooks_dir=args.notebooks_dir, resume=args.resume,
                        progress=args.progress, ray_address=args.ray_address, ray_dashboard=args.ray_dashboard)
    print(summary.line())
    for point, why in summary.failed:
        print(f"failed: {point}: {why}", file=sys.stderr)
    return summary.exit_code


def _sweep_name(text: str) -> str:
    """A sweep named directly, or by its grid file (whose `name` it is)."""
    if text.endswith((".yaml", ".yml")):
        from .sweep import load_grid

        return load_grid(text).name
    return text


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    if not args.runs.is_dir():
        raise ConfigError(f"no run records: {args.runs} is not a directory")
    sweeps = None
    if args.sweep:
        sweeps = [_sweep_name(s) for s in args.sweep]
    how = "`python -m scoring_lib report " + " ".join(
        [f"--runs {paths.shown(args.runs)}"] + [f"--sweep {s}" for s in (sweeps or [])]
        + (["--adhoc"] if args.adhoc else []) + [f"--out {paths.shown(args.out)}"]) + "`"
    profile = None
    if args.profile:
        from .service import load_profile

        profile = load_profile(args.profile)
    report = build_report(args.runs, args.out, how=how, sweeps=sweeps, adhoc=args.adhoc, profile=profile)
    print(report.line())
    print(report.fastest().replace("**", "").replace("`", ""))
    for verdict in report.verdicts:
        print("- " + verdict.replace("**", ""))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    try:
        sizes = tuple(int(s) for s in args.rss_sizes.split(","))
    except ValueError:
        raise ConfigError(f"--rss-sizes takes whole numbers separated by commas, got {args.rss_sizes!r}") from None
    if set(args.cases) - set("zdabcrwlpso"):
        raise ConfigError(f"--cases takes letters from zdabcrwlpso, got {args.cases!r}")
    try:
        capacities = tuple(int(s) for s in args.p_capacities.split(","))
    except ValueError:
        raise ConfigError(f"--p-capacities takes whole numbers separated by commas, got {args.p_capacities!r}") from None
    run_bench(args.cases, args.time_scale, args.b_time_scale, sizes, ray=args.ray, soak_lines=args.soak_lines,
              p_time_scale=args.p_time_scale, p_capacities=capacities)
    return 0


def _stdin_hint(path) -> None:
    """`-` on a terminal waits for typed lines: say so, as the run would otherwise look hung."""
    from .inputs import is_stdin

    if is_stdin(path) and sys.stdin is not None and sys.stdin.isatty():
        print("reading lines from the terminal (input -): end with Ctrl-D", file=sys.stderr, flush=True)


def cmd_score(args: argparse.Namespace) -> int:
    from .pipeline import score_file

    _stdin_hint(args.input)

    with _service_url(args) as (url, server_info):
        config = RunConfig(
            input=Path(args.input), client=_client_config(args, url), engine=args.engine, threads=args.threads,
            workers=args.workers, max_concurrent_tasks=args.max_concurrent_tasks,
            max_concurrent_tasks_max=args.max_concurrent_tasks_max, rate_limit=args.rate_limit, output=args.output,
            cache=None if args.no_cache else args.cache, max_line_bytes=args.max_line_bytes,
            records_dir=None if args.no_record else args.records_dir, progress=args.progress,
            cache_namespace=EMBEDDED_CACHE_NAMESPACE if server_info["kind"] == "embedded" else None,
            ray_address=args.ray_address, ray_dashboard=args.ray_dashboard, ray_verbose=args.ray_verbose,
            label=args.label)
        # The embedded service shares this process: its sockets count against the same open-file limit.
        result = score_file(config, server_info=server_info, in_process_service=server_info["kind"] == "embedded")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.stats.summary())
    print(f"output: {result.output}" + (f"; record: {result.record_path}" if result.record_path else ""))
    return result.exit_code


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve_forever

    key = None
    if args.require_key:
        key = os.environ.get(API_KEY_ENV)
        if not key:
            raise ConfigError(f"--require-key needs ${API_KEY_ENV} set")
    config = _server_config(args, host=args.host, port=args.port, require_api_key=key)
    try:
        serve_forever(config, announce=lambda url: print(f"serving on {url}", flush=True),
                      exit_with_stdin=args.exit_with_stdin)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from .probe import probe

    if args.ramp:
        return _probe_ramp(args)
    with _service_url(args) as (url, _info):
        report = probe(_client_config(args, url), samples=args.samples)
    # Everything in the report may have come from the service: masked before it is shown.
    if args.json:
        print(redact(json.dumps(report.to_dict(), indent=1), _secrets(args)))
    else:
        print(redact("\n".join(report.lines()), _secrets(args)))
    return 0 if report.deterministic and report.latencies else 1


def _probe_ramp(args: argparse.Namespace) -> int:
    from .ramp import ramp
    from .server import ServiceProcess

    if args.input is not None:
        from .inputs import open_input

        open_input(args.input).close()  # a missing input is a usage error before any request
        _stdin_hint(args.input)

    def show(step) -> None:
        p50 = f"{step.p50:.3f} s" if step.p50 is not None else "-"
        print(f"ramp: {step.concurrency} in flight: {step.throughput:.1f} ok/s, p50 {p50}, 429 {step.rate_limited}, "
              f"503 {step.shed}, errors {step.errors}", file=sys.stderr, flush=True)

    _profile(args)
    # The embedded service runs in a child process so the probe does not measure its own interpreter.
    with ServiceProcess(_server_config(args, "server-")) if not args.url else _nullcontext() as svc:
        url = args.url or svc.url
        # Its pid lets the ramp watch its CPU: a simulator short of CPU bends the curve as a capacity would.
        result = ramp(_client_config(args, url), input=args.input, save_profile=args.save_profile,
                      ceiling=args.max_concurrent_tasks, step_seconds=args.step_seconds, progress=show,
                      service_pid=svc.proc.pid if svc is not None else None)
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        result.figure().savefig(args.figure, dpi=110)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print("\n".join(result.lines()))
        if args.save_profile:
            from .service import profile_path

            print(f"profile: {profile_path(args.save_profile)}")
    return 0 if result.latency and result.recommended else 1


@contextmanager
def _nullcontext():
    yield None


COMMANDS = {"score": cmd_score, "serve": cmd_serve, "probe": cmd_probe, "sweep": cmd_sweep, "report": cmd_report,
            "bench": cmd_bench}


def _on_sigterm(signum, _frame) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command]
    # SIGTERM takes the same clean-up path as Ctrl-C (no temporary left, children stopped), exit 143.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return handler(args)
    except ScoringError as exc:
        print(f"error: {redact(str(exc), _secrets(args))}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
