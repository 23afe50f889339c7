"""The continuous consumer: the same applier in a long-running loop, for second-scale freshness.

``python -m taobao_assets.streaming follow`` holds the stream's lease while it runs, so the
sensor's runs and the follower never apply at the same time: while a follower holds the lease the
sensor launches no run and instead reports the follower's progress (which the follower publishes
to Redis every couple of seconds) as asset observations of the real-time tables. When the
follower stops or dies, its lease expires and the sensor's runs catch up from the applied offsets.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from taobao_assets.streaming.applier import Applier, ApplyReport, percentile
from taobao_assets.streaming.resource import StreamingResource

#: Lease owners of continuous consumers start with this; the sensor tells them from runs by it.
FOLLOW_OWNER_PREFIX = "follow:"
#: Freshness percentiles in the published progress cover about this many latest records.
FRESHNESS_WINDOW = 20_000
#: The since-start freshness counts records per millisecond up to this, and beyond it in one bucket.
HISTOGRAM_MS = 120_000


class FreshnessHistogram:
    """Freshness of every record since the follower started, in fixed memory (one count per ms).

    The published window says how fresh the stream is now; this says how fresh it was over a
    whole run, which is what a benchmark at a sustained rate reports.
    """

    def __init__(self) -> None:
        self.counts = np.zeros(HISTOGRAM_MS + 1, np.int64)
        self.max_ms = 0.0

    def add(self, values_ms: list[float]) -> None:
        if not values_ms:
            return
        values = np.asarray(values_ms, np.float64)
        self.max_ms = max(self.max_ms, float(values.max()))
        self.counts += np.bincount(np.clip(values, 0, HISTOGRAM_MS).astype(np.int64), minlength=HISTOGRAM_MS + 1)

    def summary(self) -> dict[str, float | int | None]:
        """Records, p50, p99 (to the ms, at most :data:`HISTOGRAM_MS`) and max since the start."""
        total = int(self.counts.sum())
        if not total:
            return {"records": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
        cumulative = np.cumsum(self.counts)
        at = {q: int(np.searchsorted(cumulative, q / 100 * total)) for q in (50, 99)}
        return {"records": total, "p50_ms": at[50], "p99_ms": at[99], "max_ms": round(self.max_ms, 1)}


class ProgressReporter:
    """Publishes the follower's progress to Redis every ``every_seconds``."""

    def __init__(self, applier: Applier, every_seconds: float) -> None:
        self.applier = applier
        self.every_seconds = every_seconds
        self.window: deque[float] = deque(maxlen=FRESHNESS_WINDOW)
        self.since_start = FreshnessHistogram()
        self.last = time.monotonic()
        self.last_committed = 0

    def progress(self) -> dict[str, Any]:
        applier, report = self.applier, self.applier.report
        self.window.extend(report.freshness_ms)
        self.since_start.add(report.freshness_ms)
        report.freshness_ms.clear()  # the window keeps what the percentiles need; memory stays bounded
        elapsed = max(time.monotonic() - self.last, 1e-9)
        highwater = {tp.partition: applier.samples.highwater(tp) for tp in applier.samples.assignment()}
        lag = sum(max(0, end - report.offsets.get(p, 0)) for p, end in highwater.items() if end)
        progress = {
            "owner": applier.owner,
            "samples_committed": report.samples_committed,
            "records_per_second": round((report.samples_committed - self.last_committed) / elapsed, 1),
            "lag_records": lag,
            "offsets": {str(p): o for p, o in report.offsets.items()},
            "freshness_p50_ms": percentile(self.window, 50),
            "freshness_p99_ms": percentile(self.window, 99),
            "freshness_records": len(self.window),
            "freshness_since_start": self.since_start.summary(),
            "dead_letters": sum(report.dead_letters.values()),
            "late_impressions": sum(v for k, v in report.totals.items() if k.startswith("late.")),
            "rows_written": dict(report.rows_written),
            "ctr_prior": None if report.prior is None else report.prior.ctr,
        }
        self.last, self.last_committed = time.monotonic(), report.samples_committed
        return progress

    def tick(self) -> None:
        if time.monotonic() - self.last >= self.every_seconds:
            state, lease = self.applier.state, self.applier.streaming.lease_seconds
            state.publish_progress(self.progress(), ttl_seconds=lease)


async def follow(streaming: StreamingResource, stop: asyncio.Event, *, ctr_prior: float | None = None,
                 progress_seconds: float = 2.0, log: Callable[[str], None] | None = None) -> ApplyReport:
    """Apply every sample record as it arrives until ``stop`` is set; returns what was done."""
    owner = f"{FOLLOW_OWNER_PREFIX}{socket.gethostname()}:{os.getpid()}"
    async with Applier(streaming, owner, flush_seconds=streaming.follow_flush_seconds, ctr_prior=ctr_prior,
                       log=log) as applier:
        reporter = ProgressReporter(applier, progress_seconds)
        if log is not None:
            log(f"{owner} follows {streaming.topics.samples.name} from {applier.state.sample_offsets()}")
        await applier.catch_up_contexts()
        await applier.apply_samples(stop=stop, on_tick=reporter.tick)
    return applier.report
