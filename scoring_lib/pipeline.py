"""The run pipeline both engines share: read, settle what needs no request, dedupe, consult the
cache, dispatch, collect, write in order, record. Engines only keep requests in flight."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .bounds import effective_pool, in_flight_limit, queue_timeout_warning, sessions_of
from .cache import ScoreCache, cache_namespace
from .client import Outcome
from .config import RunConfig
from .engines import Dispatcher, EngineFactory, open_engine
from .errors import ConfigError, RunInterrupted, RunTerminated, ServiceUnusable, Terminated
from .failures import Failure, key_hint
from .inputs import count_lines, is_regular, is_stdin, open_input, read_lines
from .limit_settings import profile_start
from .loops import event_loop_name
from .outputs import OrderedRowWriter, Row, check_not_being_written, output_target
from .record import RunRecord, build_record, save_record
from .resources import ensure_run_files, fit_auto_ceiling, sockets_needed
from .stats import SAMPLE_SIZE, Reservoir, RunStats  # noqa: F401 - re-exported: moved to stats.py
from .watchdog import Watchdog, stall_seconds

REORDER_LIMIT = 50_000  # rows held for order before the reader waits


@dataclass
class RunResult:
    """A finished run: where its rows and record are, and what it measured."""

    config: RunConfig
    output: Path
    stats: RunStats
    record: RunRecord
    record_path: Path | None
    warnings: list = field(default_factory=list)  # things a user should know that did not fail the run

    @property
    def exit_code(self) -> int:
        return 1 if self.stats.counts["error"] else 0


class ProgressBar(Protocol):
    """What the run needs of a progress bar (tqdm's, or none)."""

    def update(self, n: int = 1) -> object: ...

    def catch_up(self) -> None:
        """Draw lines counted but not yet drawn (the run calls it when no result came for a moment)."""


class _NoBar:
    """No bar is shown: nothing to draw, no tqdm to import, no monitor thread to start."""

    def update(self, n: int = 1) -> None:
        pass

    def catch_up(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(progress: bool | None, total: int | None):
    """A tqdm bar when one is shown (`progress` True, or None and stderr is a terminal), else a no-op."""
    if progress is False or (progress is None and not _on_terminal()):
        return _NoBar()
    from tqdm.auto import tqdm  # start-up: only a run that shows a bar loads tqdm.auto (notebook detection)

    return _CatchUpBar(tqdm(total=total, unit="line", disable=None if progress is None else False,
                            dynamic_ncols=True, leave=False))


class _CatchUpBar:
    """A tqdm bar that also draws when the run goes quiet. tqdm draws on `update` at most every
    `mininterval`, so against a slow service a wave's replies, arriving together, drew only the first
    of them: the rest showed with the next wave's first reply, one round trip late."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self._drawn = bar.n

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def catch_up(self) -> None:
        if not self.bar.disable and self.bar.n not in (self.bar.last_print_n, self._drawn):
            self.bar.refresh()
            self._drawn = self.bar.n

    def __enter__(self) -> "_CatchUpBar":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)


def _on_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class _Run:
    def __init__(self, config: RunConfig, engine: Dispatcher, cache: ScoreCache, writer: OrderedRowWriter,
                 stats: RunStats, bar: "ProgressBar", source=None) -> None:
        self.config, self.engine, self.cache, self.writer, self.stats, self.bar = (
            config, engine, cache, writer, stats, bar)
        self.source = source if source is not None else config.input  # an open input is read once
        # key -> line numbers waiting for its result, packed (8 bytes a line, not a list's pointer and int
        # object each): two million copies of one line in flight hold 16 MB, not 70
        self.waiting: dict[bytes, array] = {}
        self.run_errors: dict[bytes, str] = {}  # texts that failed in this run: duplicates share the error
        self.run_causes: dict[bytes, str | None] = {}
        self.outstanding = 0
        self.watchdog = Watchdog(stall_seconds(config), getattr(engine, "activity", None))

    def emit(self, row: Row) -> None:
        self.writer.add(row)
        self.bar.update(1)

    def feed(self, lines, batch: list) -> bool:
        """Read lines while the engine has room; False once the input is exhausted."""
        room = self.engine.room()
        while room - len(batch) > 0 and self.writer.pending < REORDER_LIMIT:
            line = next(lines, None)
            if line is None:
                return False
            self.stats.lines += 1
            if line.text is None:
                if line.problem is not None:
                    self.stats.causes[line.problem.value] += 1
                self.emit(Row(line.number, None, line.status, line.error, 0))
                continue
            key = self.cache.key(line.text)
            if (waiters := self.waiting.get(key)) is not None:
                waiters.append(line.number)
                self.stats.duplicates += 1
                continue
            score = self.cache.get(key)
            if score is not None:
                self.stats.cache_hits += 1
                self.emit(Row(line.number, score, "ok", None, 0))
                continue
            if (error := self.run_errors.get(key)) is not None:
                self.stats.duplicates += 1
                self.stats.causes[self.run_causes.get(key) or "other"] += 1
                self.emit(Row(line.number, None, "error", error, 0))
                continue
            self.waiting[key] = array("q", (line.number,))
            batch.append((key, line.text))
        return True

    def collect(self, results: list[tuple[bytes, Outcome]]) -> None:
        scored = []
        for key, outcome in results:
            if outcome.fatal:
                # No request succeeded and more will not help: stop, and write nothing that looks like a result.
                where = urlsplit(self.config.client.url)
                raise ServiceUnusable(f"{outcome.error} ({where.scheme}://{where.hostname}:{where.port or ''}"
                                      f"{where.path}){key_hint(outcome.failure, self.config.client)}"
                                      f"{redirect_hint(outcome.failure)}; nothing written")
            self.outstanding -= 1
            self.stats.requests += outcome.attempts
            self.stats.retries += max(0, outcome.attempts - 1)  # 0 attempts: stopped or failed before sending
            self.stats.requests_sample.add((outcome.sent, outcome.finished, outcome.latency, outcome.ok))
            numbers = self.waiting.pop(key)
            if outcome.ok:
                scored.append((key, outcome.score))
            else:
                self.run_errors[key] = outcome.error
                self.run_causes[key] = outcome.cause
                self.stats.causes[outcome.cause or "other"] += len(numbers)
            for i, number in enumerate(numbers):
                attempts = outcome.attempts if i == 0 else 0
                status = "ok" if outcome.ok else "error"
                self.emit(Row(number, outcome.score, status, outcome.error, attempts))
        self.cache.put_many(scored)

    def run(self) -> None:
        lines = read_lines(self.source, self.config.max_line_bytes)
        more = True
        while True:
            batch: list = []
            if more:
                more = self.feed(lines, batch)
            if batch:
                self.stats.unique_requested += len(batch)
                self.outstanding += len(batch)
                self.engine.submit(batch)
            if not more and self.outstanding == 0:
                return
            if self.outstanding:
                results = self.engine.poll(timeout=0.05)
                self.watchdog.check(bool(results), self.outstanding)
                self.collect(results)
                if not results:  # a quiet moment: the lines of the last replies show now, not with the next
                    self.bar.catch_up()


def redirect_hint(failure: Failure | None) -> str:
    """Where a service that only redirects points (redirects are never followed)."""
    if failure is None or failure.location is None:
        return ""
    return f"; it redirects to {failure.location} (not followed: give that url with --url if it is the service)"


def score_file(config: RunConfig, *, server_info: dict | None = None, write_record: bool = True,
               in_process_service: bool = False, engine: str | EngineFactory | None = None) -> RunResult:
    """Score every line of `config.input`; blocking, safe to call from Jupyter (engines run their
    event loops in their own threads or processes, never in the caller's loop).
    `in_process_service`: the service runs in this process (the CLI's embedded one), so its
    sockets count against this process's open-file limit too.
    `engine`: a registered engine name or a factory (engines.EngineFactory) to use instead of the one
    `config.engine` names (bench's instant engine, a test's fake service-less engine)."""
    # The input is opened once (pipes and FIFOs can be read only once); this is also the input check.
    source = open_input(config.input)
    try:
        check_paths(config, source)
        event_loop_name()  # a bogus $SCORING_EVENT_LOOP is refused here, not in a loop thread
        total = count_lines(source)  # None for a stream: progress without a total
        config = profile_start(config, server_info)  # auto starts at a saved profile's capacity
        config, threads_reason = resolve_threads(config, total, server_info)
        # Never more workers than lines that can be in flight: C = 10^6 on a 3-line file costs nothing.
        run_config = config
        if total is not None and total < config.concurrency_ceiling:
            field_name = "max_concurrent_tasks_max" if config.adaptive else "max_concurrent_tasks"
            run_config = dataclasses.replace(config, **{field_name: max(1, total)})
        run_config, lowered = fit_auto_ceiling(run_config, in_process_service)
        extra = sockets_needed(run_config) if in_process_service else 0
        ensure_run_files(run_config, config, extra)
        result = _score_open_file(config, run_config, source, total, server_info, write_record, engine,
                                  threads_reason)
        note = queue_note(run_config, server_info)
        result.warnings[:0] = [w for w in (lowered, note) if w]
        return result
    finally:
        source.close()


def resolve_threads(config: RunConfig, total: int | None, server_info: dict | None) -> tuple[RunConfig, str | None]:
    """The asyncio engine's event-loop threads when --threads was not given, chosen from what is known now
    (RunConfig.threads_for: the line count, the service's latency), and why; the config as given otherwise."""
    threads, reason = config.threads_for(total, known_latency(server_info))
    if reason is None:
        return config, None
    return dataclasses.replace(config, threads=threads), reason


def known_latency(server_info: dict | None) -> float | None:
    """The service's unloaded latency in seconds on the wire, when a profile or the simulator's settings
    say it; None when unknown."""
    info = server_info or {}
    value = ((info.get("profile") or {}).get("latency") or {}).get("value")
    if value is None and isinstance(info.get("latency"), (int, float)):  # a simulator at zero latency
        value = info["latency"] * info.get("time_scale", 1.0)
    return float(value) if isinstance(value, (int, float)) else None


def known_capacity(server_info: dict | None) -> float | None:
    """Requests the service serves at once, when a profile or the simulator's settings say it."""
    info = server_info or {}
    value = ((info.get("profile") or {}).get("capacity") or {}).get("value")
    if value is None and isinstance(info.get("capacity"), (int, float)) and info["capacity"] > 0:
        value = info["capacity"]
    return float(value) if isinstance(value, (int, float)) else None


def queue_note(config: RunConfig, server_info: dict | None) -> str | None:
    """bounds.queue_timeout_warning for a fixed C (`auto` cuts its limit on timeouts itself)."""
    if config.adaptive:
        return None
    c = config.concurrency_ceiling
    sessions = sessions_of(config.engine, config.resolved_threads, config.workers, c)
    in_flight = in_flight_limit(effective_pool(config.client.connector_limit, sessions), c, None)
    return queue_timeout_warning(in_flight, known_latency(server_info), known_capacity(server_info),
                                 config.client.timeout)


def check_paths(config: RunConfig, source=None) -> None:
    """Refuse an output that is a directory, a device, pipe or socket, or the input itself, and the default
    output of standard input or a stream (its name, stdin.jsonl or e.g. 63.jsonl, is every other one's
    too: two piped runs in one folder would overwrite each other), before anything starts."""
    out = output_target(config.resolved_output)
    check_not_being_written(out)
    if config.output is None and is_stdin(config.input):
        raise ConfigError(f"input - (standard input) needs --output PATH: its default, {config.resolved_output}, "
                          f"would be every piped run's")
    if config.output is None and source is not None and not is_regular(source):
        raise ConfigError(f"input {config.input} is a stream (pipe, FIFO or process substitution): give --output "
                          f"PATH (its default, {config.resolved_output}, would be any such stream's)")
    try:
        same = out.exists() and os.path.samefile(out, config.input)
    except OSError:
        same = False
    if same or out.resolve() == Path(config.input).resolve():
        raise ConfigError(f"output {out} is the input file; give another --output")


def _score_open_file(config: RunConfig, run_config: RunConfig, source, total: int | None,
                     server_info: dict | None, write_record: bool,
                     engine_factory: str | EngineFactory | None = None,
                     threads_reason: str | None = None) -> RunResult:
    namespace = cache_namespace(config.namespace, config.client.request_field, config.client.score_field)
    stats = RunStats()
    t_start = time.perf_counter()
    cache = writer = None
    try:
        # The engine starts first: if it cannot (Ray missing, cluster unreachable), nothing is written.
        with open_engine(run_config, engine_factory) as engine:
            stats.startup_seconds = time.perf_counter() - t_start
            if (server_info or {}).get("kind") == "embedded" and hasattr(engine, "open_gate"):
                # This process's own simulator, just started, asks for no key: no answer of it can be fatal,
                # so the first-contact gate (which holds all but a few requests for a moment) has nothing to do.
                engine.open_gate()
            cache = ScoreCache(config.cache, namespace)
            writer = OrderedRowWriter(config.resolved_output)
            with progress_bar(config.progress, total) as bar:
                stats.scoring_started = time.time()
                t_scoring = time.perf_counter()
                _Run(run_config, engine, cache, writer, stats, bar, source).run()
                stats.scoring_seconds = time.perf_counter() - t_scoring
            stats.engine_info = engine.info()
        stats.counts = dict(writer.counts)
        output = writer.commit()
    except KeyboardInterrupt as exc:
        if writer is not None:
            writer.abort()
        kept = (f"scores so far are kept in {config.cache}; run again to resume" if config.cache
                else "no cache was kept (--no-cache)")
        if isinstance(exc, Terminated):
            what = "terminated" if exc.signum == 15 else "hung up"
            raise RunTerminated(f"{what}: {kept}", exc.signum) from None
        raise RunInterrupted(f"interrupted: {kept}") from None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if cache is not None:
            cache.close()
    stats.total_seconds = time.perf_counter() - t_start
    if run_config is not config:
        stats.engine_info["effective_concurrency"] = run_config.concurrency_ceiling
    if threads_reason is not None:
        stats.engine_info |= {"threads_chosen": config.threads, "threads_reason": threads_reason}
    record = build_record(config, stats, server_info=server_info)
    warnings = []
    record_path = None
    if write_record and config.records_dir:
        # The rows are complete and in place: a record that cannot be written is a warning, not a failure.
        try:
            record_path = save_record(record, config.records_dir)
        except OSError as exc:
            warnings.append(f"run record not written to {config.records_dir}: {exc.strerror or exc}")
    return RunResult(config, output, stats, record, record_path, warnings)


async def score_file_async(config: RunConfig, **kwargs) -> RunResult:
    """Awaitable form for code already inside an event loop: the blocking run goes to a thread."""

    return await asyncio.to_thread(score_file, config, **kwargs)
