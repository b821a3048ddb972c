"""The run pipeline both engines share: read, settle what needs no request, dedupe, consult the
cache, dispatch, collect, write in order, record. Engines only keep requests in flight."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from .cache import ScoreCache, cache_namespace
from .client import Outcome
from .failures import Failure
from .config import RunConfig
from .engines import Dispatcher, open_engine
from .errors import ConfigError, RunInterrupted, RunTerminated, ServiceUnusable, Terminated
from .inputs import count_lines, open_input, read_lines
from .outputs import OrderedRowWriter, Row
from .resources import ensure_open_files, files_needed, sockets_needed

REORDER_LIMIT = 50_000  # rows held for order before the reader waits
SAMPLE_SIZE = 20_000  # requests kept for latency percentiles and the in-flight timeline


class Reservoir:
    """A uniform sample of at most `size` items, so a million-line run keeps a fixed-size summary.

    Li's Algorithm L: once full, it draws how many items to skip before the next one is kept, so an
    item that is not kept costs a comparison, not a random number (this runs once per request)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seen = 0
        self.items: list = []
        self._rng = random.Random(seed)
        self._w = 1.0
        self._next = size  # the index (0-based, in arrival order) of the next item kept once full

    def _uniform(self) -> float:
        return self._rng.random() or 1e-12  # in (0, 1): both logarithms below stay finite

    def _skip(self) -> None:
        self._w *= math.exp(math.log(self._uniform()) / self.size)
        self._next += int(math.log(self._uniform()) / math.log1p(-self._w)) + 1

    def add(self, item) -> None:
        index = self.seen
        self.seen = index + 1
        if index < self.size:
            self.items.append(item)
            if self.seen == self.size:
                self._next = index
                self._skip()
        elif index == self._next:
            self.items[self._rng.randrange(self.size)] = item
            self._skip()


@dataclass
class RunStats:
    """What a run measured; turned into the run record."""

    lines: int = 0
    counts: dict = field(default_factory=lambda: {"ok": 0, "empty": 0, "error": 0})
    unique_requested: int = 0
    cache_hits: int = 0
    duplicates: int = 0
    requests: int = 0
    retries: int = 0
    startup_seconds: float = 0.0
    scoring_seconds: float = 0.0
    total_seconds: float = 0.0
    scoring_started: float = 0.0  # wall clock
    requests_sample: Reservoir = field(default_factory=lambda: Reservoir(SAMPLE_SIZE))
    engine_info: dict = field(default_factory=dict)
    causes: Counter = field(default_factory=Counter)  # error rows by cause ("HTTP 503", "timeout", ...)

    def summary(self) -> str:
        rate = self.lines / self.scoring_seconds if self.scoring_seconds > 0 else float("inf")
        c = self.counts
        errors = ""
        if self.causes:
            top = self.causes.most_common(3)
            rest = sum(self.causes.values()) - sum(n for _, n in top)
            errors = " (" + ", ".join(f"{n} {cause}" for cause, n in top) + (f", {rest} other" if rest else "") + ")"
        limits = self.engine_info.get("limits") or {}
        limit = (f", limit now {round(limits['final_limit'])}" if limits.get("mode") == "adaptive" and self.requests
                 else "")
        return (f"{self.lines} lines: {c['ok']} ok, {c['empty']} empty, {c['error']} error{errors}; "
                f"{self.requests} requests, {self.retries} retries; {self.cache_hits} from cache{limit}; "
                f"scoring {self.scoring_seconds:.2f} s ({rate:.1f} lines/s), start-up {self.startup_seconds:.2f} s")


@dataclass
class RunResult:
    """A finished run: where its rows and record are, and what it measured."""

    config: RunConfig
    output: Path
    stats: RunStats
    record: dict
    record_path: Path | None
    warnings: list = field(default_factory=list)  # things a user should know that did not fail the run

    @property
    def exit_code(self) -> int:
        return 1 if self.stats.counts["error"] else 0


class _Run:
    def __init__(self, config: RunConfig, engine: Dispatcher, cache: ScoreCache, writer: OrderedRowWriter,
                 stats: RunStats, bar: tqdm, source=None) -> None:
        self.config, self.engine, self.cache, self.writer, self.stats, self.bar = (
            config, engine, cache, writer, stats, bar)
        self.source = source if source is not None else config.input  # an open input is read once
        self.waiting: dict[bytes, list[int]] = {}  # key -> line numbers waiting for its result
        self.run_errors: dict[bytes, str] = {}  # texts that failed in this run: duplicates share the error
        self.run_causes: dict[bytes, str | None] = {}
        self.outstanding = 0

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
                if line.status == "error":
                    self.stats.causes["unreadable line"] += 1
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
            self.waiting[key] = [line.number]
            batch.append((key, line.text))
        return True

    def collect(self, results: list[tuple[bytes, Outcome]]) -> None:
        scored = []
        for key, outcome in results:
            if outcome.fatal:
                # No request succeeded and more will not help: stop, and write nothing that looks like a result.
                where = urlsplit(self.config.client.url)
                raise ServiceUnusable(f"{outcome.error} ({where.scheme}://{where.hostname}:{where.port or ''}"
                                      f"{where.path}){key_hint(outcome.failure, self.config.client)}; nothing written")
            self.outstanding -= 1
            self.stats.requests += outcome.attempts
            self.stats.retries += outcome.attempts - 1
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
                self.collect(self.engine.poll(timeout=0.05))


def key_hint(failure: Failure | None, client) -> str:
    """What to check when the service refused the key (never the key itself)."""
    if failure is None or not failure.refused_key:
        return ""
    sent = "a key from" if client.api_key() else "no key: nothing in"
    return f"; the service refused the API key (this run sent {sent} ${client.api_key_env}; see --api-key-env)"


def score_file(config: RunConfig, *, server_info: dict | None = None, write_record: bool = True,
               in_process_service: bool = False) -> RunResult:
    """Score every line of `config.input`; blocking, safe to call from Jupyter (engines run their
    event loops in their own threads or processes, never in the caller's loop).
    `in_process_service`: the service runs in this process (the CLI's embedded one), so its
    sockets count against this process's open-file limit too."""
    # The input is opened once (pipes and FIFOs can be read only once); this is also the input check.
    source = open_input(config.input)
    try:
        check_paths(config)
        total = count_lines(source)  # None for a stream: progress without a total
        # Never more workers than lines that can be in flight: C = 10^6 on a 3-line file costs nothing.
        run_config = config
        if total is not None and total < config.concurrency_ceiling:
            field_name = "max_concurrent_tasks_max" if config.adaptive else "max_concurrent_tasks"
            run_config = dataclasses.replace(config, **{field_name: max(1, total)})
        extra = sockets_needed(run_config) if in_process_service else 0
        ensure_open_files(files_needed(run_config, extra), f"--max-concurrent-tasks {config.max_concurrent_tasks}")
        return _score_open_file(config, run_config, source, total, server_info, write_record)
    finally:
        source.close()


def check_paths(config: RunConfig) -> None:
    """Refuse an output that is a directory or the input itself, before anything starts."""
    out = Path(config.resolved_output)
    if out.is_dir():
        raise ConfigError(f"output {out} is a directory; give a file path with --output")
    try:
        same = out.exists() and os.path.samefile(out, config.input)
    except OSError:
        same = False
    if same or out.resolve() == Path(config.input).resolve():
        raise ConfigError(f"output {out} is the input file; give another --output")


def _score_open_file(config: RunConfig, run_config: RunConfig, source, total: int | None,
                     server_info: dict | None, write_record: bool) -> RunResult:
    from .records import build_record, save_record

    namespace = cache_namespace(config.namespace, config.client.request_field, config.client.score_field)
    stats = RunStats()
    t_start = time.perf_counter()
    cache = writer = None
    disable = None if config.progress is None else not config.progress
    try:
        # The engine starts first: if it cannot (Ray missing, cluster unreachable), nothing is written.
        with open_engine(run_config) as engine:
            stats.startup_seconds = time.perf_counter() - t_start
            cache = ScoreCache(config.cache, namespace)
            writer = OrderedRowWriter(config.resolved_output)
            with tqdm(total=total, unit="line", disable=disable, dynamic_ncols=True, leave=False) as bar:
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
            raise RunTerminated(f"terminated: {kept}") from None
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
    import asyncio

    return await asyncio.to_thread(score_file, config, **kwargs)
