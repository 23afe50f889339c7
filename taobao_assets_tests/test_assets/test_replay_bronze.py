"""Replay -> Kafka -> bronze on generated data, through the real Kafka and MinIO.

The session's shared data set (``conftest.py``: 5 days, a few malformed lines) is replayed once,
with the replay killed halfway and resumed; every test then checks a property of what landed:
nothing lost, nothing duplicated, byte-exact (bronze keeps malformed lines as they are), every
record stamped with the time it was sent.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import time
import uuid
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka.partitioner import murmur2
from dagster import RetryPolicy, materialize

from taobao_assets.assets import bronze as bronze_module
from taobao_assets.assets.bronze import bronze_asset_key, bronze_assets, capture_day
from taobao_assets.bronze_objects import BronzeDay, day_prefix
from taobao_assets.io_managers.bronze import BronzeIOManager, load_manifest
from taobao_assets.partitions import event_time_config
from taobao_assets.resources.kafka import KafkaResource, TopicSpec
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import Settings
from taobao_assets.source.event_time import Timeline, day_window_ms
from taobao_assets.source.replay import (
    PRODUCED_AT_HEADER,
    ReplayResult,
    _written_after,
    checkpoint_prefix,
    default_checkpoint_dir,
    plan,
    run_replay,
    total_records,
)
from taobao_assets.source.topics import LINE_HEADER, SOURCE_HEADER, RawTopics
from taobao_assets_tests.conftest import DAILY, TOPICS, kafka_end_total


def _bronze_lines(s3: S3Resource, topic: str) -> dict[tuple[str, int], bytes]:
    """Every record of the topic in bronze, by (source file, line), over all days."""
    found: dict[tuple[str, int], bytes] = {}
    for day in DAILY.get_partition_keys():
        manifest = load_manifest(s3, topic, day)
        for part in manifest.parts:
            data = gzip.decompress(s3.get_bytes(manifest.key(part["data_object"])))
            index = gzip.decompress(s3.get_bytes(manifest.key(part["index_object"]))).decode()
            position = 0
            for row in index.splitlines()[1:]:
                _, _, source, line, length = row.split(",")
                key = (source, int(line))
                assert key not in found, f"{key} is in bronze twice"
                found[key] = data[position:position + int(length)]
                position += int(length)
            assert position == len(data)
    return found


def test_replay_resumes_without_duplicates_or_gaps(replayed: tuple[ReplayResult, int], dataset: Path,
                                                   settings: Settings) -> None:
    result, killed_at = replayed
    total = total_records(dataset)
    assert result.resumed
    assert result.records_total == total
    assert kafka_end_total(KafkaResource.from_settings(settings)) == total
    # Exactly what was missing is sent: not a record of what the killed run had written again.
    assert result.records_sent == total - killed_at


def test_replay_again_is_a_no_op(replayed: tuple[ReplayResult, int], dataset: Path,
                                 settings: Settings) -> None:
    kafka = KafkaResource.from_settings(settings)
    before = kafka_end_total(kafka)
    again = run_replay(settings, kafka, dataset)
    assert again.records_sent == 0
    assert kafka_end_total(kafka) == before


def test_the_same_data_set_replays_whole_into_other_topics_and_their_reset_spares_the_first(
        replayed: tuple[ReplayResult, int], dataset: Path, settings: Settings) -> None:
    """A checkpoint belongs to its topics: a second namespace replays everything (it used to resume from
    the first's checkpoint and fail on topics it did not know), and resetting it leaves the first alone."""
    kafka = KafkaResource.from_settings(settings)
    other = dataclasses.replace(settings, topic_prefix=f"test.other.{uuid.uuid4().hex[:8]}")
    others = [t.name for t in RawTopics.of(other.topic_prefix).all]
    first_checkpoints = set(default_checkpoint_dir(settings).glob(f"{checkpoint_prefix(TOPICS)}*.json"))
    assert first_checkpoints
    try:
        result = run_replay(other, kafka, dataset)
        assert (result.records_sent, result.resumed) == (total_records(dataset), False)
        assert run_replay(other, kafka, dataset, reset=True).records_sent == total_records(dataset)
        assert set(default_checkpoint_dir(settings).glob(f"{checkpoint_prefix(TOPICS)}*.json")) == first_checkpoints
        assert run_replay(settings, kafka, dataset).records_sent == 0  # the first still knows it is done
    finally:
        asyncio.run(kafka.delete_topics(others))
        for path in default_checkpoint_dir(other).glob(f"{checkpoint_prefix(RawTopics.of(other.topic_prefix))}*"):
            path.unlink()


def test_every_replayed_record_carries_the_time_it_was_sent(replayed: tuple[ReplayResult, int], dataset: Path,
                                                            settings: Settings) -> None:
    kafka = KafkaResource.from_settings(settings)

    async def stamps() -> dict[tuple[str, int], list[list[int]]]:
        """Per topic partition, the produced_at values of each record, in offset order."""
        found = {}
        for topic in (TOPICS.samples.name, TOPICS.common_features.name):
            for partition, end in (await kafka.end_offsets(topic)).items():
                found[(topic, partition)] = [
                    [int(value) for name, value in record.headers if name == PRODUCED_AT_HEADER]
                    async for record in kafka.read_range(topic, partition, 0, end)]
        return found

    written_ms, now_ms = dataset.stat().st_mtime * 1000, time.time() * 1000
    by_partition = asyncio.run(stamps())
    assert sum(map(len, by_partition.values())) == total_records(dataset)
    for (topic, partition), records in by_partition.items():
        assert all(len(stamp) == 1 for stamp in records), f"{topic}/{partition}: a record without one produced_at"
        sent = [stamp for stamp, in records]
        # Wall-clock ms of the send: after the files were written, and in send order along a partition
        # (the killed replay's records, then the resumed one's).
        assert sent == sorted(sent), f"{topic}/{partition}"
        assert written_ms <= sent[0] and sent[-1] <= now_ms, f"{topic}/{partition}"


def test_every_record_is_the_planned_one_in_its_key_partition_in_plan_order(
        replayed: tuple[ReplayResult, int], dataset: Path, settings: Settings) -> None:
    """Key, value, event time and source/line headers as planned; each key in the partition Kafka's Java
    client gives it (positive murmur2 modulo the partition count); along a partition, the plan's order,
    across the killed replay's records and the resumed one's."""
    kafka = KafkaResource.from_settings(settings)
    partitions = {topic.name: topic.partitions for topic in TOPICS.all}
    planned: dict[tuple[str, int], list[tuple[bytes, bytes, int, bytes, bytes]]] = defaultdict(list)
    for r in plan(dataset, Timeline.from_folder(dataset, event_time_config(settings)), TOPICS):
        partition = (murmur2(r.key) & 0x7FFFFFFF) % partitions[r.topic]
        planned[(r.topic, partition)].append((r.key, r.value, r.timestamp_ms, r.source.encode(), str(r.line).encode()))

    async def written() -> dict[tuple[str, int], list[tuple[bytes, bytes, int, bytes, bytes]]]:
        found = {}
        for topic in (TOPICS.samples.name, TOPICS.common_features.name):
            for partition, end in (await kafka.end_offsets(topic)).items():
                found[(topic, partition)] = [
                    (record.key, record.value, record.timestamp, headers[SOURCE_HEADER], headers[LINE_HEADER])
                    async for record in kafka.read_range(topic, partition, 0, end)
                    for headers in [dict(record.headers)]]
        return found

    assert asyncio.run(written()) == planned


def test_bronze_reconciles_byte_for_byte_with_the_source_files(bronze: S3Resource, dataset: Path) -> None:
    for topic in (TOPICS.samples.name, TOPICS.common_features.name):
        lines = _bronze_lines(bronze, topic)
        by_file: dict[str, dict[int, bytes]] = defaultdict(dict)
        for (source, line), value in lines.items():
            by_file[source][line] = value
        stem = "sample_skeleton" if topic == TOPICS.samples.name else "common_features"
        files = sorted(p.name for p in dataset.glob(f"{stem}_*.csv"))
        assert sorted(by_file) == files
        for name, rows in by_file.items():
            original = (dataset / name).read_bytes()
            rebuilt = b"".join(rows[i] for i in range(1, len(rows) + 1))
            assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(original).hexdigest(), name


def test_bronze_rerun_writes_identical_objects(bronze: S3Resource, settings: Settings) -> None:
    day = DAILY.get_partition_keys()[1]
    manifest_before = load_manifest(bronze, TOPICS.samples.name, day)
    objects_before = {k: bronze.get_bytes(k) for k in bronze.list_keys(manifest_before.prefix)}
    resources = {"kafka": KafkaResource.from_settings(settings), "s3": bronze,
                 "bronze_io_manager": BronzeIOManager(s3=bronze)}
    assert materialize(bronze_assets(DAILY, TOPICS), partition_key=day, resources=resources).success
    objects_after = {k: bronze.get_bytes(k) for k in bronze.list_keys(manifest_before.prefix)}
    assert objects_after == objects_before
    assert json.loads(objects_after[manifest_before.key("_manifest.json")])["records"] > 0


class _DiesAfterOneUpload(S3Resource):
    """MinIO that goes away after the first object of a run is stored."""

    def upload_file(self, path: Path, key: str) -> None:
        super().upload_file(path, key)
        raise ConnectionError(f"lost MinIO after storing {key}")


def test_a_bronze_rerun_that_dies_midway_leaves_the_stored_day_and_a_finished_one_leaves_only_its_objects(
        bronze: S3Resource, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each retry dies the same way: one retry after a second shows that as well as four over 75 s.
    monkeypatch.setattr(bronze_module, "SERVER_RETRY", RetryPolicy(max_retries=1, delay=1))
    day = DAILY.get_partition_keys()[2]
    prefix = day_prefix(TOPICS.samples.name, day)
    stored = {k: bronze.get_bytes(k) for k in bronze.list_keys(prefix)}
    stale = f"{prefix}g-0000000000000000/part-0.data.gz"  # what an older generation of the day left
    bronze.put_bytes(stale, b"stale")

    def rerun(s3: S3Resource) -> bool:
        resources = {"kafka": KafkaResource.from_settings(settings), "s3": s3,
                     "bronze_io_manager": BronzeIOManager(s3=s3)}
        samples = bronze_asset_key(RawTopics.short_name(TOPICS.samples))
        return materialize(bronze_assets(DAILY, TOPICS), partition_key=day, resources=resources,
                           selection=[samples], raise_on_error=False).success

    dying = _DiesAfterOneUpload(**bronze.model_dump())
    assert not rerun(dying)
    assert {k: bronze.get_bytes(k) for k in bronze.list_keys(prefix)} == {**stored, stale: b"stale"}
    manifest = load_manifest(bronze, TOPICS.samples.name, day)
    assert all(bronze.get_bytes(manifest.key(p["data_object"])) for p in manifest.parts)

    assert rerun(bronze)
    assert {k: bronze.get_bytes(k) for k in bronze.list_keys(prefix)} == stored


def test_bronze_keeps_records_the_replay_did_not_write_and_lists_them(settings: Settings, tmp_path: Path,
                                                                      kafka_service: Any) -> None:
    kafka = KafkaResource.from_settings(settings)
    topic = TopicSpec(f"test.bronze.{uuid.uuid4().hex[:8]}.samples", partitions=1)
    day = date(2026, 11, 2)
    at = day_window_ms(day)[0] + 1_000
    good = [(SOURCE_HEADER, b"sample_skeleton_train.csv"), (LINE_HEADER, b"7")]
    records = [  # value, headers, the fault bronze must list (None: a record of the replay's)
        (b"1,0,0,a,0,\n", good, None),
        (None, good, "null_value"),
        (b"2,0,0,b,0,\n", [(SOURCE_HEADER, b"\xff\xfe"), (LINE_HEADER, b"8")], "bad_header"),
        (b"3,0,0,c,0,\n", [(SOURCE_HEADER, b"a,b.csv"), (LINE_HEADER, b"9")], "bad_header"),
        (b"4,0,0,d,0,\n", [(SOURCE_HEADER, b"x.csv"), (LINE_HEADER, b"ten")], "bad_header"),
        (b"5,0,0,e,0,\n", [], None),
    ]

    async def run() -> BronzeDay:
        await kafka.create_topics([topic])
        try:
            async with kafka.producer() as producer:
                for value, headers, _ in records:
                    await (await producer.send(topic.name, value, key=b"k", headers=headers, timestamp_ms=at))
            return await capture_day(kafka, topic.name, day, tmp_path)
        finally:
            await kafka.delete_topics([topic.name])

    captured = asyncio.run(run())
    (part,) = captured.parts
    assert part.records == len(records)
    assert [(f["offset"], f["reason"]) for f in part.faults] == [
        (offset, fault) for offset, (_, _, fault) in enumerate(records) if fault is not None]
    assert gzip.decompress(part.data_file.read_bytes()) == b"".join(value or b"" for value, _, _ in records)
    index = list(csv.DictReader(io.StringIO(gzip.decompress(part.index_file.read_bytes()).decode())))
    assert [(row["source"], row["line"], row["length"]) for row in index] == [
        ("sample_skeleton_train.csv", "7", "11"), ("sample_skeleton_train.csv", "7", "0"), ("", "0", "11"),
        ("", "0", "11"), ("", "0", "11"), ("", "0", "11")]
    assert captured.manifest()["parts"][0]["faults"] == part.faults


def test_a_resumed_replay_passes_over_records_another_producer_wrote(settings: Settings, kafka_service: Any
                                                                      ) -> None:
    kafka = KafkaResource.from_settings(settings)
    topic = TopicSpec(f"test.replay.{uuid.uuid4().hex[:8]}.samples", partitions=1)

    async def run() -> set[tuple[str, int]]:
        await kafka.create_topics([topic])
        try:
            async with kafka.producer() as producer:
                for value, headers in [(b"x\n", [(SOURCE_HEADER, b"f.csv"), (LINE_HEADER, b"1")]), (None, []),
                                       (b"y\n", [(SOURCE_HEADER, b"\xff"), (LINE_HEADER, b"2")]),
                                       (b"z\n", [(SOURCE_HEADER, b"f.csv"), (LINE_HEADER, None)])]:
                    await (await producer.send(topic.name, value, key=b"k", headers=headers))
            return await _written_after(kafka, {topic.name: {0: 0}})
        finally:
            await kafka.delete_topics([topic.name])

    assert asyncio.run(run()) == {("f.csv", 1), ("", 0)}


def test_bronze_manifest_times_each_record_from_event_to_kafka(bronze: S3Resource, settings: Settings) -> None:
    """The append times in a day's manifest, against the day's records read back from Kafka here."""
    kafka = KafkaResource.from_settings(settings)
    day = DAILY.get_partition_keys()[1]
    manifest = load_manifest(bronze, TOPICS.samples.name, day)

    async def read() -> list[tuple[int, int]]:
        times = []
        for part in manifest.parts:
            async for record in kafka.read_range(TOPICS.samples.name, part["partition"], part["start_offset"],
                                                 part["end_offset"]):
                headers = dict(record.headers)
                times.append((record.timestamp, int(headers["produced_at"])))
        return times

    event, appended = (np.array(column, np.float64) for column in zip(*asyncio.run(read()), strict=True))
    times = manifest.append_times
    assert times.records == manifest.records == len(event) > 0
    assert times.event_to_append_p50_ms == np.median(appended - event)
    assert times.event_to_append_p99_ms == np.percentile(appended - event, 99)
    assert (times.appended_p50_ms, times.appended_p01_ms) == (np.median(appended), np.percentile(appended, 1))
