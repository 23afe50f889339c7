"""Reading a stored bronze part back: its records, cut at the index's lengths, in bounded batches.

A part is two gzip objects: ``data`` (the records back to back, each exactly as received, its
terminator included) and ``index`` (a CSV row per record: Kafka offset, timestamp, the source file
and line the replay recorded, and the record's length). The data is cut by the lengths, never by
splitting on newlines: a final line may lack one, and the terminator is part of the record. The
index is read by Arrow's CSV reader and the data in one read per batch, so no Python object is
made per record; a batch holds at most ``max_records`` records and, unless one record is larger,
``max_bytes`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedIOBase

import numpy as np
import pyarrow as pa
from pyarrow import csv

#: The index columns a part's records are cut and located by, in the order bronze writes them.
INDEX_COLUMNS = ("offset", "timestamp_ms", "source", "line", "length")
_INDEX_TYPES = {"offset": pa.int64(), "timestamp_ms": pa.int64(), "source": pa.string(),
                "line": pa.int64(), "length": pa.int64()}


@dataclass(frozen=True)
class PartBatch:
    """Consecutive records of a part: their bytes, the end offset of each in ``data``, their index rows."""

    data: bytes
    ends: np.ndarray
    index: pa.RecordBatch


def _index_batches(index: BufferedIOBase, where: str) -> Iterator[pa.RecordBatch]:
    reader = csv.open_csv(
        index,
        read_options=csv.ReadOptions(block_size=1 << 20),
        parse_options=csv.ParseOptions(quote_char=False),
        convert_options=csv.ConvertOptions(column_types=_INDEX_TYPES, strings_can_be_null=False),
    )
    missing = [c for c in INDEX_COLUMNS if c not in reader.schema.names]
    if missing:
        raise ValueError(f"{where}: the index lacks columns {missing} (its header is {reader.schema.names})")
    for batch in reader:
        yield batch.select(list(INDEX_COLUMNS))


def part_batches(data: BufferedIOBase, index: BufferedIOBase, where: str, max_records: int, max_bytes: int
                 ) -> Iterator[PartBatch]:
    """The records of a part in batches. ``where`` names the part in errors: data shorter or
    longer than its index says is an error, as a misaligned cut would shift every later record."""
    for rows in _index_batches(index, where):
        ends = np.cumsum(rows.column("length").to_numpy(), dtype=np.int64)
        start = 0
        while start < len(ends):
            base = int(ends[start - 1]) if start else 0
            stop = int(np.searchsorted(ends, base + max_bytes, side="right"))
            stop = min(max(stop, start + 1), start + max_records, len(ends))
            size = int(ends[stop - 1]) - base
            chunk = data.read(size)
            if len(chunk) < size:
                short = start + int(np.searchsorted(ends[start:stop] - base, len(chunk), side="right"))
                row = rows.slice(short, 1).to_pylist()[0]
                raise ValueError(f"{where}: data ends inside the record at offset {row['offset']} "
                                 f"({row['source']} line {row['line']}, {row['length']} bytes)")
            yield PartBatch(chunk, ends[start:stop] - base, rows.slice(start, stop - start))
            start = stop
    if data.read(1):
        raise ValueError(f"{where}: data continues after the last record of the index")
