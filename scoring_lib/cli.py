"""`python -m scoring_lib ...`: thin argument parsing over the library; every error is one line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

from . import paths, settings
from .cli_service import add_client_options, add_server_options, resolve_service, secrets, serve_config, service_url
from .errors import ConfigError, RunInterrupted, RunTerminated, ScoringError, Terminated
from .inputs import is_stdin, open_input
from .kinds import Number, Whole
from .outputs import output_target
from .redact import API_KEY_ENV, redact
from .service import load_profile, save_path
from .settings import EMBEDDED_CACHE_NAMESPACE, ServerConfig, add_options, default_of, options_given

PROG = "python -m scoring_lib"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


WHOLE_1, WHOLE_0, ABOVE_0 = Whole(1).parse, Whole(0).parse, Number(0, strict=True).parse
AT_LEAST_1 = Number(1).parse  # a slowdown ratio: below 1 every setting "regresses", nan never does


def _save_profile(text: str) -> Path:
    """--save-profile: a plain NAME (profiles/NAME.yaml) or a path ending in .yaml; never elsewhere."""
    try:
        return save_path(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _output(text: str) -> Path:
    """--output: refused at once when it is a folder, ends with '/', or is a device, pipe or socket."""
    try:
        output_target(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Score every line of a text file through a slow HTTP scoring "
                                            "service, and measure which settings are fastest.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("score", help="score every line of INPUT", description="Score every line of INPUT; "
                       f"the API key, if any, comes from ${API_KEY_ENV} (or the variable --api-key-env or the "
                       "profile names).")
    p.add_argument("input", metavar="INPUT", help="UTF-8 text file, one item per line; - reads standard input "
                   "(a pipe is read once, streamed, progress without a total; needs --output)")
    add_client_options(p)
    g = p.add_argument_group("engine")
    add_options(g, settings.RunConfig, "engine")
    g = p.add_argument_group("files")
    g.add_argument("--output", type=_output, metavar="PATH", help="a regular file (a symlink: its target), written whole when the run ends; default "
                   "results/scores/<input stem>.jsonl (input -, a pipe or <(...) needs --output)")
    g.add_argument("--cache", type=Path, default=default_of(settings.RunConfig, "cache"), metavar="PATH",
                   help=f"persistent score cache (default {default_of(settings.RunConfig, 'cache')})")
    g.add_argument("--no-cache", action="store_true", help="use no persistent cache (identical lines are "
                   "still requested once)")
    g.add_argument("--records-dir", type=Path, default=default_of(settings.RunConfig, "records_dir"), metavar="DIR",
                   help=f"where the run record goes (default {default_of(settings.RunConfig, 'records_dir')})")
    g.add_argument("--no-record", action="store_true", help="write no run record")
    add_options(g, settings.RunConfig, "files")
    g.add_argument("--label", help="free text stored in the run record")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")
    add_server_options(p, "server-")

    p = sub.add_parser("serve", help="run the simulated scoring service until stopped")
    p.add_argument("--host", default=default_of(ServerConfig, "host"),
                   help=f"default {default_of(ServerConfig, 'host')}")
    p.add_argument("--port", type=WHOLE_0, default=8000, help="default 8000; 0 = a free port")
    p.add_argument("--require-key", action="store_true",
                   help=f"answer 401 unless requests carry ${API_KEY_ENV} as a bearer token")
    p.add_argument("--exit-with-stdin", action="store_true",
                   help="stop when standard input closes (a parent process holds it open)")
    p.add_argument("--profile", metavar="NAME", help="simulate this service profile (profiles/NAME.yaml or a .yaml "
                   "path): its latency, capacity, rate limit, time scale and behaviour (`simulated`); an option "
                   "given here wins over it")
    add_server_options(p)

    p = sub.add_parser("probe", help="check a service: determinism, batch refusal, latency")
    add_client_options(p)
    p.add_argument("--samples", type=WHOLE_1, default=20, help="requests timed (default 20)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (one object)")
    g = p.add_argument_group("ramp: find capacity and rate limit")
    g.add_argument("--ramp", action="store_true", help="raise the requests in flight 1, 2, 4, ... until the "
                   "service's throughput stops rising; report latency, capacity, rate limit, recommended settings")
    g.add_argument("--max-concurrent-tasks", type=WHOLE_1, default=1024, metavar="N",
                   help="the ramp never has more than N requests in flight (default 1024)")
    g.add_argument("--input", type=Path, metavar="PATH", help="send real lines from PATH (- = standard input, "
                   "read once), and predict its wall time at the recommended settings")
    g.add_argument("--save-profile", metavar="NAME", type=_save_profile, help="write the probed service profile to "
                   "profiles/NAME.yaml (or to NAME if it is a path ending in .yaml)")
    g.add_argument("--figure", type=Path, metavar="PATH", help="save the ramp's figure (PNG) to PATH")
    g.add_argument("--step-seconds", type=ABOVE_0, metavar="S",
                   help="seconds per step (default: 6 unloaded latencies, at least 2 s)")
    add_server_options(p, "server-")

    p = sub.add_parser("sweep", help="run every point of a grid through papermill (notebooks/run.ipynb)")
    p.add_argument("grid", metavar="GRID.yaml", help="grid file, e.g. notebooks/grids/quick.yaml")
    p.add_argument("--resume", action="store_true", help="run only the measured repeats not yet recorded as ok")
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
    p.add_argument("--runs", type=Path, default=None, help="records, searched recursively (default results/runs "
                   "under the project root; with no sweep there, the committed reference, said so)")
    p.add_argument("--sweep", action="append", metavar="NAME|GRID.yaml",
                   help="a sweep to report, by name or grid file; repeat for several; 'all' for every sweep "
                        "recorded (default: the sweep run last)")
    p.add_argument("--adhoc", action="store_true", help="also report runs made outside any sweep (`score`)")
    p.add_argument("--out", type=Path, default=paths.REPORT,
                   help="report.md, report.html, figures and CSVs (default results/report, ignored by git)")
    p.add_argument("--profile", metavar="NAME", help="service profile whose capacity tests the seed's hypothesis")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare B with A per setting (each a folder of "
                   "records, a sweep name or a commit): ratio B/A with its 95%% interval, changes beyond 1.10x flagged")
    p.add_argument("--fail-above", type=AT_LEAST_1, metavar="RATIO", help="with --compare: exit 1 when a setting of B "
                   "is slower than RATIO x A beyond the noise (a finite number >= 1, e.g. 1.10)")

    p = sub.add_parser("bench", help="measure the engines against the simulated service and the physical limit")
    p.add_argument("--cases", default="zdabcrw", help="which cases: z (zero latency: score vs a bare aiohttp "
                   "client), d (the single-driver ceiling), a (pool 100 vs auto), b (10k lines at C=1000), "
                   "c (peak RSS), r (Ray 32x64), w (a Ray sweep's start-up); not in the default: l (limits: fixed "
                   "best / too high / auto), p (probe --ramp: probed vs configured capacity, predicted vs "
                   "measured), s (soak: faults, SIGKILL and resume), o (the zoo: auto vs best fixed on every kind of "
                   "service); default zdabcrw")
    p.add_argument("--soak-lines", type=WHOLE_1, default=200_000, help="input length of the soak case")
    p.add_argument("--time-scale", type=ABOVE_0, default=0.05,
                   help="time scale of case a's 4.15 s latency (default 0.05)")
    p.add_argument("--b-time-scale", type=ABOVE_0, default=1.0,
                   help="time scale of case b's 1 s latency (default 1)")
    p.add_argument("--rss-sizes", default="100000,1000000", help="input lengths for case c")
    p.add_argument("--ray", action="store_true", help="add Ray (4 workers x 64 threads) to case a")
    p.add_argument("--p-time-scale", type=ABOVE_0, default=0.5,
                   help="time scale of case p's 4.15 s latency (probe --ramp at capacities 50, 200, 1000; "
                        "not in the default cases; default 0.5)")
    p.add_argument("--p-capacities", default="50,200,1000", help="service capacities of case p")
    p.add_argument("--strict", action="store_true", help="exit 1 when any target is missed (for CI or a nightly run)")
    return parser


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_grid, run_sweep

    grid = load_grid(args.grid)  # every grid error surfaces here, before anything runs
    try:
        summary = run_sweep(grid, records_dir=args.records_dir, notebooks_dir=args.notebooks_dir,
                            resume=args.resume, progress=args.progress, ray_address=args.ray_address,
                            ray_dashboard=args.ray_dashboard)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (Terminated)
        what = {signal.SIGTERM: "terminated", getattr(signal, "SIGHUP", None): "hung up"}.get(
            getattr(exc, "signum", None), "interrupted")
        kept = f"the runs recorded so far are kept; `sweep {args.grid} --resume` runs the rest"
        if isinstance(exc, Terminated):
            raise RunTerminated(f"{what}: {kept}", exc.signum) from None
        raise RunInterrupted(f"{what}: {kept}") from None
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

    if args.runs is not None and not args.runs.is_dir():
        raise ConfigError(f"no run records: {args.runs} is not a directory")
    if args.compare:
        from .compare import compare_runs

        found = compare_runs(*args.compare, runs_dir=args.runs, out_dir=args.out / "compare" if args.out else None)
        print("\n".join(found.lines()) + f"\n-> {paths.shown(found.page)}")
        worse = found.regressions(args.fail_above) if args.fail_above else []
        return 1 if len(worse) else 0
    sweeps = None
    if args.sweep:
        sweeps = [_sweep_name(s) for s in args.sweep]
    how = "`python -m scoring_lib report " + " ".join(
        ([f"--runs {paths.shown(args.runs)}"] if args.runs else []) + [f"--sweep {s}" for s in (sweeps or [])]
        + (["--adhoc"] if args.adhoc else []) + [f"--out {paths.shown(args.out)}"]) + "`"
    profile = load_profile(args.profile) if args.profile else None
    report = build_report(args.runs, args.out, how=how, sweeps=sweeps, adhoc=args.adhoc, profile=profile)
    print(report.line())
    print(report.fastest().replace("**", "").replace("`", ""))
    for verdict in report.verdicts:
        print("- " + verdict.replace("**", ""))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench, tally

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
    results = run_bench(args.cases, args.time_scale, args.b_time_scale, sizes, ray=args.ray,
                        soak_lines=args.soak_lines, p_time_scale=args.p_time_scale, p_capacities=capacities)
    return 1 if args.strict and tally(results)[1] else 0


def _stdin_hint(path) -> None:
    """`-` on a terminal waits for typed lines: say so, as the run would otherwise look hung."""

    if is_stdin(path) and sys.stdin is not None and sys.stdin.isatty():
        print("reading lines from the terminal (input -): end with Ctrl-D", file=sys.stderr, flush=True)


def cmd_score(args: argparse.Namespace) -> int:
    from .pipeline import score_file

    if args.output is not None:  # without it, `-` is refused (exit 2) before a line is read
        _stdin_hint(args.input)
    svc = resolve_service(args)
    with service_url(args, svc) as (url, server_info):
        run = options_given(args, settings.RunConfig)
        run["ray_address"] = run.get("ray_address") or os.environ.get("RAY_ADDRESS") or None
        config = settings.RunConfig(
            input=Path(args.input), client=svc.client_config(url), output=args.output,
            cache=None if args.no_cache else args.cache, records_dir=None if args.no_record else args.records_dir,
            progress=args.progress, label=args.label,
            cache_namespace=EMBEDDED_CACHE_NAMESPACE if server_info["kind"] == "embedded" else None, **run)
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
    config = serve_config(args, host=args.host, port=args.port, require_api_key=key)
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
    svc = resolve_service(args)
    with service_url(args, svc) as (url, _info):
        report = probe(svc.client_config(url), samples=args.samples)
    # Everything in the report may have come from the service: masked before it is shown.
    if args.json:
        print(redact(json.dumps(report.to_dict(), indent=1), secrets(args)))
    else:
        print(redact("\n".join(report.lines()), secrets(args)))
    return 0 if report.deterministic and report.latencies else 1


def _probe_ramp(args: argparse.Namespace) -> int:
    from .ramp import ramp
    from .server import ServiceProcess

    if args.input is not None:

        open_input(args.input).close()  # a missing input is a usage error before any request
        _stdin_hint(args.input)

    def show(step) -> None:
        p50 = f"{step.p50:.3f} s" if step.p50 is not None else "-"
        print(f"ramp: {step.concurrency} in flight: {step.throughput:.1f} ok/s, p50 {p50}, 429 {step.rate_limited}, "
              f"503 {step.shed}, errors {step.errors}", file=sys.stderr, flush=True)

    svc = resolve_service(args)
    # The embedded service runs in a child process so the probe does not measure its own interpreter.
    with ServiceProcess(svc.server_config(args)) if not svc.url else nullcontext() as child:
        url = svc.url or child.url
        # Its pid lets the ramp watch its CPU: a simulator short of CPU bends the curve as a capacity would.
        result = ramp(svc.client_config(url), input=args.input, save_profile=args.save_profile,
                      ceiling=args.max_concurrent_tasks, step_seconds=args.step_seconds, progress=show,
                      service_pid=child.proc.pid if child is not None else None)
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        result.figure().savefig(args.figure, dpi=110)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print("\n".join(result.lines()))
        if args.save_profile:
            print(f"profile: {args.save_profile}" if result.latency else
                  f"profile: not saved ({args.save_profile}): the ramp measured no latency")
    return 0 if result.latency and result.recommended else 1


COMMANDS = {"score": cmd_score, "serve": cmd_serve, "probe": cmd_probe, "sweep": cmd_sweep, "report": cmd_report,
            "bench": cmd_bench}


def _on_sigterm(signum, _frame) -> None:
    raise Terminated(signum)


# SIGTERM and SIGHUP (the terminal closed, the ssh session dropped) take the same clean-up path as Ctrl-C:
# no temporary left, children stopped, one line, exit 128 + the signal's number.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command]
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _on_sigterm) for sig in STOP_SIGNALS} if main_thread else {}
    try:
        return handler(args)
    except ScoringError as exc:
        print(f"error: {redact(str(exc), secrets(args))}", file=sys.stderr)
        return exc.exit_code
    except Terminated as exc:
        print("terminated" if exc.signum == signal.SIGTERM else "hung up", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
