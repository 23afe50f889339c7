"""Jobs and schedules: the replay into Kafka, the daily batch over the shared partitions, and streaming."""


import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    Config,
    MetadataValue,
    OpExecutionContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    job,
    op,
)

from taobao_assets.assets.bronze import topic_asset_key
from taobao_assets.assets.quality import FRESHNESS_KEY, STREAMING_VS_BATCH_KEY
from taobao_assets.assets.serving import REGISTRY_KEY
from taobao_assets.realtime_tables import REALTIME_TABLES, SCHEMA
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.server_loss import SERVER_RETRY, on_server_loss
from taobao_assets.settings import get_settings
from taobao_assets.source.replay import run_replay
from taobao_assets.source.topics import COMMON_FEATURES, SAMPLES
from taobao_assets.streaming.resource import StreamingResource

# The streaming engine is imported by the op that runs it: it imports Feast (seconds), which every
# other job's run process would otherwise pay for when it loads these definitions.
if TYPE_CHECKING:
    from taobao_assets.streaming.run import OffsetRange


class ReplayConfig(Config):
    """Where the raw files are (default: the ``TFP_SOURCE_DIR`` setting) and how fast to replay."""

    source_dir: str = ""
    rate: float | None = None
    #: Delete the topics and replay checkpoints first: for a new data set in the source folder.
    reset: bool = False


@op(out={}, retry_policy=SERVER_RETRY,
    description="Replay the raw Ali-CCP files into Kafka in event-time order (resumable).")
@on_server_loss("kafka")
def replay_raw_files(context: OpExecutionContext, config: ReplayConfig, kafka: KafkaResource
                     ) -> Iterator[AssetMaterialization]:
    settings = get_settings()
    folder = Path(config.source_dir) if config.source_dir else settings.source_dir
    reported = [0.0]

    def progress(done: int, total: int, rate: float) -> None:
        if done / total >= reported[0] + 0.1 or done == total:
            reported[0] = done / total
            context.log.info(f"replay {done:,}/{total:,} records ({done / total:.0%}), {rate:,.0f} rec/s")

    result = run_replay(settings, kafka, folder, config.rate, progress, reset=config.reset)
    context.log.info(
        f"replay of {folder}: {result.records_sent:,} records sent, "
        f"{result.records_skipped_on_resume:,} found already written on resume, "
        f"{result.records_total:,} in the data set, {result.records_per_second:,.0f} rec/s"
    )
    # Which data set the topics hold: later assets find its files (and a generated set's truth) from here.
    for short_name in (SAMPLES, COMMON_FEATURES):
        yield AssetMaterialization(asset_key=topic_asset_key(short_name), metadata={
            "source_dir": MetadataValue.path(str(folder.resolve())), "records_in_data_set": result.records_total})


@job(description="Replay the raw files of the source folder into the Kafka topics.")
def replay_job() -> None:
    replay_raw_files()


# The daily jobs take their partitions from the assets they select (the definitions' daily partitions).
bronze_job = define_asset_job(
    "bronze_job", selection=AssetSelection.groups("bronze"),
    description="Copy one day of Kafka records into bronze objects in MinIO (with checks).",
)

#: One day through bronze, silver and gold, each layer's checks included; backfills run it per day.
daily_batch_job = define_asset_job(
    "daily_batch_job", selection=AssetSelection.groups("bronze", "silver", "gold"),
    description="One day of Kafka records through bronze (MinIO), silver (Iceberg) and gold (Postgres).",
)

#: Feast apply is not partitioned, so it cannot share a job with the daily assets.
feast_apply_job = define_asset_job(
    "feast_apply_job", selection=AssetSelection.assets(REGISTRY_KEY),
    description="Apply the Feast repository generated from the table contracts.",
)

#: What serves a day once gold is there: online store, training set, baseline model, Trino reports.
daily_serving_job = define_asset_job(
    "daily_serving_job",
    selection=(AssetSelection.groups("serving") - AssetSelection.assets(REGISTRY_KEY))
    | AssetSelection.groups("analytics") | AssetSelection.assets(FRESHNESS_KEY),
    description="Materialize a day into Redis, build its training set and model score, run the Trino reports, "
                "and measure the day's freshness per hop.",
)

#: Runs the latest day of the batch every day (the backfill covers the days before).
streaming_consistency_job = define_asset_job(
    "streaming_consistency_job", selection=AssetSelection.assets(STREAMING_VS_BATCH_KEY),
    description="Compare the stream's counters of a day with gold's 1-day counters, once the stream is past it.",
)

daily_batch_schedule = build_schedule_from_partitioned_job(
    daily_batch_job, hour_of_day=1, name="daily_batch_schedule")


class PartitionRange(Config):
    partition: int
    start: int
    end: int


class StreamingRunConfig(Config):
    """Exact offset ranges ``[start, end)`` of the samples topic (the sensor writes them)."""

    ranges: list[PartitionRange]
    #: Pin the CTR prior (reproducible re-runs); default: latest gold day, else the stream's own CTR.
    ctr_prior: float | None = None


#: Run tag the sensor sets: wall-clock ms of the tick that saw the range's records in Kafka.
OBSERVED_AT_TAG = "taobao/observed_at_ms"


@op(out={}, retry_policy=SERVER_RETRY,
    description="Apply exact offset ranges of the samples topic to the real-time counters, exactly once, and "
                "write the touched entities to the Feast online store.")
@on_server_loss("kafka", "redis", "postgres")
def apply_sample_ranges(context: OpExecutionContext, config: StreamingRunConfig, streaming: StreamingResource
                        ) -> Iterator[AssetMaterialization]:
    from taobao_assets.streaming.run import OffsetRange, apply_ranges

    ranges = [OffsetRange(r.partition, r.start, r.end) for r in config.ranges]
    result = apply_ranges(streaming, ranges, owner=f"run:{context.run_id}", ctr_prior=config.ctr_prior,
                          log=context.log.info)
    report = result.report
    observed_at = context.run.tags.get(OBSERVED_AT_TAG)
    metadata: dict[str, Any] = {
        "ranges": MetadataValue.json([asdict(r) for r in ranges]),
        "applied_offsets": MetadataValue.json({str(p): o for p, o in report.offsets.items()}),
        "records_committed": report.samples_committed,
        "records_already_applied": result.already_applied,
        "records_of_earlier_ranges_applied": result.gap_filled,
        "records_per_second": round(report.samples_committed / max(report.seconds, 1e-9), 1),
        "seconds": round(report.seconds, 3),
        "context_rows_committed": report.contexts_committed,
        "dead_letters": sum(report.dead_letters.values()),
        "dead_letters_by_reason": MetadataValue.json(dict(report.dead_letters)),
        "unresolved_context": report.totals["unresolved_context"],
        # Impressions that came after their entity's day and hour had moved on (see streaming.state).
        "late_impressions": MetadataValue.json({k: v for k, v in report.totals.items() if k.startswith("late.")}),
        "conflicts": report.conflicts,
        "ctr_prior": report.prior.ctr if report.prior else None,
        "ctr_prior_source": report.prior.source if report.prior else None,
        "freshness_records": len(report.freshness_ms),
        "freshness_p50_ms": report.freshness(50),
        "freshness_p99_ms": report.freshness(99),
    }
    if observed_at:
        # Every record of the ranges was in Kafka at the tick, so each waited at least this long.
        metadata["seconds_from_sensor_tick_to_online"] = round(time.time() - int(observed_at) / 1000, 3)
    context.log.info(f"applied {report.samples_committed:,} sample records in {report.seconds:.1f} s; "
                     f"rows written {dict(report.rows_written)}")
    for table in REALTIME_TABLES:
        yield AssetMaterialization(asset_key=AssetKey([SCHEMA, table.name]),
                                   metadata={"rows_written": report.rows_written[table.name], **metadata})


def streaming_run_config(ranges: list["OffsetRange"], ctr_prior: float | None = None) -> dict[str, Any]:
    """The run config of :data:`streaming_job` applying ``ranges``."""
    config: dict[str, Any] = {"ranges": [asdict(r) for r in ranges]}
    if ctr_prior is not None:
        config["ctr_prior"] = ctr_prior
    return {"ops": {apply_sample_ranges.name: {"config": config}}}


@job(description="Apply offset ranges of the Kafka samples topic to the real-time features (run by the "
                 "streaming sensor).")
def streaming_job() -> None:
    apply_sample_ranges()
