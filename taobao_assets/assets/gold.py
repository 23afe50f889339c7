"""Gold: per-entity daily feature tables in Postgres (the Feast offline store), computed by Spark.

For day D each table holds one row per entity active in the 7 days up to D, stamped with the end
of D: counters over 1/3/7-day windows and smoothed CTR/CVR (:mod:`taobao_assets.features`), and
for users the profile and history diversity from their latest context. Only data with event time
before the end of D is used, which is what makes the tables safe for point-in-time joins.

One multi-asset computes all six tables from one enriched impressions DataFrame (impressions
joined with the user of their context), so the join and the window scan happen once per day.
"""

from collections.abc import Iterator
from datetime import date, datetime, timedelta

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    DailyPartitionsDefinition,
    Output,
    TimeWindowPartitionMapping,
    multi_asset,
)
from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from taobao_assets.features import WINDOWS_DAYS, global_rate, smoothed_ctr, smoothed_cvr
from taobao_assets.gold_tables import GOLD_TABLES, HISTORY_DIVERSITY, PROFILE
from taobao_assets.partitions import days_up_to_the_day, end_of_day
from taobao_assets.server_loss import SERVER_RETRY, on_server_loss

HISTORY_ARRAYS = {c.name: c.name.removesuffix("_distinct") for c in HISTORY_DIVERSITY}
#: Which gold table groups the impressions by which keys.
GROUPING = {t.name: t.key_names for t in GOLD_TABLES}
LONGEST_WINDOW = max(WINDOWS_DAYS)
#: What makes one user context later than another: event time, then file and line.
CONTEXT_ORDER = ("event_time", "source_file", "source_line")


GOLD_KEYS = [t.asset_key for t in GOLD_TABLES]


def _in_window(day: date, days: int) -> Column:
    return F.col("day") > F.lit(day - timedelta(days=days))


def _latest_first(key: str) -> WindowSpec:
    return Window.partitionBy(key).orderBy(*(F.col(name).desc() for name in CONTEXT_ORDER))


def latest_contexts(user_context: DataFrame, day_end: datetime) -> DataFrame:
    """The latest user context of each common_feature_index known before ``day_end``: its user, the
    user's profile and history diversity, and the columns that order contexts.

    Ties in event time (unreferenced contexts all share their split's first timestamp) are broken
    by file and line, which unlike Kafka offsets compare across partitions. The diversity is counted
    on every context before the window, so the window shuffles and sorts a few numbers per context
    instead of its four history arrays: that sort over every context up to the day was most of
    ``user_features``' time, growing with each day.
    """
    diversity = {
        name: F.size(F.array_distinct(F.transform(F.col(array), lambda entry: entry["id"]))).cast("long")
        for name, array in HISTORY_ARRAYS.items()
    }
    return (user_context.where(F.col("event_time") < F.lit(day_end))
            .select("common_feature_index", "user_id", *CONTEXT_ORDER, *[c.name for c in PROFILE],
                    *[expr.alias(name) for name, expr in diversity.items()])
            .withColumn("_rank", F.row_number().over(_latest_first("common_feature_index")))
            .where("_rank = 1").drop("_rank"))


def enriched_impressions(impressions: DataFrame, contexts: DataFrame, day: date) -> DataFrame:
    """The window's impressions with the user id of their context (null when unresolved)."""
    window = impressions.where(_in_window(day, LONGEST_WINDOW) & (F.col("day") <= F.lit(day)))
    users = contexts.select("common_feature_index", "user_id")
    return window.join(users, on="common_feature_index", how="left")


def counters(impressions: DataFrame, keys: list[str], day: date) -> DataFrame:
    """Impressions, clicks and conversions per ``keys`` over each window."""
    aggregates = []
    for w in WINDOWS_DAYS:
        inside = _in_window(day, w)
        aggregates += [
            F.sum(F.when(inside, 1).otherwise(0)).cast("long").alias(f"impressions_{w}d"),
            F.sum(F.when(inside, F.col("click")).otherwise(0)).cast("long").alias(f"clicks_{w}d"),
            F.sum(F.when(inside, F.col("conversion")).otherwise(0)).cast("long").alias(f"conversions_{w}d"),
        ]
    has_keys = F.lit(True)
    for key in keys:
        has_keys = has_keys & F.col(key).isNotNull()
    return impressions.where(has_keys).groupBy(*keys).agg(*aggregates)


def priors(impressions: DataFrame, day: date) -> dict[int, tuple[float, float]]:
    """Global (CTR, CVR) of each window: the rates the smoothing shrinks towards."""
    totals = counters(impressions.withColumn("_all", F.lit(0)), ["_all"], day).first()
    if totals is None:
        return {w: (0.0, 0.0) for w in WINDOWS_DAYS}
    return {
        w: (global_rate(totals[f"clicks_{w}d"], totals[f"impressions_{w}d"]),
            global_rate(totals[f"conversions_{w}d"], totals[f"clicks_{w}d"]))
        for w in WINDOWS_DAYS
    }


def with_rates(counts: DataFrame, window_priors: dict[int, tuple[float, float]]) -> DataFrame:
    for w, (ctr_prior, cvr_prior) in window_priors.items():
        counts = counts.withColumns({
            f"ctr_{w}d": smoothed_ctr(F.col(f"clicks_{w}d"), F.col(f"impressions_{w}d"), F.lit(ctr_prior)),
            f"cvr_{w}d": smoothed_cvr(F.col(f"conversions_{w}d"), F.col(f"clicks_{w}d"), F.lit(cvr_prior)),
        })
    return counts


def user_attributes(contexts: DataFrame) -> DataFrame:
    """Profile and history diversity of each user, from the latest of the user's contexts."""
    return (contexts.where(F.col("user_id").isNotNull())
            .withColumn("_rank", F.row_number().over(_latest_first("user_id"))).where("_rank = 1")
            .select("user_id", *[c.name for c in (*PROFILE, *HISTORY_DIVERSITY)]))


def gold_frames(impressions: DataFrame, user_context: DataFrame, day: date) -> dict[str, DataFrame]:
    """Every gold table of ``day`` (lazy DataFrames; the caller caches the shared input)."""
    # Not cached: the impressions' join needs only each context's user, so Spark reads no history
    # array for it (column pruning), and a cache would hold every context's row in the driver beside
    # the cached impressions; user_attributes reads the arrays once.
    contexts = latest_contexts(user_context, end_of_day(day))
    enriched = enriched_impressions(impressions, contexts, day).cache()
    window_priors = priors(enriched, day)
    tables = {name: with_rates(counters(enriched, keys, day), window_priors) for name, keys in GROUPING.items()}
    tables["user_features"] = tables["user_features"].join(user_attributes(contexts), on="user_id", how="left")
    return tables


def gold_assets(daily: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    """The gold multi-asset over ``daily``: every table of :data:`GOLD_TABLES` from one Spark pass."""

    @multi_asset(
        retry_policy=SERVER_RETRY,
        outs={
            t.name: AssetOut(key=t.asset_key, metadata=t.metadata(), io_manager_key="gold_io_manager",
                             description=t.description, is_required=False)
            for t in GOLD_TABLES
        },
        ins={
            "impressions": AssetIn(
                key=AssetKey(["silver", "impressions"]),
                partition_mapping=TimeWindowPartitionMapping(start_offset=-(LONGEST_WINDOW - 1),
                                                             allow_nonexistent_upstream_partitions=True),
            ),
            "user_context": AssetIn(key=AssetKey(["silver", "user_context"]),
                                    partition_mapping=days_up_to_the_day(daily)),
        },
        partitions_def=daily,
        group_name="gold",
        can_subset=True,
        compute_kind="spark",
    )
    @on_server_loss("minio", "postgres")
    def gold_features(
        context: AssetExecutionContext, impressions: DataFrame, user_context: DataFrame
    ) -> Iterator[Output[DataFrame]]:
        day = date.fromisoformat(context.partition_key)
        tables = gold_frames(impressions, user_context, day)
        for name in sorted(context.op_execution_context.selected_output_names):
            context.log.info(f"gold {name} for {day}: computing and writing")
            yield Output(tables[name], output_name=name)
        # Release the cached enriched impressions once every selected table is written.
        impressions.sparkSession.catalog.clearCache()

    return [gold_features]
