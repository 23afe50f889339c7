"""A lean reader of Feast's Redis online store: what ``get_online_features`` returns, without its
per-call Python.

Feast stays the writer and the registry; this module only reads the keys and encoding Feast
writes (the entity key serialized as Feast does, plus the project; one hash field per feature,
``murmur3("<view>:<feature>")``; each value a serialized ``ValueProto``, empty for a null). What
Feast redoes on every call, this does once per registry version: resolve the feature service to
its views, features and join keys, and hash the field names. A lookup is then one Redis pipeline
with one ``HMGET`` per entity key (views with the same join keys share a Redis hash, so a user's
batch and real-time features come back in one command) and one decode per value.

It answers exactly what ``get_online_features(features=service, entity_rows=rows,
full_feature_names=True).to_dict()`` answers for the same rows, as the tests check for every key
of a test data set: a missing entity gives nulls, and, as in Feast, no TTL is applied on read.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feast import FeatureStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from taobao_assets.online_layout import DOUBLE_TAG, INT64_TAG, feature_field, redis_key


@dataclass(frozen=True)
class _KeyGroup:
    """The features of one service that live in one Redis hash: views with the same join keys."""

    join_keys: tuple[str, ...]
    fields: tuple[bytes, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class ServicePlan:
    """A feature service resolved once: its join keys and, per Redis hash, the fields to read."""

    #: Join key -> the views of the service that need it.
    needs: dict[str, list[str]]
    groups: tuple[_KeyGroup, ...]
    made_at: float

    @classmethod
    def of(cls, store: FeatureStore, service: str) -> ServicePlan:
        fields: dict[tuple[str, ...], list[tuple[bytes, str]]] = {}
        needs: dict[str, list[str]] = {}
        for projection in store.get_feature_service(service, allow_cache=True).feature_view_projections:
            view = store.get_feature_view(projection.name, allow_registry_cache=True)
            keys = tuple(column.name for column in view.entity_columns)
            for key in keys:
                needs.setdefault(key, []).append(view.name)
            fields.setdefault(keys, []).extend(
                (feature_field(view.name, feature.name), f"{projection.name_to_use()}__{feature.name}")
                for feature in projection.features)
        groups = tuple(_KeyGroup(keys, tuple(f for f, _ in wanted), tuple(n for _, n in wanted))
                       for keys, wanted in fields.items())
        return cls(needs, groups, time.monotonic())


_DOUBLE = struct.Struct("<d")


def _python(raw: bytes | None) -> Any:
    """A stored value as ``to_dict`` gives it: None for a missing field or a null.

    Doubles and int64s (the types of every gold and real-time feature) are read straight from their
    bytes (a tenth of the cost of parsing the protobuf); any other value goes through Feast's own
    conversion.
    """
    if not raw:
        return None
    if raw[0] == DOUBLE_TAG and len(raw) == 9:
        return _DOUBLE.unpack_from(raw, 1)[0]
    if raw[0] == INT64_TAG and len(raw) <= 11 and raw[-1] < 0x80:
        value = 0
        for shift, byte in enumerate(raw[1:]):
            value |= (byte & 0x7F) << (7 * shift)
        return value - (1 << 64) if value >= 1 << 63 else value
    return feast_value_type_to_python_type(ValueProto.FromString(raw))


@dataclass
class OnlineReader:
    """Reads a project's online features from Redis; ``client`` is a ``redis.Redis``."""

    store: FeatureStore
    client: Any
    plans: dict[str, ServicePlan] = field(default_factory=dict)

    def plan(self, service: str) -> ServicePlan:
        """The service's plan, made again once the registry cache may have changed."""
        plan = self.plans.get(service)
        ttl = self.store.config.registry.cache_ttl_seconds or 0
        if plan is None or time.monotonic() - plan.made_at > ttl:
            plan = self.plans[service] = ServicePlan.of(self.store, service)
        return plan

    def _key(self, group: _KeyGroup, row: Mapping[str, Any]) -> bytes:
        return redis_key(self.store.project, group.join_keys, [row[k] for k in group.join_keys])

    def read(self, service: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """The service's features for ``rows`` (each a mapping of join key -> value), column-wise and
        keyed ``<view>__<feature>`` as ``get_online_features(..., full_feature_names=True).to_dict()``."""
        plan = self.plan(service)
        missing = {k: views for k, views in plan.needs.items() if any(row.get(k) is None for row in rows)}
        if missing:
            raise ValueError("feature service {} needs {}".format(
                service, "; ".join(f"{k} (views {', '.join(v)})" for k, v in missing.items())))
        with self.client.pipeline(transaction=False) as pipe:
            for row in rows:
                for group in plan.groups:
                    pipe.hmget(self._key(group, row), group.fields)
            replies = iter(pipe.execute())
        columns: dict[str, list[Any]] = {key: [row[key] for row in rows] for key in plan.needs}
        for group in plan.groups:
            for name in group.names:
                columns[name] = []
        for _ in rows:
            for group in plan.groups:
                for name, raw in zip(group.names, next(replies), strict=True):
                    columns[name].append(_python(raw))
        return columns
