"""The streaming sensor: cuts what Kafka holds beyond the applied offsets into exact-range runs.

Each tick reads the samples topic's end offsets from the broker (a ListOffsets request, no poll)
and the applied offsets from the state store (the runs commit them with the counters). The
records in between, minus what earlier ticks already requested (the cursor), become runs of at
most ``max_records_per_run`` records, each carrying its exact ``[start, end)`` per partition; the
run key is the ranges, so a range is never requested twice.

Supervision. A requested range that is still not applied once no streaming run is queued or
running belongs to a failed run: the sensor requests it again (from the applied offsets, under a
new generation of run keys). While a continuous consumer (``python -m taobao_assets.streaming
follow``) holds the stream, the sensor requests nothing and reports the follower's progress (lag,
rate, freshness) as observations of the real-time tables instead.

Freshness. Under the daemon a record waits for the next tick (the interval, plus up to the
daemon's 5 s loop), then its run waits in the run queue (up to 5 s), starts a process that loads
the code location and, once its step starts, the streaming engine with Feast (together about 8 s on
a lightly loaded 2-core machine, 20 s on a busy one, most of it Feast's import) and applies it
(2-4 s). So the sensor path stays some 15-30 s over its interval however small the runs
(``bench/streaming.py`` measures each phase); the continuous consumer is the low-latency path.
"""

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Self

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from taobao_assets.jobs import OBSERVED_AT_TAG, streaming_job, streaming_run_config
from taobao_assets.realtime_tables import REALTIME_TABLES, SCHEMA
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets.streaming.state import refuse_offsets_beyond

# The streaming engine (and with it Feast, seconds to import) is imported by the functions that use
# it: every run process loads this module with the definitions, and only the sensor's ticks need it.
if TYPE_CHECKING:
    from taobao_assets.streaming.run import OffsetRange

#: Run requests per tick at most; a larger backlog continues on the next tick.
MAX_RUNS_PER_TICK = 10
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


@dataclass
class SensorCursor:
    """End offset per partition requested so far; ``generation`` counts re-requests after failures.

    ``dead_letters`` and ``late_impressions`` are the stream's totals as of the tick: not used to
    plan, but shown with the cursor in the UI, so a poisoned stream is visible where it is driven.
    """

    requested: dict[int, int] = field(default_factory=dict)
    generation: int = 0
    dead_letters: int = 0
    late_impressions: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> Self:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls({int(p): o for p, o in data["requested"].items()}, data["generation"],
                   data.get("dead_letters", 0), data.get("late_impressions", 0))

    def dumps(self) -> str:
        return json.dumps({"requested": {str(p): o for p, o in sorted(self.requested.items())},
                           "generation": self.generation, "dead_letters": self.dead_letters,
                           "late_impressions": self.late_impressions})

    def counting(self, totals: Mapping[str, int]) -> Self:
        """This cursor with the dead letters and late impressions of the stream's ``totals``."""
        return replace(self, dead_letters=sum(v for k, v in totals.items() if k.startswith("dead_letter.")),
                       late_impressions=sum(v for k, v in totals.items() if k.startswith("late.")))


def split(lag: Mapping[int, int], budget: int) -> dict[int, int]:
    """Records per partition for one run: ``budget`` shared fairly, the least lagging filled first."""
    share: dict[int, int] = {}
    left = budget
    for i, (p, records) in enumerate(sorted(lag.items(), key=lambda item: item[1])):
        share[p] = min(records, left // (len(lag) - i))
        left -= share[p]
    return {p: n for p, n in share.items() if n}


def plan_runs(ends: Mapping[int, int], applied: Mapping[int, int], cursor: SensorCursor, *, in_flight: bool,
              max_records: int, max_runs: int = MAX_RUNS_PER_TICK
              ) -> tuple[list[list["OffsetRange"]], SensorCursor]:
    """The ranges of the runs to request now, and the cursor after requesting them."""
    from taobao_assets.streaming.run import OffsetRange

    requested = {p: o for p, o in cursor.requested.items() if o <= ends.get(p, 0)}  # a re-created topic
    generation = cursor.generation
    if not in_flight and any(applied.get(p, 0) < o for p, o in requested.items()):
        requested, generation = {}, generation + 1  # a run failed: request again from what is applied
    start = {p: max(applied.get(p, 0), requested.get(p, 0)) for p in ends}
    runs: list[list[OffsetRange]] = []
    while len(runs) < max_runs:
        share = split({p: ends[p] - start[p] for p in ends if ends[p] > start[p]}, max_records)
        if not share:
            break
        runs.append([OffsetRange(p, start[p], start[p] + n) for p, n in sorted(share.items())])
        start.update({p: start[p] + n for p, n in share.items()})
    return runs, replace(cursor, requested={p: o for p, o in start.items() if o}, generation=generation)


def _follower_observations(progress: dict[str, Any] | None, lag: int) -> list[AssetObservation]:
    metadata: dict[str, Any] = {"lag_records": lag}
    if progress is not None:
        metadata.update({k: v for k, v in progress.items() if isinstance(v, int | float | str)})
    return [AssetObservation(asset_key=AssetKey([SCHEMA, t.name]), metadata=metadata)
            for t in REALTIME_TABLES]


@sensor(job=streaming_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="Requests streaming runs for the sample records beyond the applied offsets, in exact "
                    "ranges; reports the continuous consumer's progress while one runs.")
def streaming_sensor(context: SensorEvaluationContext, streaming: StreamingResource) -> SensorResult:
    from taobao_assets.streaming.follow import FOLLOW_OWNER_PREFIX
    from taobao_assets.streaming.online import missing_views
    from taobao_assets.streaming.run import run_key

    topic = streaming.topics.samples.name
    try:
        ends = asyncio.run(streaming.kafka.end_offsets(topic))
    except ValueError as no_topic:
        return SensorResult(skip_reason=str(no_topic))
    unregistered = missing_views(streaming.feast.store())
    if unregistered:
        return SensorResult(skip_reason=f"Feast project {streaming.feast.project!r} has no view "
                                        f"{unregistered} yet: materialize the feast_registry asset")
    state = streaming.state()
    applied = state.sample_offsets()
    refuse_offsets_beyond(topic, applied, ends)
    lag = sum(end - applied.get(p, 0) for p, end in ends.items())
    cursor = SensorCursor.parse(context.cursor).counting(state.totals())
    holder = state.lease_holder()
    if holder is not None and holder.startswith(FOLLOW_OWNER_PREFIX):
        return SensorResult(skip_reason=f"the continuous consumer {holder} applies {topic}; lag {lag:,}",
                            asset_events=_follower_observations(state.progress(), lag), cursor=cursor.dumps())
    in_flight = RunsFilter(job_name=streaming_job.name, statuses=IN_FLIGHT)
    busy = bool(context.instance.get_runs(in_flight, limit=1))
    runs, cursor = plan_runs(ends, applied, cursor, in_flight=busy, max_records=streaming.max_records_per_run)
    if not runs:
        return SensorResult(skip_reason=f"{topic}: nothing beyond the applied offsets {applied}",
                            cursor=cursor.dumps())
    observed_at = str(int(time.time() * 1000))
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=run_key(topic, ranges, cursor.generation),
                run_config=streaming_run_config(ranges),
                tags={OBSERVED_AT_TAG: observed_at, "taobao/stream": topic},
            )
            for ranges in runs
        ],
        cursor=cursor.dumps(),
    )
