"""Feast's Redis online-store layout, written down once for the project's reader and writer.

Feast's Redis store keeps one hash per entity key and project: the key is the entity key serialized
as Feast does (version :data:`ENTITY_KEY_VERSION`) followed by the project's name; each feature is
the field ``murmur3("<view>:<feature>")`` holding a serialized ``ValueProto`` (empty for a null),
and ``_ts:<view>`` holds the row's event time as a serialized ``google.protobuf.Timestamp``. The
lean reader (:mod:`taobao_assets.online_read`) and the materialization engine
(:mod:`taobao_assets.online_materialization`) both address that layout through these names, so
they cannot drift apart; the tests compare both with Feast's own reads and writes.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

#: The entity key serialization the project's ``feature_store.yaml`` names (Feast's newest).
ENTITY_KEY_VERSION = 3

_HEADER = struct.Struct("<I")
#: A key name's or value's type and length.
_TYPED = struct.Struct("<II")
_INT64 = struct.Struct("<IIq")

#: The first byte of a serialized ``ValueProto`` per scalar type: the field's number and wire type
#: (``Value.proto``: string 2, int32 3, int64 4, double 5, float 6, bool 7).
STRING_TAG, INT32_TAG, INT64_TAG, DOUBLE_TAG, FLOAT_TAG, BOOL_TAG = 0x12, 0x18, 0x20, 0x29, 0x35, 0x38


def feature_field(view: str, feature: str) -> bytes:
    """The hash field of ``feature`` of ``view``."""
    return _mmh3(f"{view}:{feature}")


def timestamp_field(view: str) -> bytes:
    """The hash field holding the event time of ``view``'s row."""
    return f"_ts:{view}".encode()


def _value(value: Any) -> ValueProto:
    """An entity key value as Feast encodes it (the generated entities are INT64 or STRING)."""
    return ValueProto(string_val=value) if isinstance(value, str) else ValueProto(int64_val=int(value))


def feast_redis_key(project: str, join_keys: Sequence[str], values: Sequence[Any]) -> bytes:
    """:func:`redis_key` through Feast's own serialization: the reference it is tested against."""
    entity = EntityKeyProto(join_keys=list(join_keys), entity_values=[_value(v) for v in values])
    return _redis_key(project, entity, entity_key_serialization_version=ENTITY_KEY_VERSION)


@functools.lru_cache(maxsize=256)
def _key_layout(project: str, join_keys: tuple[str, ...]) -> tuple[bytes, tuple[int, ...], bytes]:
    """What the keys of ``join_keys`` share: the count and names (sorted), the values' order, the project."""
    order = tuple(sorted(range(len(join_keys)), key=join_keys.__getitem__))
    header = [_HEADER.pack(len(join_keys))]
    for i in order:
        name = join_keys[i].encode()
        header.append(_TYPED.pack(ValueType.STRING.value, len(name)) + name)
    return b"".join(header), order, project.encode()


def key_pattern(project: str, join_keys: Sequence[str]) -> bytes:
    """A ``SCAN`` glob of every key of ``join_keys`` in ``project`` (Feast's own delete uses the same):
    the keys' shared header, any values, the project; glob characters in the header's packed lengths
    and in the project are escaped."""
    header, _, suffix = _key_layout(project, tuple(join_keys))
    return glob_escaped(header) + b"*" + glob_escaped(suffix)


def glob_escaped(text: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in text)


def redis_key(project: str, join_keys: Sequence[str], values: Sequence[Any]) -> bytes:
    """The Redis key of the entity ``join_keys`` = ``values`` (INT64 or STRING keys) in ``project``.

    Feast's serialization (version 3): the number of keys, each key's name (sorted by name), each
    value (type, length, bytes) in the same order, then the project. Built here from the parts
    that do not change (cached per project and keys) and packed values: a lookup makes one key per
    view, and Feast's way (protobuf objects per value) was a tenth of the lean reader's time.
    """
    header, order, suffix = _key_layout(project, tuple(join_keys))
    parts = [header]
    for i in order:
        value = values[i]
        if isinstance(value, str):
            encoded = value.encode()
            parts.append(_TYPED.pack(ValueType.STRING.value, len(encoded)) + encoded)
        else:
            parts.append(_INT64.pack(ValueType.INT64.value, 8, int(value)))
    parts.append(suffix)
    return b"".join(parts)
