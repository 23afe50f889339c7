"""Streaming = batch per day, on the session's replayed topics and its gold (Spark): the stream's counters
of every day equal gold's 1-day counters, and a stream that skipped records is caught on their day."""

from __future__ import annotations

import asyncio

from dagster import ExecuteInProcessResult, materialize

from taobao_assets.assets.quality import CHECK_NAME, STREAMING_VS_BATCH_KEY, quality_assets
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import get_settings
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets.streaming.run import OffsetRange, apply_ranges
from taobao_assets.streaming.state import LAYOUT
from taobao_assets_tests.conftest import DAILY

DAYS = DAILY.get_partition_keys()


def _compare(stream: StreamingResource, gold: PostgresResource, day: str) -> ExecuteInProcessResult:
    resources = {"streaming": stream, "postgres": gold, "s3": S3Resource.from_settings(get_settings())}
    return materialize(quality_assets(DAILY), selection=[STREAMING_VS_BATCH_KEY], partition_key=day,
                       resources=resources, raise_on_error=False)


def _apply_everything(stream: StreamingResource) -> None:
    ends = asyncio.run(stream.kafka.end_offsets(stream.topics.samples.name))
    apply_ranges(stream, [OffsetRange(p, 0, end) for p, end in ends.items()], owner="test")


def _metadata(result: ExecuteInProcessResult) -> tuple[bool, dict[str, object]]:
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_NAME
    (materialization,) = result.asset_materializations_for_node("quality__streaming_vs_batch")
    return evaluation.passed, {k: v.value for k, v in materialization.metadata.items()}


def test_the_stream_equals_gold_every_day_and_a_stream_that_skipped_records_fails_on_their_day(
        replayed_stream: StreamingResource, gold: PostgresResource) -> None:
    behind = _compare(replayed_stream, gold, DAYS[0])
    assert not behind.success and "StreamBehind" in str(behind.all_events)

    _apply_everything(replayed_stream)
    for day in DAYS:
        result = _compare(replayed_stream, gold, day)
        passed, metadata = _metadata(result)
        assert result.success and passed, (day, metadata)
        assert metadata["share_equal"] == 1.0 and metadata["keys_compared"] > 0, (day, metadata)

    # The same stream again, but partition 0 starts 50 records in: those records are never applied.
    state = replayed_stream.state()
    state.reset()
    state.client.hset(state.sample_offsets_key, "0", "50")
    state.client.set(state.layout_key, LAYOUT)
    _apply_everything(replayed_stream)
    outcome = {day: _metadata(_compare(replayed_stream, gold, day)) for day in DAYS}
    passed, metadata = outcome[DAYS[0]]
    assert not passed and float(str(metadata["share_equal"])) < 0.999, metadata
    assert int(str(metadata["item_features/max_abs_diff/impressions"])) >= 1, metadata
    assert all(p for p, _ in list(outcome.values())[1:]), {d: m["share_equal"] for d, (_, m) in outcome.items()}
