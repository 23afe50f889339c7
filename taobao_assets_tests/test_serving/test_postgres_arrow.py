"""Arrow through ``COPY``: both ways out (the compiled binary decoder, and CSV for other types) give
what psycopg's own row-by-row conversion gives, and ``copy_in`` stores what it is given."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from taobao_assets.postgres_arrow import copy_in, copy_out, exact_session
from taobao_assets.settings import Settings

COLUMNS = {"i2": "int2", "i4": "int4", "i8": "int8", "f4": "float4", "f8": "float8", "b": "bool", "t": "text",
           "v": "varchar(20)", "ts": "timestamp", "tz": "timestamptz", "d": "date"}
ARROW = pa.schema([("i2", pa.int16()), ("i4", pa.int32()), ("i8", pa.int64()), ("f4", pa.float32()),
                   ("f8", pa.float64()), ("b", pa.bool_()), ("t", pa.string()), ("v", pa.string()),
                   ("ts", pa.timestamp("us")), ("tz", pa.timestamp("us")), ("d", pa.date32())])
ROWS = [
    (1, 2, 3, 1.5, 0.1, True, "a", "b", datetime(2024, 1, 2, 3, 4, 5, 678901),
     datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), date(2024, 1, 2)),
    (None,) * 11,
    (-(2**15), -(2**31), -(2**63), -0.0, -math.inf, False, "", "", datetime(1970, 1, 1), datetime(1969, 12, 31, 23, 59,
     59, 999999, tzinfo=UTC), date(1999, 12, 31)),
    (2**15 - 1, 2**31 - 1, 2**63 - 1, 3.4e38, 5e-324, None, "é日本\x01,\"\n", "x" * 20, datetime(2000, 1, 1),
     datetime(2100, 6, 1, tzinfo=UTC), date(2000, 1, 1)),
    (0, 0, 0, math.nan, math.nan, True, None, None, None, None, None),
]


@pytest.fixture
def cursor(serving_settings: Settings) -> Iterator[psycopg.Cursor]:
    s = serving_settings
    with psycopg.connect(host=s.postgres_host, port=s.postgres_port, user=s.postgres_user,
                         password=s.postgres_password, dbname=s.postgres_db) as conn, conn.cursor() as cur:
        exact_session(cur)
        cur.execute(f"CREATE TEMPORARY TABLE typed ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())}, n numeric)")
        cur.executemany(f"INSERT INTO typed VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))})",
                        [(*row, None if row[0] is None else Decimal("1.25")) for row in ROWS])
        yield cur
        conn.rollback()


def _plain(value: Any) -> Any:
    """A value comparable with ``==``: instants as naive UTC, NaN as a string."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return [tuple(_plain(v) for v in row.values()) for row in table.to_pylist()]


@pytest.mark.parametrize("extra", ["", ", n"], ids=["binary", "csv (numeric has no binary decoding)"])
def test_copy_out_gives_psycopgs_values(cursor: psycopg.Cursor, extra: str) -> None:
    query = f"SELECT {', '.join(COLUMNS)}{extra} FROM typed ORDER BY i4 NULLS FIRST, f8 NULLS FIRST"
    cursor.execute(query)
    fetched = cursor.fetchall()
    schema = ARROW.append(pa.field("n", pa.decimal128(10, 2))) if extra else ARROW
    # What Feast's stock store makes of psycopg's values: an Arrow array of the column's type each.
    expected = pa.Table.from_arrays([pa.array([row[i] for row in fetched], f.type) for i, f in enumerate(schema)],
                                    schema=schema)
    found = copy_out(cursor, query, schema)
    assert found.schema == schema
    assert _rows(found) == _rows(expected)


def test_an_empty_result_has_the_schema(cursor: psycopg.Cursor) -> None:
    found = copy_out(cursor, "SELECT i8, ts FROM typed WHERE false", pa.schema([("i8", pa.int64()),
                                                                                ("ts", pa.timestamp("us"))]))
    assert found.num_rows == 0 and found.schema.names == ["i8", "ts"]


def test_copy_in_stores_what_it_is_given(cursor: psycopg.Cursor) -> None:
    cursor.execute("SELECT i8, f8, t, tz FROM typed")
    rows = cursor.fetchall()
    table = pa.table({"i8": pa.array([r[0] for r in rows], pa.int64()), "f8": pa.array([r[1] for r in rows]),
                      "t": pa.array([r[2] for r in rows], pa.string()),
                      "tz": pa.array([r[3] for r in rows], pa.timestamp("ns", "UTC"))})
    cursor.execute("CREATE TEMPORARY TABLE copied (i8 int8, f8 float8, t text, tz timestamptz)")
    copy_in(cursor, "copied", table)
    cursor.execute("SELECT i8, f8, t, tz FROM copied")
    assert [tuple(_plain(v) for v in r) for r in cursor.fetchall()] == [tuple(_plain(v) for v in r) for r in rows]
