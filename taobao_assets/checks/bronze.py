"""Bronze checks, per day and topic: nothing lost or duplicated between Kafka and MinIO.

- ``count_matches_kafka_offsets``: the stored offset ranges are the ones Kafka gives for the day
  now, and the record count is their total;
- ``no_offset_gaps``: the index lists every offset of each range exactly once, in order;
- ``manifest_checksums_valid``: each data object decompresses to the size and sha256 in the manifest.
"""


import asyncio
import csv
import gzip
import hashlib
import io
from collections.abc import Iterator
from datetime import date
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    DailyPartitionsDefinition,
    asset_check,
)

from taobao_assets.assets.bronze import bronze_asset_key
from taobao_assets.bronze_objects import BronzeManifest
from taobao_assets.io_managers.bronze import load_manifest
from taobao_assets.resources.kafka import KafkaResource, TopicSpec
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.source.event_time import day_window_ms
from taobao_assets.source.topics import RawTopics


def _open_gzip(s3: S3Resource, manifest: BronzeManifest, object_name: str) -> gzip.GzipFile:
    body = s3.client().get_object(Bucket=manifest.bucket, Key=manifest.key(object_name))["Body"]
    return gzip.GzipFile(fileobj=body)


def _index_offsets(s3: S3Resource, manifest: BronzeManifest, part: dict[str, Any]) -> Iterator[int]:
    with _open_gzip(s3, manifest, part["index_object"]) as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="ascii")):
            yield int(row["offset"])


def _checks(spec: TopicSpec, daily: DailyPartitionsDefinition) -> list[AssetChecksDefinition]:
    key = bronze_asset_key(RawTopics.short_name(spec))

    @asset_check(asset=key, name="count_matches_kafka_offsets", partitions_def=daily, blocking=True,
                 description="Stored offset ranges equal Kafka's for the day; count equals their total.")
    def count_matches_kafka_offsets(
        context: AssetCheckExecutionContext, kafka: KafkaResource, s3: S3Resource
    ) -> AssetCheckResult:
        manifest = load_manifest(s3, spec.name, context.partition_key)
        t0, t1 = day_window_ms(date.fromisoformat(context.partition_key))

        async def ranges() -> tuple[dict[int, int], dict[int, int]]:
            return await kafka.offsets_at(spec.name, t0), await kafka.offsets_at(spec.name, t1)

        starts, ends = asyncio.run(ranges())
        expected = sum(ends[p] - starts[p] for p in starts)
        stored = {p["partition"]: (p["start_offset"], p["end_offset"]) for p in manifest.parts}
        kafka_ranges = {p: (starts[p], ends[p]) for p in starts}
        return AssetCheckResult(
            passed=manifest.records == expected and stored == kafka_ranges,
            metadata={"bronze_records": manifest.records, "kafka_records": expected,
                      "ranges_equal": stored == kafka_ranges},
        )

    @asset_check(asset=key, name="no_offset_gaps", partitions_def=daily, blocking=True,
                 description="The index holds every offset of each stored range once, in order.")
    def no_offset_gaps(context: AssetCheckExecutionContext, s3: S3Resource) -> AssetCheckResult:
        manifest = load_manifest(s3, spec.name, context.partition_key)
        bad = []
        for part in manifest.parts:
            expected = range(part["start_offset"], part["end_offset"])
            offsets = list(_index_offsets(s3, manifest, part))
            if offsets != list(expected) or len(offsets) != part["records"]:
                bad.append(part["partition"])
        return AssetCheckResult(passed=not bad, metadata={"partitions_with_gaps": str(bad)})

    @asset_check(asset=key, name="manifest_checksums_valid", partitions_def=daily, blocking=True,
                 description="Each data object decompresses to the manifest's byte count and sha256.")
    def manifest_checksums_valid(context: AssetCheckExecutionContext, s3: S3Resource) -> AssetCheckResult:
        manifest = load_manifest(s3, spec.name, context.partition_key)
        bad = []
        for part in manifest.parts:
            digest, size = hashlib.sha256(), 0
            with _open_gzip(s3, manifest, part["data_object"]) as data:
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            if digest.hexdigest() != part["sha256"] or size != part["bytes"]:
                bad.append(part["partition"])
        return AssetCheckResult(passed=not bad, metadata={"partitions_failing": str(bad)})

    return [count_matches_kafka_offsets, no_offset_gaps, manifest_checksums_valid]


def bronze_checks(daily: DailyPartitionsDefinition, topics: RawTopics) -> list[AssetChecksDefinition]:
    return [check for spec in topics.all for check in _checks(spec, daily)]
