"""The silver tables' column contract, and the Spark parse of bronze parts that fills them.

Contract. ``impressions`` (one row per good sample line), ``user_context`` (one row per good
common-features line) and ``quarantine`` (every rejected line, byte-exact, with its reason): the
exact names and types gold, Trino and Feast rely on. The Iceberg IO manager refuses a DataFrame
that does not match, and the silver checks compare the stored tables with it.

Parse. The project's one parser (the compiled core behind
:func:`~taobao_assets.source.parser.parse_batch`) runs inside Spark via ``mapInArrow``, Arrow in
and Arrow out, so batch silver and the streaming path cannot disagree about what a line means and
no Python object is made per record. The input is a small DataFrame with one row per bronze part
(one Kafka partition's records of a day, :data:`PART_SCHEMA`); each task streams the part's two
gzip objects from MinIO, cuts the data at the index's lengths
(:func:`~taobao_assets.bronze_parts.part_batches`), and parses each batch of records with the file
and line the replay recorded. A record's event time
is its Kafka timestamp from the index (the simulated event time the replay assigned), its ``day``
the bronze day. Good and rejected records come out of the same pass (``reason`` is null on good
ones), so a day's good table and its quarantine are two selections of one parse.

This module imports no Dagster: Spark's Python workers import it to unpickle the parse function,
and a light import keeps worker start-up (once per worker process) well under a second.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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

from taobao_assets.bronze_parts import part_batches
from taobao_assets.source.format import FileKind
from taobao_assets.source.parser import BatchColumn, parse_batch

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
#: A batch is emitted once it holds this many records or raw bytes (common-features rows are
#: ~12 KB each in the real files, so bytes bound a batch of them).
BATCH_RECORDS = 65_536
BATCH_BYTES = 8 << 20
_CONTEXT = [*_TIME, *_LOCATION]
_CONTEXT_NAMES = {f.name for f in _CONTEXT}

SAMPLE_LAYOUT = (
    *(BatchColumn(name, name) for name in ("sample_id", "click", "conversion", "common_feature_index")),
    *(BatchColumn(name, "id", fid) for name, fid in ITEM_COLUMNS.items()),
    *(BatchColumn(f"comb_{fid}_{what}", what, fid) for fid in COMBINATION_FIELDS
      for what in ("id", "value")),
)
COMMON_LAYOUT = (
    BatchColumn("common_feature_index", "common_feature_index"),
    BatchColumn("user_id", "id", USER_ID_FIELD),
    *(BatchColumn(name, "id", fid) for name, fid in PROFILE_COLUMNS.items()),
    *(BatchColumn(name, "history", fid) for name, fid in HISTORY_COLUMNS.items()),
)


@dataclass(frozen=True)
class ParseSpec:
    """The parse of one file kind: its good table, and what of a record fills each of that table's
    columns other than time and location (in the table's order)."""

    kind: FileKind
    table: StructType
    layout: tuple[BatchColumn, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.table.fields if f.name not in _CONTEXT_NAMES]
        if [c.name for c in self.layout] != names:
            raise ValueError(f"the {self.kind.value} parse layout {[c.name for c in self.layout]} "
                             f"does not match its table's record columns {names}")

    @property
    def parsed(self) -> StructType:
        """The parse output: record columns, then time and location, then the rejection columns."""
        record = [f for f in self.table.fields if f.name not in _CONTEXT_NAMES]
        return StructType([*record, *_CONTEXT, *_REJECTION])

    def batch(self, data: bytes, ends: np.ndarray | None, context: list[pa.Array]) -> pa.RecordBatch:
        """Parse records stored back to back in ``data`` (ending at ``ends``, or lines when ``None``,
        as in the raw files); ``context`` holds their time and location columns, in :data:`_CONTEXT`
        order."""
        parsed = parse_batch(self.kind, self.layout, data, ends)
        record = len(self.layout)
        return pa.RecordBatch.from_arrays([*parsed.columns[:record], *context, *parsed.columns[record:]],
                                          schema=to_arrow_schema(self.parsed))


PARSE_SPECS = {
    FileKind.SAMPLE_SKELETON: ParseSpec(FileKind.SAMPLE_SKELETON, IMPRESSIONS_SCHEMA, SAMPLE_LAYOUT),
    FileKind.COMMON_FEATURES: ParseSpec(FileKind.COMMON_FEATURES, USER_CONTEXT_SCHEMA, COMMON_LAYOUT),
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


def bronze_context(index: pa.RecordBatch, partition: int, day: date) -> list[pa.Array]:
    """Time and location columns of a part's records from their index rows: the event time is the
    Kafka timestamp (the simulated event time the replay assigned), the day the bronze day."""
    rows = index.num_rows
    event_time = pc.multiply(index.column("timestamp_ms"), 1000).cast(pa.timestamp("us", tz="UTC"))
    return [event_time, pa.repeat(pa.scalar(day, pa.date32()), rows), index.column("source"),
            index.column("line"), pa.repeat(pa.scalar(partition, pa.int32()), rows), index.column("offset")]


@dataclass(frozen=True)
class BronzePartParser:
    """The ``mapInArrow`` function: rows of :data:`PART_SCHEMA` in, parsed rows of ``kind`` out."""

    kind: FileKind
    store: ObjectStore

    def __call__(self, parts: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        client = self.store.client()
        spec = PARSE_SPECS[self.kind]
        for part in (row for arrow in parts for row in arrow.to_pylist()):
            where = f"s3://{part['bucket']}/{part['data_key']}"
            with _open_gzip(client, part["bucket"], part["data_key"]) as data, \
                    _open_gzip(client, part["bucket"], part["index_key"]) as index:
                for batch in part_batches(data, index, where, BATCH_RECORDS, BATCH_BYTES):
                    yield spec.batch(batch.data, batch.ends,
                                     bronze_context(batch.index, part["kafka_partition"], part["day"]))


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
