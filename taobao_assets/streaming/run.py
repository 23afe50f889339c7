"""A streaming run: apply exact offset ranges of the samples topic (what the sensor's runs execute)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from taobao_assets.streaming.applier import Applier, ApplyReport
from taobao_assets.streaming.resource import StreamingResource


@dataclass(frozen=True)
class OffsetRange:
    partition: int
    start: int
    end: int


def run_key(topic: str, ranges: list[OffsetRange], generation: int = 0) -> str:
    """``<topic>:<p>:<start>-<end>,...``: one run per range; ``generation`` tells re-requests apart."""
    key = f"{topic}:" + ",".join(f"{r.partition}:{r.start}-{r.end}" for r in ranges)
    return f"{key}#{generation}" if generation else key


@dataclass(frozen=True)
class RangeRun:
    """The outcome of :func:`apply_ranges`: the ranges asked, the offsets stored before, and the work."""

    ranges: list[OffsetRange]
    stored_before: dict[int, int]
    report: ApplyReport

    @property
    def already_applied(self) -> int:
        """Records of the ranges a previous run had applied (a replay of a range is a no-op)."""
        return sum(max(0, min(self.stored_before.get(r.partition, 0), r.end) - r.start) for r in self.ranges)

    @property
    def gap_filled(self) -> int:
        """Records before the ranges not applied yet (an earlier run failed), applied by this run."""
        return sum(max(0, r.start - self.stored_before.get(r.partition, 0)) for r in self.ranges)


def apply_ranges(streaming: StreamingResource, ranges: list[OffsetRange], *, owner: str,
                 ctr_prior: float | None = None, log: Callable[[str], None] | None = None) -> RangeRun:
    """Apply the sample records of ``ranges`` exactly once (see :mod:`taobao_assets.streaming.applier`)."""

    async def apply() -> RangeRun:
        async with Applier(streaming, owner, flush_seconds=streaming.run_flush_seconds, ctr_prior=ctr_prior,
                           log=log) as applier:
            stored_before = applier.state.sample_offsets()
            await applier.catch_up_contexts()
            bounds: Mapping[int, int] = {r.partition: r.end for r in ranges}
            await applier.apply_samples(bounds)
        return RangeRun(ranges, stored_before, applier.report)

    return asyncio.run(apply())
