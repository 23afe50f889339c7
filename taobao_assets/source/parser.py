"""The raw Ali-CCP parser: typed records or quarantine, one line at a time or many at once.

The byte work is done by the compiled core (``parser_core/``, Rust with PyO3): a scanner over
the three separators that checks and converts a line in one pass. This module is its API:

- :func:`parse_line` (a line from Kafka) and :func:`parse_file` (a raw file, one line in memory
  at a time) give one typed record per line;
- :func:`parse_batch` parses many records at once into an Arrow record batch (no Python object
  per record), for silver's Spark parse and the streaming run.

A line is given *with* its terminator exactly as read (``\\n``, ``\\r\\n``, or nothing for a final
line that lacks one): the terminator is how a truncated last line is told from a complete one,
and keeping it makes the quarantined bytes byte-exact. Every line yields exactly one record: a
:class:`SampleRecord`, a :class:`CommonFeaturesRecord`, or a :class:`QuarantineRecord` holding
the original bytes, file, 1-based line number, a stable :class:`~taobao_assets.source.format.Reason`
and a message naming the column or field. Nothing is dropped and nothing raises on bad data.
What each check means is in docs/architecture.md ("The source data contract"); the core is held
to a line-by-line Python reference by the differential and fuzz tests
(``taobao_assets_tests/test_source/test_parser_core.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
from taobao_parser_core import Parser

from taobao_assets.source.format import (
    COLUMN_SEP,
    COLUMNS,
    ENTRY_SEP,
    FIELD_SEP,
    FIELDS,
    KEY_CHARS,
    MAX_ID,
    VALUE_CHARS,
    VALUE_SEP,
    FileKind,
    Reason,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

#: ``(feature_id, value)``: one entry of a field.
Entry = tuple[int, float]
#: ``(field_id, feature_id, value)``: an entry of a single-valued field after its first one.
Repeat = tuple[str, int, float]


@dataclass(slots=True)
class SampleRecord:
    """One impression of sample_skeleton; ``features`` maps a field id to ``(feature_id, value)``."""

    source: str
    line_number: int
    sample_id: int
    click: int
    conversion: int
    common_feature_index: str
    num_features: int
    features: dict[str, Entry]
    repeats: list[Repeat] = field(default_factory=list)

    def feature_id(self, field_id: str) -> int | None:
        entry = self.features.get(field_id)
        return None if entry is None else entry[0]


@dataclass(slots=True)
class CommonFeaturesRecord:
    """One user context of common_features: user id and profile in ``features``, 14-day lists in
    ``histories`` (every history field is present, empty when the line has none)."""

    source: str
    line_number: int
    common_feature_index: str
    num_features: int
    features: dict[str, Entry]
    histories: dict[str, list[Entry]]
    repeats: list[Repeat] = field(default_factory=list)

    def feature_id(self, field_id: str) -> int | None:
        entry = self.features.get(field_id)
        return None if entry is None else entry[0]


@dataclass(slots=True)
class QuarantineRecord:
    """A rejected line, kept byte-exact (terminator included) with why and where."""

    source: str
    line_number: int
    kind: FileKind
    raw: bytes
    reason: Reason
    message: str


Record = SampleRecord | CommonFeaturesRecord | QuarantineRecord

#: The core's index of each file kind.
_KIND = {FileKind.SAMPLE_SKELETON: 0, FileKind.COMMON_FEATURES: 1}


@cache
def core() -> Parser:
    """The compiled parser, made from the format contract (once per process, on first use)."""
    kinds = list(_KIND)
    fields = [(spec.field_id, spec.name, _KIND[spec.kind], spec.multi_valued) for spec in FIELDS.values()]
    parser = Parser(COLUMN_SEP, ENTRY_SEP, FIELD_SEP, VALUE_SEP, [k.value for k in kinds],
                    [list(COLUMNS[k]) for k in kinds], fields, KEY_CHARS, VALUE_CHARS, MAX_ID)
    if set(parser.reasons()) != {reason.value for reason in Reason}:
        raise RuntimeError(f"the compiled parser's reasons {parser.reasons()} differ from the format's "
                           f"{[r.value for r in Reason]}: rebuild it with `make install`")
    return parser


def parse_line(raw: bytes, kind: FileKind, source: str = "", line_number: int = 0) -> Record:
    """Parse one raw line (terminator included, as read) of a ``kind`` file.

    ``source`` and ``line_number`` say where the line came from (file name and 1-based line for
    files; for Kafka, the file and line the replay recorded) and are copied to the record.
    """
    parsed = core().parse_line(_KIND[kind], raw)
    if parsed[0] == "sample":
        return SampleRecord(source, line_number, *parsed[1:])
    if parsed[0] == "common":
        return CommonFeaturesRecord(source, line_number, *parsed[1:])
    return QuarantineRecord(source, line_number, kind, raw, Reason(parsed[1]), parsed[2])


def parse_lines(
    lines: Iterable[bytes], kind: FileKind, source: str = "", first_line_number: int = 1
) -> Iterator[Record]:
    """Parse consecutive raw lines; line numbers count from ``first_line_number``."""
    for line_number, raw in enumerate(lines, first_line_number):
        yield parse_line(raw, kind, source, line_number)


def parse_file(path: str | Path, kind: FileKind | None = None, source: str | None = None) -> Iterator[Record]:
    """Stream the records of a raw file, one line in memory at a time.

    ``kind`` defaults to the one its name says (``sample_skeleton_*`` / ``common_features_*``);
    ``source`` (copied to every record) defaults to the file name.
    """
    path = Path(path)
    kind = kind or FileKind.from_file_name(path.name)
    with path.open("rb", buffering=1 << 20) as lines:
        yield from parse_lines(lines, kind, path.name if source is None else source)


# --- many records at once ----------------------------------------------------------------------

#: A history field's entries: ``(id, count)`` structs (history values are counts).
HISTORY_TYPE = pa.list_(pa.field("element", pa.struct([("id", pa.int64()), ("count", pa.float64())])))
What = Literal["sample_id", "click", "conversion", "common_feature_index", "id", "value", "history"]
_TYPES: dict[str, pa.DataType] = {
    "sample_id": pa.int64(), "click": pa.int32(), "conversion": pa.int32(),
    "common_feature_index": pa.string(), "id": pa.int64(), "value": pa.float64(), "history": HISTORY_TYPE,
}
#: The columns every batch ends with: null on a good record, set on a rejected one.
REJECTION = (pa.field("reason", pa.string()), pa.field("message", pa.string()), pa.field("raw", pa.binary()))


@dataclass(frozen=True)
class BatchColumn:
    """One record column of :func:`parse_batch`: ``what`` of the record it holds.

    ``id`` / ``value``: the feature id / value of the first entry of ``field_id`` (null if the
    line has none); ``history``: every ``(id, count)`` entry of ``field_id``; the others are the
    line's leading columns.
    """

    name: str
    what: What
    field_id: str = ""

    @property
    def arrow(self) -> pa.Field:
        return pa.field(self.name, _TYPES[self.what])


def batch_schema(layout: Sequence[BatchColumn]) -> pa.Schema:
    return pa.schema([*(column.arrow for column in layout), *REJECTION])


def record_ends(lengths: np.ndarray) -> np.ndarray:
    """The end offset of each record of records stored back to back with these lengths."""
    return np.cumsum(lengths, dtype=np.int64)


def parse_batch(kind: FileKind, layout: Sequence[BatchColumn], data: Buffer, ends: np.ndarray | None = None
                ) -> pa.RecordBatch:
    """Parse records stored back to back in ``data`` (bytes, or any contiguous buffer that is not
    resized meanwhile, such as a memoryview of an mmap): record ``i`` ends at ``ends[i]``, or without
    ``ends`` the records are the lines of ``data`` (newline included; bytes after the last newline
    are a final line without one).

    One row per record, in order: the ``layout`` columns (null on a rejected record), then
    ``reason``, ``message`` and ``raw`` (null on a good record; ``raw`` is the record's bytes).
    """
    cut = None if ends is None else np.ascontiguousarray(ends, dtype=np.int64).tobytes()
    rows, buffers = core().parse_batch(_KIND[kind], [(c.what, c.field_id) for c in layout], data, cut)
    schema = batch_schema(layout)
    arrays = [core_array(f.type, rows, validity, values) for f, (validity, values) in zip(schema, buffers, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def core_array(kind: pa.DataType, rows: int, validity: Buffer | None, values: Sequence[Buffer]) -> pa.Array:
    """An Arrow array over the core's buffers, wrapped where they lie (no copy)."""
    mask = None if validity is None else pa.py_buffer(validity)
    if kind == HISTORY_TYPE:
        offsets, ids, counts = (pa.py_buffer(b) for b in values)
        entries = ids.size // 8
        element = pa.StructArray.from_arrays(
            [pa.Array.from_buffers(pa.int64(), entries, [None, ids]),
             pa.Array.from_buffers(pa.float64(), entries, [None, counts])],
            fields=list(kind.value_type),
        )
        return pa.Array.from_buffers(kind, rows, [mask, offsets], children=[element])
    return pa.Array.from_buffers(kind, rows, [mask, *(pa.py_buffer(b) for b in values)])
