"""Two engines' gold tables compared value by value: a speed figure only counts if the answers are equal.

Each table must have its contract's columns in order (:mod:`taobao_assets.gold_tables`) with the
contract's types, the same entity keys, each once, and in every row the same value in every column:
integers and timestamps exactly, NULL where the other side has NULL, floats within
:data:`REL_TOL`. Every difference found is collected, so one failure shows all that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from taobao_assets.feature_tables import FeatureTable
from taobao_assets.gold_tables import GOLD_TABLES

#: Relative tolerance of float columns. Both engines evaluate the same IEEE operations in the same
#: order, so a real difference (a count off by one moves a rate by 1e-4 or more) is far above it.
REL_TOL = 1e-12
#: Examples of differing rows given per column in the error.
EXAMPLES = 3
ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "timestamp": pa.timestamp("us", tz="UTC")}


class GoldMismatch(AssertionError):
    """The two sides computed different gold tables; the message lists every difference found."""


@dataclass(frozen=True)
class Agreement:
    """What was compared in one table, and the largest float difference seen."""

    table: str
    rows: int
    columns: int
    max_abs_difference: float

    @property
    def values(self) -> int:
        return self.rows * self.columns


def _schema_problems(table: FeatureTable, side: str, data: pa.Table) -> list[str]:
    expected = [(c.name, ARROW_TYPES[c.dtype]) for c in table.columns]
    found = [(f.name, f.type) for f in data.schema]
    if found == expected:
        return []
    return [f"{table.name}: {side} has columns {found}, the contract says {expected}"]


def _key_problems(table: FeatureTable, names: tuple[str, str], left: pa.Table, right: pa.Table) -> list[str]:
    """Duplicate keys on either side, and keys only one side has."""
    keys = table.key_names
    problems = []
    for side, data in ((names[0], left), (names[1], right)):
        counted = data.group_by(keys).aggregate([([], "count_all")])
        duplicates = counted.filter(pc.greater(counted["count_all"], 1))
        if duplicates.num_rows:
            problems.append(f"{table.name}: {side} has {duplicates.num_rows} keys more than once, e.g. "
                            f"{duplicates.select(keys).slice(0, EXAMPLES).to_pylist()}")
    for side, data, other in ((names[0], left, right), (names[1], right, left)):
        only = data.select(keys).join(other.select(keys), keys, join_type="left anti")
        if only.num_rows:
            problems.append(f"{table.name}: {only.num_rows} keys only in {side}, e.g. "
                            f"{only.slice(0, EXAMPLES).to_pylist()}")
    return problems


def _column_difference(dtype: str, a: pa.Array, b: pa.Array) -> tuple[pa.Array, float]:
    """Rows where two aligned columns differ (a boolean mask), and the largest float difference."""
    null_a, null_b = pc.is_null(a), pc.is_null(b)
    if dtype != "float64":
        return pc.or_(pc.not_equal(null_a, null_b), pc.fill_null(pc.not_equal(a, b), False)), 0.0
    x, y = (pc.fill_null(c, 0.0).to_numpy() for c in (a, b))
    gap = np.abs(x - y)
    close = (gap <= REL_TOL * np.maximum(np.abs(x), np.abs(y))) | (np.isnan(x) & np.isnan(y))
    largest = float(np.nanmax(gap, initial=0.0))
    return pc.or_(pc.not_equal(null_a, null_b), pa.array(~close)), largest


def compare_table(table: FeatureTable, names: tuple[str, str], left: pa.Table, right: pa.Table
                  ) -> tuple[Agreement, list[str]]:
    """One table of both sides: what was compared, and every difference found."""
    problems = [*_schema_problems(table, names[0], left), *_schema_problems(table, names[1], right)]
    problems += _key_problems(table, names, left, right)
    if left.num_rows != right.num_rows:
        problems.append(f"{table.name}: {names[0]} has {left.num_rows} rows, {names[1]} {right.num_rows}")
    if problems:
        return Agreement(table.name, 0, 0, 0.0), problems
    order = [(k, "ascending") for k in table.key_names]
    left, right = left.sort_by(order).combine_chunks(), right.sort_by(order).combine_chunks()
    largest = 0.0
    for column in table.columns:
        a, b = (data[column.name].combine_chunks() for data in (left, right))
        differs, gap = _column_difference(column.dtype, a, b)
        largest = max(largest, gap)
        count = pc.sum(differs).as_py() or 0
        if count:
            rows = left.filter(differs).slice(0, EXAMPLES).to_pylist()
            others = b.filter(differs).slice(0, EXAMPLES).to_pylist()
            examples = [{**{k: row[k] for k in table.key_names}, names[0]: row[column.name], names[1]: other}
                        for row, other in zip(rows, others, strict=True)]
            problems.append(f"{table.name}.{column.name}: {count} of {left.num_rows} rows differ, e.g. {examples}")
    return Agreement(table.name, left.num_rows, len(table.columns), largest), problems


def compare(names: tuple[str, str], left: dict[str, pa.Table], right: dict[str, pa.Table]) -> list[Agreement]:
    """Every gold table of both sides; raises :class:`GoldMismatch` listing every difference."""
    agreements, problems = [], []
    for table in GOLD_TABLES:
        missing = [side for side, tables in zip(names, (left, right), strict=True) if table.name not in tables]
        if missing:
            problems.append(f"{table.name}: not computed by {' and '.join(missing)}")
            continue
        agreement, found = compare_table(table, names, left[table.name], right[table.name])
        agreements.append(agreement)
        problems += found
    if problems:
        raise GoldMismatch(f"{names[0]} and {names[1]} computed different gold tables:\n  " + "\n  ".join(problems))
    return agreements
