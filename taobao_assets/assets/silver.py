"""Silver: each day's bronze records parsed by Spark into typed Iceberg tables, and quarantine.

One multi-asset per day reads both bronze topics of the day (their manifests, from the bronze IO
manager) and produces three tables: ``silver.impressions``, ``silver.user_context`` and
``silver.quarantine`` (rejected lines of both topics). Each topic is parsed once
(:mod:`taobao_assets.silver_tables`: the project's Python parser inside Spark) and the parse is
cached, so a good table and the quarantine rows are two selections of the same pass. The Iceberg
IO manager writes the tables; this module only builds the DataFrames.
"""

import time
from collections.abc import Iterator
from datetime import date

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    DailyPartitionsDefinition,
    MetadataValue,
    Output,
    multi_asset,
)
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from taobao_assets.assets.bronze import bronze_asset_key
from taobao_assets.bronze_objects import BronzeManifest
from taobao_assets.io_managers.iceberg import COLUMN_SCHEMA_KEY, table_schema
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.server_loss import SERVER_RETRY, on_server_loss
from taobao_assets.silver_tables import (
    DESCRIPTIONS,
    HISTORY_COLUMNS,
    IMPRESSIONS_SCHEMA,
    PART_SCHEMA,
    QUARANTINE_SCHEMA,
    USER_CONTEXT_SCHEMA,
    ObjectStore,
    good_rows,
    parse_bronze,
    rejected_rows,
)
from taobao_assets.source.format import FileKind
from taobao_assets.source.topics import COMMON_FEATURES, SAMPLES

IMPRESSIONS_KEY = AssetKey(["silver", "impressions"])
USER_CONTEXT_KEY = AssetKey(["silver", "user_context"])
QUARANTINE_KEY = AssetKey(["silver", "quarantine"])
SCHEMAS = {IMPRESSIONS_KEY: IMPRESSIONS_SCHEMA, USER_CONTEXT_KEY: USER_CONTEXT_SCHEMA,
           QUARANTINE_KEY: QUARANTINE_SCHEMA}


def bronze_parts(spark: SparkSession, manifest: BronzeManifest) -> DataFrame:
    """One row per part of a bronze day, each in its own Spark partition (one parse task per part)."""
    day = date.fromisoformat(manifest.raw["day"])
    rows = [(manifest.bucket, manifest.key(p["data_object"]), manifest.key(p["index_object"]),
             p["partition"], day) for p in manifest.parts]
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, max(len(rows), 1)), PART_SCHEMA)


def _count_by_reason(parsed: DataFrame) -> dict[str, int]:
    """Records per reason (``"ok"`` for good ones); the action that runs the parse and fills the cache."""
    return {row["reason"] or "ok": row["count"] for row in parsed.groupBy("reason").count().collect()}


def _rejected(counts: dict[str, int]) -> int:
    return sum(n for reason, n in counts.items() if reason != "ok")


def _line_stats(counts: dict[str, int]) -> dict[str, float | int]:
    """Numeric metadata of a table from its topic's records per reason: lines read, quarantine rates."""
    lines = sum(counts.values())
    return {"lines_read": lines, "quarantine_rate": _rejected(counts) / max(lines, 1),
            **{f"quarantine_rate/{reason}": n / max(lines, 1) for reason, n in sorted(counts.items())
               if reason != "ok"}}


def _history_entries(contexts: DataFrame) -> dict[str, float]:
    """Mean (id, count) entries per common-features line in each 14-day history field, and the
    seconds it took (the trust layer's overhead, bench/trust.py)."""
    started = time.perf_counter()
    row = contexts.agg(*(F.avg(F.size(name)).alias(name) for name in HISTORY_COLUMNS)).first()
    return {**{f"entries_per_line/{name}": float(row[name] or 0.0) if row is not None else 0.0
               for name in HISTORY_COLUMNS}, "entries_seconds": time.perf_counter() - started}


def _out(key: AssetKey, description: str) -> AssetOut:
    return AssetOut(
        key=key, io_manager_key="silver_io_manager", description=description, kinds={"spark", "iceberg"},
        metadata={COLUMN_SCHEMA_KEY: table_schema(SCHEMAS[key], DESCRIPTIONS)},
    )


def silver_assets(daily: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    """The silver multi-asset over ``daily``: one parse of a bronze day, three tables."""

    @multi_asset(
        retry_policy=SERVER_RETRY,
        name="silver_records",
        outs={
            "impressions": _out(IMPRESSIONS_KEY, "One row per good sample line of the day: labels, item fields, "
                                                 "position, combination fields, event time."),
            "user_context": _out(USER_CONTEXT_KEY, "One row per good common-features line of the day: user id, "
                                                   "profile fields and 14-day histories."),
            "quarantine": _out(QUARANTINE_KEY, "Every rejected line of the day from both topics, byte-exact, "
                                               "with reason, file, line and Kafka position."),
        },
        ins={
            "samples": AssetIn(bronze_asset_key(SAMPLES)),
            "common_features": AssetIn(bronze_asset_key(COMMON_FEATURES)),
        },
        partitions_def=daily,
        group_name="silver",
        description="Parse one day of bronze with the project's parser inside Spark into the silver tables.",
    )
    @on_server_loss("minio", "postgres")
    def silver_records(
        context: AssetExecutionContext, spark: SparkResource, s3: S3Resource,
        samples: BronzeManifest, common_features: BronzeManifest,
    ) -> Iterator[Output[DataFrame]]:
        session = spark.spark_session
        store = ObjectStore.from_resource(s3)
        parsed: dict[str, DataFrame] = {}
        reasons: dict[str, dict[str, int]] = {}
        for kind, manifest in ((FileKind.SAMPLE_SKELETON, samples), (FileKind.COMMON_FEATURES, common_features)):
            topic = manifest.topic
            started = time.monotonic()
            context.log.info(f"parsing {manifest.records:,} records of {topic} ({len(manifest.parts)} parts)")
            parsed[topic] = parse_bronze(bronze_parts(session, manifest), kind, store).persist(
                StorageLevel.MEMORY_AND_DISK)
            reasons[topic] = _count_by_reason(parsed[topic])
            seconds = time.monotonic() - started
            context.log.info(f"{topic} {context.partition_key}: {reasons[topic]} in {seconds:.1f} s "
                             f"({manifest.records / max(seconds, 1e-3):,.0f} records/s)")
        try:
            yield Output(good_rows(parsed[samples.topic], IMPRESSIONS_SCHEMA), "impressions",
                         metadata=_line_stats(reasons[samples.topic]))
            contexts = good_rows(parsed[common_features.topic], USER_CONTEXT_SCHEMA)
            yield Output(contexts, "user_context",
                         metadata={**_line_stats(reasons[common_features.topic]), **_history_entries(contexts)})
            quarantine = rejected_rows(parsed[samples.topic], samples.topic).unionByName(
                rejected_rows(parsed[common_features.topic], common_features.topic))
            yield Output(quarantine, "quarantine", metadata={
                "records_by_reason": MetadataValue.json(reasons),
                **{f"quarantine_rate/{topic}": _rejected(counts) / max(sum(counts.values()), 1)
                   for topic, counts in reasons.items()},
            })
        finally:
            # Dagster stores each output before it resumes the body, so every write has used the cache.
            for frame in parsed.values():
                frame.unpersist()

    return [silver_records]
