"""Bronze: each day's raw Kafka records, byte-exact, as gzip objects in MinIO.

For day D and a topic, the day's records are those with event timestamps in ``[D, D+1)``; the
replay keeps timestamps non-decreasing along every partition, so per partition they are exactly
the offsets between ``offsets_for_times(D)`` and ``offsets_for_times(D+1)``. Each partition's range
becomes two objects: ``part-P.data.gz``, the record values concatenated (the raw lines with their
terminators, so the bytes of the source files come back exactly), and ``part-P.index.csv.gz``, one
row per record (offset, timestamp, source file, line, length) so later layers can name the file and
line of a bad record and cut the data at record boundaries even where a final line had no newline.

A record the replay did not write is kept too: one without a value (a tombstone) as zero bytes,
one whose headers are not the replay's with an empty source and line 0; each is listed with its
offset and reason under its part's ``faults`` in the manifest (silver then quarantines it).

The asset body only reads Kafka and spools the objects locally; :mod:`taobao_assets.io_managers.bronze`
stores them with a manifest. gzip headers carry no time or name, so a re-run writes identical bytes.
"""


import asyncio
import gzip
import hashlib
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from aiokafka.structs import ConsumerRecord
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, AssetSpec, DailyPartitionsDefinition, asset

from taobao_assets import failpoints
from taobao_assets.bronze_objects import AppendTimes, BronzeDay, BronzePart
from taobao_assets.resources.kafka import KafkaResource, TopicSpec
from taobao_assets.server_loss import SERVER_RETRY, on_server_loss
from taobao_assets.settings import get_settings
from taobao_assets.source.event_time import day_window_ms
from taobao_assets.source.topics import BadHeader, RawTopics, read_headers

INDEX_HEADER = b"offset,timestamp_ms,source,line,length\n"
#: How often (records) a long copy reports progress in the run log.
PROGRESS_EVERY = 200_000


#: gzip level 1: on Ali-CCP's lines it compresses about 3x as fast as level 6 (the copy's main cost)
#: for objects about a third larger (0.22 against 0.16 of the samples' bytes, 0.31 against 0.24
#: of the contexts'); bronze is read once a day by silver, and its CPU time is on the batch's path.
GZIP_LEVEL = 1
#: Records gathered before one write to the gzip streams and the digest: a call per record cost
#: more in Python than the compression of its few hundred bytes.
WRITE_EVERY = 4096


def _gzip_writer(path: Path) -> gzip.GzipFile:
    # No file name and mtime 0 in the header: identical input gives identical objects.
    return gzip.GzipFile(filename="", mode="wb", fileobj=path.open("wb"), mtime=0, compresslevel=GZIP_LEVEL)


class _PartFiles:
    """A part's two gzip files and the digest and size of its data, written :data:`WRITE_EVERY` records at a time."""

    def __init__(self, data_file: Path, index_file: Path) -> None:
        self.data, self.index = _gzip_writer(data_file), _gzip_writer(index_file)
        self.digest, self.size = hashlib.sha256(), 0
        self._values: list[bytes] = []
        self._rows: list[bytes] = [INDEX_HEADER]

    def add(self, value: bytes, index_row: bytes) -> None:
        self._values.append(value)
        self._rows.append(index_row)
        self.size += len(value)
        if len(self._values) >= WRITE_EVERY:
            self._write()

    def _write(self) -> None:
        chunk = b"".join(self._values)
        self.data.write(chunk)
        self.digest.update(chunk)
        self.index.write(b"".join(self._rows))
        self._values.clear()
        self._rows.clear()

    def __enter__(self) -> "_PartFiles":
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self._write()
        finally:
            self.data.close()
            self.index.close()


async def capture_day(
    kafka: KafkaResource, topic: str, day: date, spool: Path, log: Any = None
) -> BronzeDay:
    """Copy ``topic``'s records of ``day`` into gzip files under ``spool``."""
    t0, t1 = day_window_ms(day)
    starts, ends = await kafka.offsets_at(topic, t0), await kafka.offsets_at(topic, t1)
    parts = []
    event_ms: list[int] = []
    appended_ms: list[int] = []
    for partition in sorted(starts):
        start, end = starts[partition], ends[partition]
        data_file = spool / f"part-{partition:05d}.data.gz"
        index_file = spool / f"part-{partition:05d}.index.csv.gz"
        records = 0
        faults: list[dict[str, Any]] = []
        with _PartFiles(data_file, index_file) as files:
            async for record in kafka.read_range(topic, partition, start, end):
                value: bytes = record.value or b""
                source, line, produced_at, fault = _origin(record)
                if produced_at is not None:
                    event_ms.append(record.timestamp)
                    appended_ms.append(produced_at)
                if record.value is None:
                    fault = {"reason": "null_value", "message": "a record without a value (a tombstone)"}
                if fault is not None:
                    faults.append({"offset": record.offset, **fault})
                files.add(value, b"%d,%d,%s,%d,%d\n" % (record.offset, record.timestamp, source, line, len(value)))
                records += 1
                if log is not None and records % PROGRESS_EVERY == 0:
                    log.info(f"{topic}[{partition}] {day}: {records:,} of {end - start:,} records")
        parts.append(BronzePart(partition, start, end, records, files.size, files.digest.hexdigest(),
                                data_file, index_file, faults))
        failpoints.reached("bronze.partition_read")
    return BronzeDay(topic, day, parts, AppendTimes.of(event_ms, appended_ms))


def _origin(record: ConsumerRecord) -> tuple[bytes, int, int | None, dict[str, Any] | None]:
    """The source and line the index stores for a record, its produce time, and what is wrong with its headers.

    The index is CSV: a source that is not the replay's (not UTF-8, or with a comma, quote or line
    break) is stored empty with line 0, and the record listed as a fault, never dropped.
    """
    try:
        headers = read_headers(record.headers)
    except BadHeader as error:
        return b"", 0, None, {"reason": "bad_header", "message": str(error)}
    if any(c in headers.source for c in ',"\r\n'):
        return b"", 0, headers.produced_at, {
            "reason": "bad_header", "message": f"header source is {headers.source!r}: not a file name"}
    return headers.source.encode(), headers.line, headers.produced_at, None


def topic_asset_key(short_name: str) -> AssetKey:
    return AssetKey(["kafka", short_name])


def bronze_asset_key(short_name: str) -> AssetKey:
    """``bronze/samples``: keys use the topics' short names, so they do not change with the prefix."""
    return AssetKey(["bronze", short_name])


def _bronze_asset(spec: TopicSpec, daily: DailyPartitionsDefinition) -> AssetsDefinition:
    @asset(
        retry_policy=SERVER_RETRY,
        key=bronze_asset_key(RawTopics.short_name(spec)),
        deps=[topic_asset_key(RawTopics.short_name(spec))],
        partitions_def=daily,
        io_manager_key="bronze_io_manager",
        group_name="bronze",
        kinds={"kafka", "s3"},
        metadata={"topic": spec.name},
        description=f"Raw records of Kafka topic {spec.name} for one day of event time, byte-exact, "
                    f"gzip in MinIO with an offset index and a manifest.",
    )
    @on_server_loss("kafka", "minio")
    def _asset(context: AssetExecutionContext, kafka: KafkaResource) -> BronzeDay:
        day = date.fromisoformat(context.partition_key)
        spool_root = get_settings().state_dir / "spool"
        spool_root.mkdir(parents=True, exist_ok=True)
        spool = Path(tempfile.mkdtemp(prefix=f"bronze-{spec.name}-{day}-", dir=spool_root))
        result = asyncio.run(capture_day(kafka, spec.name, day, spool, context.log))
        context.log.info(f"{spec.name} {day}: {result.records:,} records, {result.bytes:,} bytes "
                         f"from {len(result.parts)} partitions")
        return result

    return _asset


def kafka_topics(topics: RawTopics) -> list[AssetSpec]:
    """The raw topics as external assets: the replay job writes them, bronze reads them."""
    return [
        AssetSpec(topic_asset_key(RawTopics.short_name(spec)), group_name="raw", kinds={"kafka"},
                  description=f"Kafka topic {spec.name}, written by the replay job "
                              f"(python -m taobao_assets.source.replay).")
        for spec in topics.all
    ]


def bronze_assets(daily: DailyPartitionsDefinition, topics: RawTopics) -> list[AssetsDefinition]:
    return [_bronze_asset(spec, daily) for spec in topics.all]
