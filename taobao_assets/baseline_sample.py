"""The baseline CTR model's rows, drawn in bounded memory.

The model trains on the training sets of the days before D and is scored on D's. Concatenating every
earlier day whole grew with the data set (about 5 GB at 10 M samples, unbounded above); here each
side is a sample of a fixed size: an equal share from each day, every row of a day kept with the same
probability, read from the stored Parquet file one record batch at a time (the file itself is
downloaded to a temporary folder, one day at a time). The step's memory is then set by
``TRAIN_ROWS`` and ``TEST_ROWS``, whatever the number and size of the days: scoring a million rows of
a day gives its AUC to within about 0.001.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from taobao_assets.resources.s3 import S3Resource

if TYPE_CHECKING:
    import pandas as pd

#: Rows the model trains on, over all earlier days; rows of day D it is scored on.
TRAIN_ROWS = 1_000_000
TEST_ROWS = 1_000_000
#: Rows per record batch read: the sampling holds one batch beside what it keeps.
BATCH_ROWS = 65_536


def sample_file(path: Path, rows: int, rng: np.random.Generator) -> tuple[pa.Table, int]:
    """About ``rows`` rows of the Parquet file at ``path`` (all of them when it holds no more), each kept
    with the same probability; and how many rows the file holds."""
    file = pq.ParquetFile(path)
    held = file.metadata.num_rows
    keep = rows / held if held > rows else 1.0
    parts = [batch if keep == 1.0 else batch.filter(pa.array(rng.random(batch.num_rows) < keep))
             for batch in file.iter_batches(batch_size=BATCH_ROWS)]
    return (pa.Table.from_batches(parts) if parts else file.schema_arrow.empty_table()), held


def sample_days(s3: S3Resource, keys: Sequence[str], rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """About ``rows`` rows of the training sets at ``keys``, an equal share of each; and how many rows
    they hold in all. The same keys and seed give the same rows."""
    rng = np.random.default_rng(seed)
    share = math.ceil(rows / max(len(keys), 1))
    tables, held = [], 0
    with tempfile.TemporaryDirectory(prefix="tfp-baseline-") as folder:
        path = Path(folder) / "training_set.parquet"
        for key in keys:
            s3.download_file(key, path)
            table, day_rows = sample_file(path, share, rng)
            tables.append(table)
            held += day_rows
    return combine(tables).to_pandas(), held


def combine(days: Sequence[pa.Table]) -> pa.Table:
    """The days' samples as one table. Training sets written before their columns took the views'
    declared types stored a counter as int64 when none of its rows missed it and as double otherwise
    (pandas' types for a column with nulls), so the types are promoted to what every day's values fit in."""
    return pa.concat_tables(days, promote_options="permissive")
