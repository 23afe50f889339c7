"""Feast's Redis writes built a column at a time: ``ValueProto`` bytes, entity keys and RESP commands.

Feast's Redis store makes one ``ValueProto``, one ``EntityKeyProto``, one murmur hash per feature
and one redis-py command per row; at a few microseconds per cell that, not Redis, bounds
materialization. Here each part of a write is a column of byte strings (:class:`Cells`: a padded
``uint8`` matrix and the length of each row's string), built by numpy over the whole column, and
the wire bytes of a batch of commands are one boolean-mask gather of the columns laid side by
side. The bytes are those Feast writes (``online_layout`` names the layout; the tests compare
with Feast's own serialization).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.value_type import ValueType

from taobao_assets.online_layout import BOOL_TAG, DOUBLE_TAG, FLOAT_TAG, INT32_TAG, INT64_TAG, STRING_TAG

#: Value types of features this module encodes; the engine leaves views with others to Feast.
FEATURE_TYPES = frozenset({ValueType.INT64, ValueType.INT32, ValueType.DOUBLE, ValueType.FLOAT,
                           ValueType.STRING, ValueType.BOOL})
#: Value types of entity keys this module encodes.
KEY_TYPES = frozenset({ValueType.INT64, ValueType.INT32, ValueType.STRING})
CRLF = b"\r\n"


@dataclass(frozen=True)
class Cells:
    """One byte string per row: ``data[i, :lengths[i]]`` is row ``i``'s."""

    data: np.ndarray
    lengths: np.ndarray

    @classmethod
    def fixed(cls, data: np.ndarray, valid: np.ndarray | None = None) -> Cells:
        """Every row's string is its whole row of ``data``; rows not ``valid`` are empty."""
        width = np.full(len(data), data.shape[1], np.int64)
        return cls(data, width if valid is None else np.where(valid, width, 0))

    @classmethod
    def packed(cls, flat: np.ndarray, lengths: np.ndarray) -> Cells:
        """The rows' strings laid end to end in ``flat`` (``uint8``), of ``lengths``."""
        data = np.zeros((len(lengths), int(lengths.max(initial=0))), np.uint8)
        if flat.size:
            rows = np.repeat(np.arange(len(lengths)), lengths)
            starts = np.cumsum(lengths) - lengths
            data[rows, np.arange(flat.size) - np.repeat(starts, lengths)] = flat
        return cls(data, lengths.astype(np.int64))

    @classmethod
    def of(cls, values: Sequence[bytes], index: np.ndarray) -> Cells:
        """Row ``i`` holds ``values[index[i]]``: few distinct strings over many rows."""
        lengths = np.array([len(v) for v in values], np.int64)
        table = cls.packed(np.frombuffer(b"".join(values), np.uint8), lengths)
        return cls(table.data[index], table.lengths[index])

    def emptied(self, rows: np.ndarray) -> Cells:
        """These cells with the strings of ``rows`` (a mask) emptied."""
        return Cells(self.data, np.where(rows, 0, self.lengths))

    def tolist(self) -> list[bytes]:
        return [bytes(row[:n]) for row, n in zip(self.data, self.lengths.tolist(), strict=True)]


Part = Cells | bytes


def _gathered(parts: Sequence[Part], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's strings of ``parts`` concatenated (a constant is the same for every row), end to
    end: the bytes and each row's length."""
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += part
        else:
            merged.append(part)
    cells = [Cells.fixed(np.broadcast_to(np.frombuffer(p, np.uint8), (rows, len(p)))) if isinstance(p, bytes)
             else p for p in merged]
    data = np.concatenate([c.data for c in cells], axis=1)
    mask = np.concatenate([np.ones(c.data.shape, bool) if isinstance(p, bytes) else
                           np.arange(c.data.shape[1]) < c.lengths[:, None] for p, c in zip(merged, cells, strict=True)],
                          axis=1)
    return data[mask], sum((c.lengths for c in cells), np.zeros(rows, np.int64))


def concat(parts: Sequence[Part], rows: int) -> Cells:
    """Each row's strings of ``parts`` concatenated."""
    return Cells.packed(*_gathered(parts, rows))


def wire(parts: Sequence[Part], rows: int) -> bytes:
    """All rows' strings of ``parts``, row after row: a batch of commands as sent."""
    return _gathered(parts, rows)[0].tobytes()


def varint(values: np.ndarray) -> Cells:
    """Protobuf base-128 varints of integers (negative ones as 64-bit two's complement: 10 bytes)."""
    unsigned = values.astype(np.int64).view(np.uint64)
    groups = np.stack([(unsigned >> np.uint64(7 * i)) & np.uint64(0x7F) for i in range(10)], axis=1)
    # Byte i has a successor (its high bit set) while bits remain above it; the tenth never has one.
    follows = np.stack([unsigned >> np.uint64(7 * (i + 1)) != 0 for i in range(9)]
                       + [np.zeros(len(unsigned), bool)], axis=1)
    return Cells((groups | (follows.astype(np.uint64) << np.uint64(7))).astype(np.uint8), 1 + follows.sum(axis=1))


def decimal(values: np.ndarray) -> Cells:
    """Non-negative integers as ASCII decimal digits."""
    digits = 1 + sum((values >= 10**k).astype(np.int64) for k in range(1, 19))
    width = int(digits.max(initial=1))
    place = digits[:, None] - 1 - np.arange(width)
    data = 48 + (values[:, None] // 10 ** np.maximum(place, 0)) % 10
    return Cells(data.astype(np.uint8), digits)


def bulk(value: Part, rows: int) -> list[Part]:
    """``value`` as a RESP bulk string (``$<length>\\r\\n<bytes>\\r\\n``)."""
    if isinstance(value, bytes):
        return [b"$%d\r\n" % len(value) + value + CRLF]
    lengths = value.lengths
    if rows and lengths.min() == lengths.max():
        return [b"$%d\r\n" % lengths[0], value, CRLF]
    return [b"$", decimal(lengths), CRLF, value, CRLF]


def single(*arguments: bytes) -> bytes:
    """One RESP command (the first argument names it)."""
    return b"*%d\r\n" % len(arguments) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in arguments)


def command(rows: int, *arguments: Part) -> list[Part]:
    """One RESP command per row (the first argument names it)."""
    parts: list[Part] = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        parts += bulk(argument, rows)
    return parts


def _utf8(column: pa.Array) -> Cells:
    """The UTF-8 bytes of a string column (a null as empty)."""
    binary = pc.fill_null(column, "").cast(pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], np.int64)[binary.offset:binary.offset + len(binary) + 1]
    data = binary.buffers()[2]
    flat = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]] if data is not None else np.empty(0, np.uint8)
    return Cells.packed(flat, np.diff(offsets))


def _tagged(tag: int, payload: np.ndarray) -> np.ndarray:
    return np.concatenate([np.full((len(payload), 1), tag, np.uint8), payload], axis=1)


def _bytes(values: np.ndarray, dtype: str) -> np.ndarray:
    """Each value's little-endian bytes, a row per value."""
    return np.ascontiguousarray(values.astype(dtype)).view(np.uint8).reshape(len(values), -1)


def proto_values(column: pa.Array, value_type: ValueType) -> Cells:
    """Each cell as ``ValueProto(<type>_val=cell).SerializeToString()``; a null (or NaN) as Feast
    writes it, an empty ``ValueProto``."""
    rows = len(column)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        values = pc.fill_null(column, np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        valid &= ~np.isnan(values)
        tag, dtype = (DOUBLE_TAG, "<f8") if value_type == ValueType.DOUBLE else (FLOAT_TAG, "<f4")
        with np.errstate(over="ignore"):  # a double beyond float32 becomes inf, as protobuf's own cast makes it
            return Cells.fixed(_tagged(tag, _bytes(values, dtype)), valid)
    if value_type == ValueType.STRING:
        text = _utf8(column)
        return concat([bytes([STRING_TAG]), varint(text.lengths), text], rows).emptied(~valid)
    values = pc.fill_null(column, pa.scalar(0).cast(column.type)).to_numpy(zero_copy_only=False)
    if value_type == ValueType.BOOL:
        return Cells.fixed(_tagged(BOOL_TAG, values.astype(np.uint8)[:, None]), valid)
    tag = INT64_TAG if value_type == ValueType.INT64 else INT32_TAG
    return concat([bytes([tag]), varint(values)], rows).emptied(~valid)


def _key_value(column: pa.Array, value_type: ValueType) -> list[Part]:
    """An entity key value as ``serialize_entity_key`` writes it: type, length, bytes."""
    if value_type == ValueType.STRING:
        text = _utf8(column)
        return [struct.pack("<I", ValueType.STRING.value), Cells.fixed(_bytes(text.lengths, "<u4")), text]
    dtype = "<i8" if value_type == ValueType.INT64 else "<i4"
    return [struct.pack("<II", value_type.value, np.dtype(dtype).itemsize),
            Cells.fixed(_bytes(column.to_numpy(zero_copy_only=False), dtype))]


def entity_keys(project: str, columns: Mapping[str, pa.Array], value_types: Mapping[str, ValueType]) -> Cells:
    """The Redis key of each row's entity (``columns``: join key -> values) in ``project``: Feast's
    entity key serialization v3 (join keys sorted by name) followed by the project's name."""
    names = sorted(columns)
    rows = len(columns[names[0]])
    for name in names:
        if columns[name].null_count:
            raise ValueError(f"join key {name} is null in {columns[name].null_count} rows: Feast cannot key them")
    parts: list[Part] = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode()
        parts.append(struct.pack("<II", ValueType.STRING.value, len(encoded)) + encoded)
    for name in names:
        parts += _key_value(columns[name], value_types[name])
    parts.append(project.encode())
    return concat(parts, rows)
