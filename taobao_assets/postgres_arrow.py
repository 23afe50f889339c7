"""Arrow tables into and out of Postgres with ``COPY``, with no Python object per row or cell.

Feast's Postgres offline store inserts an entity frame row by row (``executemany``) and fetches
results as tuples that it transposes cell by cell in Python: at a million rows that is most of the
time and several copies of the data in memory. Here both directions go through ``COPY``: in as CSV
written by Arrow (C++); out in Postgres's binary form, decoded into Arrow buffers by the compiled
core (``CopyDecoder``; printing and parsing a decimal per double was most of a training set's CPU),
or as CSV read by Arrow for a type the decoder does not know.

CSV is exact for the types the feature tables use: Postgres prints doubles in their shortest form
that reads back to the same value (``extra_float_digits = 1``, set by :func:`exact_session`), and
it quotes empty strings, so an unquoted empty field is NULL and nothing else.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql
from taobao_parser_core import CopyDecoder

from taobao_assets.source.parser import core_array

#: Bytes of ``COPY`` output converted at a time: bounds the memory next to the result.
READ_BLOCK = 16 << 20
#: Postgres type name -> what the compiled binary decoder calls its wire format.
_WIRES = {"int2": "int2", "int4": "int4", "int8": "int8", "float4": "float4", "float8": "float8", "bool": "bool",
          "text": "text", "varchar": "text", "bpchar": "text", "name": "text", "timestamp": "timestamp",
          "timestamptz": "timestamp", "date": "date"}
#: The Arrow type of the decoder's buffers per wire format (cast to the caller's types after).
_DECODED = {"int2": pa.int32(), "bool": pa.int32(), "int4": pa.int32(), "date": pa.date32(), "int8": pa.int64(),
            "timestamp": pa.timestamp("us", "UTC"), "float4": pa.float64(), "float8": pa.float64(),
            "text": pa.string()}


def exact_session(cur: psycopg.Cursor) -> None:
    """Session settings under which the CSV text of timestamps and doubles is exact and unambiguous."""
    cur.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET DateStyle = 'ISO, YMD'")


def table_name(name: str) -> sql.Identifier:
    """A table name as SQL: ``schema.table`` or ``table``, each part quoted."""
    return sql.Identifier(*name.split("."))


def copy_in(cur: psycopg.Cursor, table: str, data: pa.Table) -> None:
    """Append ``data`` to ``table`` (``[schema.]name``; columns by name).

    Timestamps keep their instant (a naive one is read in the session's zone, UTC under
    :func:`exact_session`); they are written to the microsecond, Postgres's precision.
    """
    data = pa.Table.from_arrays(
        [pc.cast(c, pa.timestamp("us", c.type.tz), safe=False) if pa.types.is_timestamp(c.type) else c
         for c in data.columns], names=data.column_names)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in data.column_names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(table_name(table), columns)
    buffer = io.BytesIO()
    pa_csv.write_csv(data, buffer, pa_csv.WriteOptions(include_header=False))
    with cur.copy(statement) as copy:
        copy.write(buffer.getbuffer())


#: What :class:`PartitionCopier` returns per partition, as Spark's DDL: the rows it appended.
COPIED = "rows long"


@dataclass(frozen=True)
class PartitionCopier:
    """The ``mapInArrow`` function that appends each Spark partition's rows to ``table``.

    Run by Spark's Python workers, a partition's Arrow batches go straight from the executor to
    Postgres, one ``COPY`` per batch in one transaction per partition: no process holds more than
    a batch, and the driver none (collecting a day of gold to the driver failed at 10 M samples).
    The partitions commit one by one, so ``table`` is a staging table the caller moves in one
    transaction once every partition is in.
    """

    conninfo: str = field(repr=False)
    table: str

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = 0
        with psycopg.connect(self.conninfo) as conn, conn.cursor() as cur:
            exact_session(cur)
            for batch in batches:
                copy_in(cur, self.table, pa.Table.from_batches([batch]))
                rows += batch.num_rows
        yield pa.RecordBatch.from_pydict({"rows": pa.array([rows], pa.int64())})


def _chunks(copy: psycopg.Copy) -> Iterator[bytearray]:
    """The output of a ``COPY ... TO STDOUT`` in chunks of about :data:`READ_BLOCK` bytes of whole rows.

    Postgres sends one message per row, so blocks end at row ends and a chunk of whole blocks is
    whole rows: each is converted on its own (memory: the result and one chunk). Each block is
    copied into the chunk at once: keeping psycopg's blocks alive until a join cost twice the CPU.
    """
    chunk = bytearray()
    for block in copy:
        chunk += block
        if len(chunk) >= READ_BLOCK:
            yield chunk
            chunk = bytearray()
    if chunk:
        yield chunk


def _type_names(cur: psycopg.Cursor, query: sql.Composable) -> list[str]:
    """The Postgres type name of each result column of ``query``."""
    cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(query))
    infos = [cur.adapters.types.get(column.type_code) for column in cur.description or []]
    return [info.name if info else "" for info in infos]


def _binary(cur: psycopg.Cursor, query: sql.Composable, wires: list[str], names: list[str]) -> pa.Table:
    decoder = CopyDecoder(wires)
    with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)) as copy:
        for chunk in _chunks(copy):
            decoder.feed(chunk)
    rows, buffers = decoder.finish()
    return pa.Table.from_arrays(
        [core_array(_DECODED[wire], rows, validity, values) for wire, (validity, values) in zip(wires, buffers,
                                                                                               strict=True)],
        names=names)


def _csv(cur: psycopg.Cursor, query: sql.Composable, schema: pa.Schema, types: list[str]) -> pa.Table:
    # Postgres prints a timestamptz with its offset, a timestamp without: each is read as what it is.
    read_types = {f.name: pa.timestamp(f.type.unit, "UTC" if kind == "timestamptz" else None)
                  if pa.types.is_timestamp(f.type) else f.type for f, kind in zip(schema, types, strict=True)}
    options = {
        "read_options": pa_csv.ReadOptions(column_names=schema.names),
        "parse_options": pa_csv.ParseOptions(newlines_in_values=True),
        "convert_options": pa_csv.ConvertOptions(
            column_types=read_types, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]),
    }
    with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)) as copy:
        parts = [pa_csv.read_csv(pa.py_buffer(chunk), **options) for chunk in _chunks(copy)]
    return pa.concat_tables(parts) if parts else pa.schema(list(read_types.items())).empty_table()


def copy_out(cur: psycopg.Cursor, query: sql.Composable | str, schema: pa.Schema) -> pa.Table:
    """The rows of ``query`` as an Arrow table of ``schema`` (its names and types, in its order).

    Postgres's binary form where the compiled decoder knows every column's type (numbers, booleans,
    text, timestamps, dates), CSV otherwise. A naive timestamp column of ``schema`` receives a
    ``timestamptz`` column as its UTC time, as Feast's offline store returns it.
    """
    composed = sql.SQL(query) if isinstance(query, str) else query
    types = _type_names(cur, composed)
    wires = [_WIRES.get(kind) for kind in types]
    table = (_binary(cur, composed, [w for w in wires if w], schema.names) if all(wires)
             else _csv(cur, composed, schema, types))
    columns = [pc.cast(table.column(i), f.type) if table.schema.field(i).type != f.type else table.column(i)
               for i, f in enumerate(schema)]
    return pa.Table.from_arrays(columns, schema=schema)
