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

from collections.abc import Sequence
from typing import Any

from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

#: The entity key serialization the project's ``feature_store.yaml`` names (Feast's newest).
ENTITY_KEY_VERSION = 3

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


def redis_key(project: str, join_keys: Sequence[str], values: Sequence[Any]) -> bytes:
    """The Redis key of the entity ``join_keys`` = ``values`` (INT64 or STRING keys) in ``project``."""
    entity = EntityKeyProto(join_keys=list(join_keys), entity_values=[_value(v) for v in values])
    return _redis_key(project, entity, entity_key_serialization_version=ENTITY_KEY_VERSION)
