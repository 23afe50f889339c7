"""The silver tables' column contract, and the Spark parse of bronze parts that fills them.

Contract. ``impressions`` (one row per good sample line), ``user_context`` (one row per good
common-features line) and ``quarantine`` (every rejected line, byte-exact, with its reason): the
exact names and types gold, Trino and Feast rely on. The Iceberg IO manager refuses a DataFrame
that does not match, and the silver checks compare the stored tables with it.

Parse. The project's one Python parser (:func:`~taobao_assets.source.parser.parse_line`) runs
inside Spark via ``mapInArrow``, so batch silver and the Python paths cannot disagree about what
a line means. The input is a small DataFrame with one row per bronze part (one Kafka partition's
records of a day, :data:`PART_SCHEMA`); each task streams the part's two gzip objects from MinIO,
cuts the data at record boundaries given by the index lengths (never by splitting on newlines: a
final line may lack one, and the terminator is part of the record), parses each record with the
file and line the replay recorded, and emits Arrow batches of bounded size. A record's event time
is its Kafka timestamp from the index (the simulated event time the replay assigned), its ``day``
the bronze day. Good and rejected records come out of the same pass (``reason`` is null on good
ones), so a day's good table and its quarantine are two selections of one parse.

This module imports no Dagster: Spark's Python workers import it to unpickle the parse function,
and a light import keeps worker start-up (once per worker process) well under a second.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from io import BufferedIOBase
from typing import TYPE_CHECKING, Any, NamedTuple

import boto3
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from taobao_assets.source.format import FileKind
from taobao_assets.source.parser import CommonFeaturesRecord, QuarantineRecord, SampleRecord, parse_line

if TYPE_CHECKING:
    from taobao_assets.resources.s3 import S3Resource

# --- the column contract -----------------------------------------------------------------------

#: Single-valued sample fields stored as an id column (field 301 is the position, not an id).
ITEM_COLUMNS = {
    "item_id": "205", "category_id": "206", "shop_id": "207", "intention_id": "210", "brand_id": "216",
    "position": "301",
}
#: Combination fields: each becomes ``comb_<field>_id`` and ``comb_<field>_value`` (``ln(1 + count)``).
COMBINATION_FIELDS = ("508", "509", "702", "853")
USER_ID_FIELD = "101"
PROFILE_COLUMNS = {
    "user_category_id": "121", "user_group_id": "122", "gender_id": "124", "age_id": "125",
    "consumption_1_id": "126", "consumption_2_id": "127", "occupation_id": "128", "geography_id": "129",
}
#: 14-day history fields: each an array of (id, count).
HISTORY_COLUMNS = {
    "hist_category": "109_14", "hist_shop": "110_14", "hist_brand": "127_14", "hist_intention": "150_14",
}
HISTORY_ENTRY = StructType([StructField("id", LongType()), StructField("count", DoubleType())])


def _fields(*columns: tuple[str, DataType]) -> list[StructField]:
    return [StructField(name, kind) for name, kind in columns]


_TIME = _fields(("event_time", TimestampType()), ("day", DateType()))
_LOCATION = _fields(("source_file", StringType()), ("source_line", LongType()),
                    ("kafka_partition", IntegerType()), ("kafka_offset", LongType()))
_REJECTION = _fields(("reason", StringType()), ("message", StringType()), ("raw", BinaryType()))

IMPRESSIONS_SCHEMA = StructType([
    *_fields(("sample_id", LongType()), ("click", IntegerType()), ("conversion", IntegerType()),
             ("common_feature_index", StringType())),
    *_TIME,
    *_fields(*[(name, LongType()) for name in ITEM_COLUMNS]),
    *_fields(*[(f"comb_{fid}_{part}", kind) for fid in COMBINATION_FIELDS
               for part, kind in (("id", LongType()), ("value", DoubleType()))]),
    *_LOCATION,
])
USER_CONTEXT_SCHEMA = StructType([
    *_fields(("common_feature_index", StringType()), ("user_id", LongType())),
    *_fields(*[(name, LongType()) for name in PROFILE_COLUMNS]),
    *_fields(*[(name, ArrayType(HISTORY_ENTRY)) for name in HISTORY_COLUMNS]),
    *_TIME,
    *_LOCATION,
])
QUARANTINE_SCHEMA = StructType([
    *_fields(("day", DateType()), ("topic", StringType())), *_LOCATION, *_REJECTION,
])

DESCRIPTIONS = {
    "sample_id": "Sample id (impression key, unique per day).",
    "click": "1 if the impression was clicked, else 0.",
    "conversion": "1 if the click converted, else 0 (never above click).",
    "common_feature_index": "Key of the user context (silver.user_context) of the impression.",
    "event_time": "Simulated event time (UTC) the replay gave the record.",
    "day": "UTC day of event_time: the daily partition.",
    "user_id": "User id (field 101).",
    "source_file": "Raw file the line came from.",
    "source_line": "1-based line number in source_file.",
    "kafka_partition": "Kafka partition of the record.",
    "kafka_offset": "Kafka offset of the record.",
    "topic": "Kafka topic of the rejected record.",
    "reason": "Why the line was rejected (taobao_assets.source.format.Reason).",
    "message": "The parser's explanation, naming the column or field.",
    "raw": "The record exactly as received, terminator included.",
    **{name: f"Feature id of field {fid}." for name, fid in {**ITEM_COLUMNS, **PROFILE_COLUMNS}.items()},
    **{f"comb_{fid}_id": f"Feature id of combination field {fid}." for fid in COMBINATION_FIELDS},
    **{f"comb_{fid}_value": f"Value of combination field {fid}: ln(1 + count)."
       for fid in COMBINATION_FIELDS},
    **{name: f"14-day history field {fid}: (id, count) entries." for name, fid in HISTORY_COLUMNS.items()},
}

# --- the parse: bronze parts -> Arrow batches of typed rows or rejections --------------------------

#: One row per bronze part: where its two objects are, its Kafka partition and its day.
PART_SCHEMA = "bucket STRING, data_key STRING, index_key STRING, kafka_partition INT, day DATE"
#: The index columns a part's records are cut and located by (bronze writes them with a header).
INDEX_COLUMNS = ("offset", "timestamp_ms", "source", "line", "length")
#: A batch is emitted once it holds this many records or raw bytes; common-features rows have
#: ~500 entries each, so bytes are what bound the Python objects a batch holds.
BATCH_RECORDS = 65_536
BATCH_BYTES = 8 << 20
READ_CHUNK = 4 << 20
_CONTEXT = [*_TIME, *_LOCATION]
_CONTEXT_NAMES = {f.name for f in _CONTEXT}
_ABSENT = (None, None)


def _sample_values(record: SampleRecord) -> tuple[Any, ...]:
    features = record.features
    items = [features.get(fid, _ABSENT)[0] for fid in ITEM_COLUMNS.values()]
    combinations = [part for fid in COMBINATION_FIELDS for part in features.get(fid, _ABSENT)]
    return (record.sample_id, record.click, record.conversion, record.common_feature_index,
            *items, *combinations)


def _common_values(record: CommonFeaturesRecord) -> tuple[Any, ...]:
    features = record.features
    profile = [features.get(fid, _ABSENT)[0] for fid in PROFILE_COLUMNS.values()]
    histories = [record.histories[fid] for fid in HISTORY_COLUMNS.values()]
    return (record.common_feature_index, features.get(USER_ID_FIELD, _ABSENT)[0], *profile, *histories)


@dataclass(frozen=True)
class ParseSpec:
    """The parse of one file kind: its good table, and a parsed record's values for that table's
    columns other than time and location (in the table's order)."""

    kind: FileKind
    table: StructType
    values: Callable[[Any], tuple[Any, ...]]

    @property
    def parsed(self) -> StructType:
        """The parse output: record columns, then time and location, then the rejection columns."""
        record = [f for f in self.table.fields if f.name not in _CONTEXT_NAMES]
        return StructType([*record, *_CONTEXT, *_REJECTION])


PARSE_SPECS = {
    FileKind.SAMPLE_SKELETON: ParseSpec(FileKind.SAMPLE_SKELETON, IMPRESSIONS_SCHEMA, _sample_values),
    FileKind.COMMON_FEATURES: ParseSpec(FileKind.COMMON_FEATURES, USER_CONTEXT_SCHEMA, _common_values),
}


@dataclass(frozen=True)
class ObjectStore:
    """Where the parse tasks read bronze objects: plain values, so the parse function pickles."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str

    @classmethod
    def from_resource(cls, s3: S3Resource) -> ObjectStore:
        return cls(s3.endpoint_url or "", s3.aws_access_key_id or "", s3.aws_secret_access_key or "",
                   s3.region_name or "")

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)


def _open_gzip(client: Any, bucket: str, key: str) -> gzip.GzipFile:
    return gzip.GzipFile(fileobj=client.get_object(Bucket=bucket, Key=key)["Body"])


class BronzeRecord(NamedTuple):
    """One record of a bronze part (a tuple: one is made per record, and tuples are cheap to make)."""

    raw: bytes
    offset: int
    timestamp_ms: int
    source: str
    line: int


def _lines(stream: BufferedIOBase) -> Iterator[bytes]:
    """The lines of a stream without their newlines, split in bulk (GzipFile.readline is slow)."""
    rest = b""
    while chunk := stream.read(READ_CHUNK):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def bronze_records(data: BufferedIOBase, index: BufferedIOBase, where: str) -> Iterator[BronzeRecord]:
    """The records of a bronze part: the data cut at the index's lengths, with the index's fields.

    ``where`` names the part in errors. A data object shorter or longer than its index says is an
    error: parsing a misaligned cut would shift the bytes of every later record.
    """
    rows = _lines(index)
    header = next(rows, b"").decode().split(",")
    missing = [c for c in INDEX_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{where}: the index lacks columns {missing} (its header is {header})")
    offset_at, time_at, source_at, line_at, length_at = (header.index(c) for c in INDEX_COLUMNS)
    sources: dict[bytes, str] = {}
    buffer, position = b"", 0
    for row in rows:
        cells = row.split(b",")
        size = int(cells[length_at])
        while len(buffer) - position < size:
            chunk = data.read(READ_CHUNK)
            if not chunk:
                raise ValueError(f"{where}: data ends inside the record at offset {int(cells[offset_at])} "
                                 f"({cells[source_at].decode()} line {int(cells[line_at])}, {size} bytes)")
            buffer, position = buffer[position:] + chunk, 0
        name = cells[source_at]
        source = sources.get(name) or sources.setdefault(name, name.decode())
        yield BronzeRecord(buffer[position:position + size], int(cells[offset_at]), int(cells[time_at]),
                           source, int(cells[line_at]))
        position += size
    if position != len(buffer) or data.read(1):
        raise ValueError(f"{where}: data continues after the last record of the index")


class _Batch:
    """Rows of one Arrow batch under construction, kept as tuples and transposed once when taken."""

    def __init__(self, spec: ParseSpec) -> None:
        self.spec = spec
        self.schema = to_arrow_schema(spec.parsed)
        self.nulls = (None,) * (len(spec.parsed.fields) - len(_CONTEXT) - len(_REJECTION))
        self.rows: list[tuple[Any, ...]] = []
        self.bytes = 0

    def add(self, record: BronzeRecord, partition: int, day: date) -> None:
        parsed = parse_line(record.raw, self.spec.kind, record.source, record.line)
        context = (record.timestamp_ms * 1000, day, record.source, record.line, partition, record.offset)
        if isinstance(parsed, QuarantineRecord):
            row = (*self.nulls, *context, parsed.reason.value, parsed.message, parsed.raw)
        else:
            row = (*self.spec.values(parsed), *context, None, None, None)
        self.rows.append(row)
        self.bytes += len(record.raw)

    @property
    def full(self) -> bool:
        return len(self.rows) >= BATCH_RECORDS or self.bytes >= BATCH_BYTES

    def take(self) -> pa.RecordBatch:
        columns = list(zip(*self.rows, strict=True))
        batch = pa.RecordBatch.from_arrays(
            [pa.array(column, type=f.type) for column, f in zip(columns, self.schema, strict=True)],
            schema=self.schema,
        )
        self.rows, self.bytes = [], 0
        return batch


@dataclass(frozen=True)
class BronzePartParser:
    """The ``mapInArrow`` function: rows of :data:`PART_SCHEMA` in, parsed rows of ``kind`` out."""

    kind: FileKind
    store: ObjectStore

    def __call__(self, parts: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        client = self.store.client()
        batch = _Batch(PARSE_SPECS[self.kind])
        for part in (row for arrow in parts for row in arrow.to_pylist()):
            where = f"s3://{part['bucket']}/{part['data_key']}"
            with _open_gzip(client, part["bucket"], part["data_key"]) as data, \
                    _open_gzip(client, part["bucket"], part["index_key"]) as index:
                for record in bronze_records(data, index, where):
                    batch.add(record, part["kafka_partition"], part["day"])
                    if batch.full:
                        yield batch.take()
        if batch.rows:
            yield batch.take()


def parse_bronze(parts: DataFrame, kind: FileKind, store: ObjectStore) -> DataFrame:
    """Every record of the parts, parsed: record columns, time and location, and for a rejected
    record its reason, message and raw bytes (null on good records)."""
    return parts.mapInArrow(BronzePartParser(kind, store), PARSE_SPECS[kind].parsed)


def good_rows(parsed: DataFrame, table: StructType) -> DataFrame:
    """The good records of a parse, as rows of ``table``."""
    return parsed.where(F.col("reason").isNull()).select(*table.fieldNames())


def rejected_rows(parsed: DataFrame, topic: str) -> DataFrame:
    """The rejected records of a parse of ``topic``, as quarantine rows."""
    return (parsed.where(F.col("reason").isNotNull())
            .withColumn("topic", F.lit(topic))
            .select(*QUARANTINE_SCHEMA.fieldNames()))
