"""Arrow tables into and out of Postgres with ``COPY``, with no Python object per row or cell.

Feast's Postgres offline store inserts an entity frame row by row (``executemany``) and fetches
results as tuples that it transposes cell by cell in Python: at a million rows that is most of the
time and several copies of the data in memory. Here both directions stream CSV through ``COPY``
and let Arrow's CSV reader and writer (C++) do the conversions.

CSV is exact for the types the feature tables use: Postgres prints doubles in their shortest form
that reads back to the same value (``extra_float_digits = 1``, set by :func:`exact_session`), and
it quotes empty strings, so an unquoted empty field is NULL and nothing else.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql

#: Bytes of CSV Arrow parses at a time on the way out: bounds the memory next to the result.
READ_BLOCK = 16 << 20


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


class _CopyReader(io.RawIOBase):
    """The output of a ``COPY ... TO STDOUT`` as a readable file, pulled block by block."""

    def __init__(self, blocks: Iterator[bytes | bytearray | memoryview]) -> None:
        self._blocks = blocks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._pending = memoryview(block)
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def copy_out(cur: psycopg.Cursor, query: sql.Composable | str, schema: pa.Schema) -> pa.Table:
    """The rows of ``query`` as an Arrow table of ``schema`` (its names and types, in its order).

    A naive timestamp column of ``schema`` receives a ``timestamptz`` column as its UTC time, as
    Feast's offline store returns it.
    """
    read_types = {f.name: pa.timestamp(f.type.unit, "UTC") if pa.types.is_timestamp(f.type) else f.type
                  for f in schema}
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(
        sql.SQL(query) if isinstance(query, str) else query)
    with cur.copy(statement) as copy:
        reader = pa_csv.open_csv(
            io.BufferedReader(_CopyReader(iter(copy)), READ_BLOCK),
            read_options=pa_csv.ReadOptions(column_names=schema.names, block_size=READ_BLOCK),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=read_types, null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]),
        )
        table = reader.read_all()
    columns = [pc.cast(table.column(f.name), f.type) if table.schema.field(f.name).type != f.type
               else table.column(f.name) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
