"""What the seed's author found by hand, as one call: is the service deterministic, does it refuse
batches, and how long does one request take."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field

import aiohttp

from .aio import run_sync
from .client import ScoringClient
from .config import ClientConfig
from .stats import percentiles
from .server import BATCH_KEYS

PROBE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "All that glitters is not gold.",
    "Where there is smoke there is fire.",
    "Fortune favours the bold.",
]


@dataclass
class ProbeReport:
    url: str
    deterministic: bool | None
    determinism_pairs: list = field(default_factory=list)
    batch: dict = field(default_factory=dict)  # key -> HTTP status (or error text)
    latencies: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def batch_refused(self) -> bool:
        return all(v != 200 for v in self.batch.values())

    @property
    def latency(self) -> dict:
        return percentiles(self.latencies)

    def lines(self) -> list[str]:
        det = {True: "yes", False: "NO", None: "unknown (requests failed)"}[self.deterministic]
        batch = ", ".join(f"{k}: {v}" for k, v in self.batch.items())
        lat = self.latency
        out = [
            f"service: {self.url}",
            f"deterministic: {det} ({len(self.determinism_pairs)} texts sent twice)",
            f"batch bodies: {'refused' if self.batch_refused else 'ACCEPTED'} ({batch})",
        ]
        if self.latencies:
            out.append(f"latency over {len(self.latencies)} requests: p50 {lat['p50']:.3f} s, "
                       f"p90 {lat['p90']:.3f} s, p99 {lat['p99']:.3f} s, max {lat['max']:.3f} s")
        out += [f"error: {e}" for e in self.errors]
        return out

    def to_dict(self) -> dict:
        return asdict(self) | {"batch_refused": self.batch_refused, "latency": self.latency}


async def probe_async(client_config: ClientConfig, samples: int = 20) -> ProbeReport:
    report = ProbeReport(url=client_config.url, deterministic=None)
    texts = [f"{PROBE_TEXTS[i % len(PROBE_TEXTS)]} (probe sample {i})" for i in range(samples)]
    async with ScoringClient(client_config, concurrency=max(samples, len(PROBE_TEXTS))) as client:
        first = await asyncio.gather(*(client.score(t) for t in PROBE_TEXTS))
        second = await asyncio.gather(*(client.score(t) for t in PROBE_TEXTS))
        pairs = [(a.score, b.score) for a, b in zip(first, second) if a.ok and b.ok]
        report.determinism_pairs = pairs
        report.deterministic = all(a == b for a, b in pairs) if pairs else None
        report.errors += sorted({o.error for o in first + second if not o.ok})
        timed = await asyncio.gather(*(client.score(t) for t in texts))
        report.latencies = [o.latency for o in timed if o.ok]
        report.errors += sorted({o.error for o in timed if not o.ok} - set(report.errors))
    headers = {"Content-Type": "application/json"}
    if key := client_config.api_key():
        headers["Authorization"] = f"Bearer {key}"
    timeout = aiohttp.ClientTimeout(total=client_config.timeout)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        for batch_key in BATCH_KEYS:
            body = json.dumps({batch_key: PROBE_TEXTS[:2]})
            try:
                async with session.post(client_config.url, data=body) as resp:
                    report.batch[batch_key] = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                report.batch[batch_key] = f"{type(exc).__name__}"
    return report


def probe(client_config: ClientConfig, samples: int = 20) -> ProbeReport:
    """Blocking form of probe_async, safe in Jupyter."""
    return run_sync(probe_async(client_config, samples))
