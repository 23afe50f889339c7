"""Silver checks, per day: nothing lost between bronze and silver, and the tables keep their contract.

- ``reconciles_with_bronze`` (impressions, user_context): the day's bronze records of the topic
  equal the table's rows plus the topic's quarantined rows, so every record was either kept or
  quarantined, once;
- ``labels_valid`` (impressions): click and conversion are 0 or 1 and conversion <= click;
- ``<key>_unique_and_not_null``: sample_id and common_feature_index identify a row of the day;
- ``event_time_within_day``: every row's event time falls on its partition day;
- ``common_feature_index_resolves`` (impressions): every impression's user context is in
  ``user_context`` on that day or before, from the same split (a replay sends a context with the
  first impression that uses it, so never later). Not blocking: an unresolved impression is still
  a valid impression, but gold cannot attribute it to a user, so it is reported with examples;
- ``schema_matches_contract`` (all three): the stored table has the declared columns and types.
"""

from datetime import date

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetKey,
    DailyPartitionsDefinition,
    MetadataValue,
    asset_check,
)
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from taobao_assets.assets.silver import (
    IMPRESSIONS_KEY,
    QUARANTINE_KEY,
    SCHEMAS,
    USER_CONTEXT_KEY,
)
from taobao_assets.io_managers.bronze import load_manifest
from taobao_assets.io_managers.iceberg import days_filter, schema_columns, table_name
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.settings import get_settings
from taobao_assets.source.topics import RawTopics

#: How many offending keys a failed check lists in its metadata.
EXAMPLES = 10


def _table(spark: SparkResource, key: AssetKey) -> DataFrame:
    return spark.spark_session.table(table_name(get_settings().iceberg_catalog, key))


def _day(context: AssetCheckExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def _of_day(spark: SparkResource, key: AssetKey, day: date) -> DataFrame:
    return _table(spark, key).where(days_filter(day, day))


def _split(source_file: Column) -> Column:
    """``train`` of ``sample_skeleton_train.csv`` and of ``common_features_train.csv``."""
    return F.regexp_extract(source_file, r"_([^_]+)\.csv$", 1)


def _reconcile_check(key: AssetKey, topic: str, daily: DailyPartitionsDefinition) -> AssetChecksDefinition:
    @asset_check(asset=key, name="reconciles_with_bronze", partitions_def=daily, blocking=True,
                 description=f"Bronze records of {topic} = rows of the table + its quarantined rows.")
    def reconciles_with_bronze(
        context: AssetCheckExecutionContext, spark: SparkResource, s3: S3Resource
    ) -> AssetCheckResult:
        day = _day(context)
        bronze = load_manifest(s3, topic, day).records
        rows = _of_day(spark, key, day).count()
        quarantined = _of_day(spark, QUARANTINE_KEY, day).where(F.col("topic") == topic).count()
        return AssetCheckResult(
            passed=bronze == rows + quarantined,
            metadata={"bronze_records": bronze, "silver_rows": rows, "quarantined_rows": quarantined},
        )

    return reconciles_with_bronze


def _unique_key_check(key: AssetKey, column: str, daily: DailyPartitionsDefinition) -> AssetChecksDefinition:
    @asset_check(asset=key, name=f"{column}_unique_and_not_null", partitions_def=daily, blocking=True,
                 description=f"{column} is never null and identifies one row of the day.")
    def unique_and_not_null(context: AssetCheckExecutionContext, spark: SparkResource) -> AssetCheckResult:
        rows = _of_day(spark, key, _day(context))
        nulls = rows.where(F.col(column).isNull()).count()
        repeated = rows.where(F.col(column).isNotNull()).groupBy(column).count().where("count > 1")
        examples = [row[column] for row in repeated.limit(EXAMPLES).collect()]
        duplicates = repeated.count() if examples else 0
        return AssetCheckResult(
            passed=nulls == 0 and duplicates == 0,
            metadata={"null_keys": nulls, "duplicated_keys": duplicates,
                      "examples": MetadataValue.json([str(k) for k in examples])},
        )

    return unique_and_not_null


def _event_time_check(key: AssetKey, daily: DailyPartitionsDefinition) -> AssetChecksDefinition:
    @asset_check(asset=key, name="event_time_within_day", partitions_def=daily, blocking=True,
                 description="Every row's event time is on the row's partition day (UTC).")
    def event_time_within_day(context: AssetCheckExecutionContext, spark: SparkResource) -> AssetCheckResult:
        day = _day(context)
        outside = _of_day(spark, key, day).where(
            F.col("event_time").isNull() | (F.to_date("event_time") != F.lit(day))).count()
        return AssetCheckResult(passed=outside == 0, metadata={"rows_outside_day": outside})

    return event_time_within_day


def _schema_check(key: AssetKey, daily: DailyPartitionsDefinition) -> AssetChecksDefinition:
    @asset_check(asset=key, name="schema_matches_contract", partitions_def=daily, blocking=True,
                 description="The Iceberg table has exactly the declared columns, in order and type.")
    def schema_matches_contract(
        context: AssetCheckExecutionContext, spark: SparkResource
    ) -> AssetCheckResult:
        stored = schema_columns(_table(spark, key).schema)
        declared = schema_columns(SCHEMAS[key])
        return AssetCheckResult(
            passed=stored == declared,
            metadata={"missing": MetadataValue.json([list(c) for c in declared if c not in stored]),
                      "unexpected": MetadataValue.json([list(c) for c in stored if c not in declared])},
        )

    return schema_matches_contract


def _labels_check(daily: DailyPartitionsDefinition) -> AssetChecksDefinition:
    @asset_check(asset=IMPRESSIONS_KEY, name="labels_valid", partitions_def=daily, blocking=True,
                 description="click and conversion are 0 or 1, and conversion <= click.")
    def labels_valid(context: AssetCheckExecutionContext, spark: SparkResource) -> AssetCheckResult:
        impressions = _of_day(spark, IMPRESSIONS_KEY, _day(context))
        counts = impressions.agg(
            F.count_if(~F.col("click").isin(0, 1) | F.col("click").isNull()).alias("bad_click"),
            F.count_if(~F.col("conversion").isin(0, 1) | F.col("conversion").isNull()).alias("bad_conversion"),
            F.count_if(F.col("conversion") > F.col("click")).alias("conversion_without_click"),
        ).first()
        assert counts is not None  # a global aggregate always has one row
        return AssetCheckResult(passed=not any(counts), metadata=counts.asDict())

    return labels_valid


def _context_resolves_check(daily: DailyPartitionsDefinition) -> AssetChecksDefinition:
    @asset_check(asset=IMPRESSIONS_KEY, name="common_feature_index_resolves", partitions_def=daily,
                 description="Every impression's common_feature_index is in user_context of the same split, "
                             "on the impression's day or before.")
    def common_feature_index_resolves(
        context: AssetCheckExecutionContext, spark: SparkResource
    ) -> AssetCheckResult:
        day = _day(context)
        impressions = _of_day(spark, IMPRESSIONS_KEY, day).select(
            "sample_id", "common_feature_index", _split(F.col("source_file")).alias("split"))
        contexts = (_table(spark, USER_CONTEXT_KEY).where(F.col("day") <= F.lit(day))
                    .select("common_feature_index", _split(F.col("source_file")).alias("split")).distinct())
        unresolved = impressions.join(contexts, on=["common_feature_index", "split"], how="left_anti")
        examples = unresolved.limit(EXAMPLES).collect()
        count = unresolved.count() if examples else 0
        return AssetCheckResult(
            passed=count == 0,
            metadata={"unresolved_impressions": count,
                      "examples": MetadataValue.json([r.asDict() for r in examples])},
        )

    return common_feature_index_resolves


def silver_checks(daily: DailyPartitionsDefinition, topics: RawTopics) -> list[AssetChecksDefinition]:
    return [
        _reconcile_check(IMPRESSIONS_KEY, topics.samples.name, daily),
        _reconcile_check(USER_CONTEXT_KEY, topics.common_features.name, daily),
        _labels_check(daily),
        _unique_key_check(IMPRESSIONS_KEY, "sample_id", daily),
        _unique_key_check(USER_CONTEXT_KEY, "common_feature_index", daily),
        _event_time_check(IMPRESSIONS_KEY, daily),
        _event_time_check(USER_CONTEXT_KEY, daily),
        _context_resolves_check(daily),
        *[_schema_check(key, daily) for key in SCHEMAS],
    ]
