"""The baseline model's sample: a fixed size whatever the file's, every row equally likely, repeatable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from taobao_assets.baseline_sample import BATCH_ROWS, combine, sample_file

ROWS = 20 * BATCH_ROWS + 123  # a short last batch


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "day.parquet"
    pq.write_table(pa.table({"row": np.arange(ROWS), "click": np.arange(ROWS) % 7 == 0}), path, row_group_size=50_000)
    return path


def test_a_sample_has_the_asked_size_is_spread_evenly_and_repeats_with_its_seed(tmp_path: Path) -> None:
    path = _file(tmp_path)
    asked = 100_000
    table, held = sample_file(path, asked, np.random.default_rng(3))
    rows = table.column("row").to_numpy()
    assert held == ROWS
    # Binomial(ROWS, asked / ROWS): a standard deviation of about 290 rows.
    assert abs(len(rows) - asked) < 5 * np.sqrt(asked)
    assert len(np.unique(rows)) == len(rows) and rows.min() >= 0 and rows.max() < ROWS
    # Every tenth of the file gives its tenth of the sample (each within five standard deviations).
    per_tenth = np.bincount(rows * 10 // ROWS, minlength=10)
    assert np.all(np.abs(per_tenth - len(rows) / 10) < 5 * np.sqrt(len(rows) / 10)), per_tenth
    again, _ = sample_file(path, asked, np.random.default_rng(3))
    assert again.equals(table)


def test_a_file_smaller_than_the_sample_is_read_whole(tmp_path: Path) -> None:
    path = _file(tmp_path)
    table, held = sample_file(path, ROWS, np.random.default_rng(3))
    assert held == ROWS
    assert table.column("row").to_pylist() == list(range(ROWS))


def test_days_whose_counters_are_stored_as_int64_and_as_double_combine_as_double(tmp_path: Path) -> None:
    """A day where every row has the counter (int64) and one where some miss it (double, with nulls)."""
    paths = [tmp_path / "whole.parquet", tmp_path / "gaps.parquet"]
    pq.write_table(pa.table({"row": [0, 1], "clicks_1d": pa.array([3, 4], pa.int64())}), paths[0])
    pq.write_table(pa.table({"row": [2, 3], "clicks_1d": pa.array([5.0, None], pa.float64())}), paths[1])
    days = [sample_file(path, 10, np.random.default_rng(1))[0] for path in paths]
    combined = combine(days)
    assert combined.schema.field("clicks_1d").type == pa.float64()
    assert combined.column("clicks_1d").to_pylist() == [3.0, 4.0, 5.0, None]
    assert combined.column("row").to_pylist() == [0, 1, 2, 3]
