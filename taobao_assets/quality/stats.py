"""Statistics of a gold day, taken as it is written: per column, stored in Postgres and shown in Dagster.

For every column of a gold table and every day: rows, nulls and null rate, and for numbers min,
mean, median (p50), p99 and max; for entity keys the distinct count as well. Postgres computes
them in one query over the staging table the day's rows were copied into, inside the transaction
that moves those rows into the table and writes the statistics to ``quality.feature_stats`` (so
the stored statistics always describe the stored day, and no Python process holds the day). They
are also returned as numeric asset metadata (``stats/<column>/<statistic>``), which the asset's
*Plots* tab draws over the days.

Percentiles are exact and interpolate linearly between the closest ranks (``percentile_cont``).
Postgres sorts each numeric column within ``work_mem`` and spills beyond it, so memory stays
bounded; Spark's exact ``percentile``, which this replaced, took 11-13 s for a day of
``item_features`` at 10 M samples (367 k rows) where this query takes about 1 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import execute_values

from taobao_assets.feature_tables import Column, FeatureTable

SCHEMA = "quality"
STATS_TABLE = f"{SCHEMA}.feature_stats"
NUMERIC = ("int64", "float64")

CREATE_STATS_TABLE = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {STATS_TABLE} (
  table_name TEXT NOT NULL,
  day DATE NOT NULL,
  column_name TEXT NOT NULL,
  rows BIGINT NOT NULL,
  nulls BIGINT NOT NULL,
  null_rate DOUBLE PRECISION NOT NULL,
  min DOUBLE PRECISION,
  mean DOUBLE PRECISION,
  p50 DOUBLE PRECISION,
  p99 DOUBLE PRECISION,
  max DOUBLE PRECISION,
  distinct_count BIGINT,
  PRIMARY KEY (table_name, day, column_name)
);
COMMENT ON TABLE {STATS_TABLE} IS 'Per gold table, day and column: the statistics taken when the day was written.';
"""


@dataclass(frozen=True)
class ColumnStats:
    """One column of one day (``None`` where a statistic does not apply or no value is there)."""

    column: str
    rows: int
    nulls: int
    min: float | None = None
    mean: float | None = None
    p50: float | None = None
    p99: float | None = None
    max: float | None = None
    distinct_count: int | None = None

    @property
    def null_rate(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0


def _aggregates(column: Column, is_key: bool) -> list[str]:
    """The SQL aggregates of one column's statistics, in :func:`_column_stats`' order."""
    name = column.name
    if column.dtype not in NUMERIC:
        return [f"count({name})"]
    number = f"{name}::float8"
    return [f"count({name})", f"min({number})", f"avg({number})",
            f"percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY {number})", f"max({number})",
            f"count(DISTINCT {name})" if is_key else "NULL"]


def _column_stats(column: Column, rows: int, values: list[Any]) -> ColumnStats:
    present = values[0]
    if len(values) == 1:
        return ColumnStats(column.name, rows, rows - present)
    low, mean, percentiles, high, distinct = values[1:]
    p50, p99 = percentiles or (None, None)
    return ColumnStats(column.name, rows, rows - present, low, mean, p50, p99, high, distinct)


def table_stats(cur: Cursor, source: str, contract: FeatureTable) -> list[ColumnStats]:
    """Every key and feature of ``contract`` over the rows of the table ``source``, in one query.

    The timestamp is left out: it is the day itself.
    """
    keys = set(contract.key_names)
    columns = [*contract.keys, *contract.features]
    per_column = [_aggregates(c, c.name in keys) for c in columns]
    cur.execute(f"SELECT count(*), {', '.join(a for aggregates in per_column for a in aggregates)} FROM {source}")
    row = cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY has one row, also on no rows
    rows, values = row[0], iter(row[1:])
    return [_column_stats(c, rows, [next(values) for _ in aggregates])
            for c, aggregates in zip(columns, per_column, strict=True)]


def store_stats(cur: Cursor, contract: FeatureTable, day: date, stats: Sequence[ColumnStats]) -> None:
    """Replace the day's statistics of the table, in the cursor's transaction."""
    cur.execute(CREATE_STATS_TABLE)
    cur.execute(f"DELETE FROM {STATS_TABLE} WHERE table_name = %s AND day = %s", (contract.qualified_name, day))
    execute_values(cur, f"INSERT INTO {STATS_TABLE} (table_name, day, column_name, rows, nulls, null_rate, min, "
                        f"mean, p50, p99, max, distinct_count) VALUES %s",
                   [(contract.qualified_name, day, s.column, s.rows, s.nulls, s.null_rate, s.min, s.mean, s.p50,
                     s.p99, s.max, s.distinct_count) for s in stats])


def stats_metadata(stats: Sequence[ColumnStats]) -> dict[str, Any]:
    """``stats/<column>/<statistic>``: one numeric entry per statistic that applies."""
    metadata: dict[str, Any] = {}
    for s in stats:
        fields = {**asdict(s), "null_rate": s.null_rate}
        for name in ("null_rate", "min", "mean", "p50", "p99", "max", "distinct_count"):
            if fields[name] is not None:
                metadata[f"stats/{s.column}/{name}"] = fields[name]
    return metadata
