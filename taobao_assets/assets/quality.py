"""Quality (``quality/*``): what is measured across layers rather than of one table.

``freshness`` (daily) measures how long the day's samples took from event time to Kafka, bronze,
silver, gold and the online store (:mod:`taobao_assets.quality.freshness`), as numeric metadata
``lag_s/<hop>/p50`` and ``/p99``; it runs after the online store in ``daily_serving_job``.

``streaming_vs_batch`` (daily) compares the stream's counters of day D with gold's 1-day counters
of D for every key of the tables both count (:mod:`taobao_assets.quality.stream_batch`), and
records the share of keys equal and the largest differences as numeric metadata (the asset's
*Plots* tab draws them over the days), with the check ``streaming_matches_batch`` failing below
99.9 %. It runs once the stream has applied the day (``streaming_consistency_job``; the demo runs
it after its streaming stage): a stream not yet past the end of D fails the run with the offsets
it still has to apply, rather than compare half a day.
"""

from datetime import date
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from taobao_assets.assets.bronze import bronze_asset_key
from taobao_assets.assets.gold import GOLD_KEYS
from taobao_assets.assets.serving import ONLINE_STORE_KEY
from taobao_assets.assets.silver import IMPRESSIONS_KEY
from taobao_assets.quality.freshness import hop_freshness
from taobao_assets.quality.stream_batch import REQUIRED_SHARE, STREAMED_TABLES, compare_day, stream_behind
from taobao_assets.realtime_tables import REALTIME_TABLES
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.server_loss import SERVER_RETRY, on_server_loss
from taobao_assets.settings import get_settings
from taobao_assets.source.topics import SAMPLES, RawTopics
from taobao_assets.streaming.resource import StreamingResource

GROUP = "quality"
STREAMING_VS_BATCH_KEY = AssetKey([GROUP, "streaming_vs_batch"])
FRESHNESS_KEY = AssetKey([GROUP, "freshness"])
CHECK_NAME = "streaming_matches_batch"


class StreamBehind(RuntimeError):
    """The stream has not applied the whole day yet."""


def quality_assets(daily: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    @asset(
        retry_policy=SERVER_RETRY,
        key=STREAMING_VS_BATCH_KEY, group_name=GROUP, partitions_def=daily, kinds={"redis", "postgres"},
        deps=[*(t.asset_key for t in STREAMED_TABLES), *(t.asset_key for t in REALTIME_TABLES)],
        check_specs=[AssetCheckSpec(CHECK_NAME, asset=STREAMING_VS_BATCH_KEY,
                                    description=f"At least {REQUIRED_SHARE:.1%} of the keys compared have the "
                                                f"stream's counters of the day equal to gold's 1-day counters.")],
        description="The stream's counters of the day against gold's 1-day counters, key by key, per table.",
    )
    @on_server_loss("kafka", "redis", "postgres")
    def streaming_vs_batch(context: AssetExecutionContext, streaming: StreamingResource,
                           postgres: PostgresResource) -> MaterializeResult:
        day = date.fromisoformat(context.partition_key)
        behind = stream_behind(streaming, day)
        if behind is not None:
            raise StreamBehind(
                f"the stream of {streaming.topics.samples.name} has applied offsets {behind.applied}, and the "
                f"records after {day} start at {behind.needed}: apply the stream (the streaming sensor, or "
                f"`python -m taobao_assets.streaming follow`) past the day, then run this again")
        reports = compare_day(streaming.state(), postgres, day)
        metadata: dict[str, Any] = {
            "keys_compared": sum(r.compared for r in reports),
            "share_equal": min((r.share_equal for r in reports), default=1.0),
        }
        for r in reports:
            metadata |= {f"{r.table}/keys_compared": r.compared, f"{r.table}/share_equal": r.share_equal,
                         f"{r.table}/keys_moved_on": r.moved_on,
                         **{f"{r.table}/max_abs_diff/{name}": d for name, d in r.max_abs_diff.items()}}
        examples = [e for r in reports for e in r.examples]
        metadata["examples"] = MetadataValue.md("\n".join(f"- {e}" for e in examples[:10]) or "none")
        passed = all(r.passed for r in reports) and metadata["keys_compared"] > 0
        return MaterializeResult(metadata=metadata, check_results=[AssetCheckResult(
            check_name=CHECK_NAME, passed=passed,
            metadata={"share_equal": metadata["share_equal"], "keys_compared": metadata["keys_compared"]})])

    @asset(
        retry_policy=SERVER_RETRY,
        key=FRESHNESS_KEY, group_name=GROUP, partitions_def=daily, kinds={"dagster"},
        deps=[bronze_asset_key(SAMPLES), IMPRESSIONS_KEY, *GOLD_KEYS, ONLINE_STORE_KEY],
        description="How long the day's samples took from event time to Kafka, bronze, silver, gold and online.",
    )
    @on_server_loss("minio")
    def freshness(context: AssetExecutionContext, s3: S3Resource) -> MaterializeResult:
        hops = hop_freshness(context.instance, s3, RawTopics.of(get_settings().topic_prefix).samples.name,
                             context.partition_key)
        context.log.info(hops.table())
        return MaterializeResult(metadata={"records_timed": hops.records, **hops.metadata(),
                                           "hops": MetadataValue.md(hops.table())})

    return [streaming_vs_batch, freshness]
