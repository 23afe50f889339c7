"""Feast rows of the real-time tables, derived from the committed counters, written to the online store.

Rows follow the declared contract (:mod:`taobao_assets.realtime_tables`): key columns,
``event_timestamp`` (the event time of the entity's latest impression counted) and per span
(``today``, ``1h``) impressions, clicks, conversions and ``ctr_<span>``, the smoothed CTR of
:func:`taobao_assets.features.smoothed_ctr` (the formula gold uses).

The prior of the smoothing is one global CTR, chosen in this order: a value pinned by the caller
(reproducible backfills, tests); the global CTR of the latest gold day (clicks over impressions of
``gold.item_features`` at its latest ``event_timestamp``, what the contract describes and what
makes a real-time CTR comparable with gold's); else, before any gold day exists, the stream's own
running CTR over everything applied so far. The source is reported with every run.

Writes go through Feast's online store interface (``OnlineStore.online_write_batch`` of the
project's configured store, where a push to the view's push source ends up), given rows already
built as Feast protos: the generic DataFrame -> Arrow -> proto conversion of a push was half the
write time. The same rows also go to the view's Postgres table (``write_to_offline_store``, an
upsert in the platform's offline store), so point-in-time training sets can use them.

The Redis store's timestamp check is off (``skip_dedup``): it skips a row whose
``event_timestamp`` is not newer than the stored one, and a real-time row can change without its
timestamp moving (late events of a slower partition add to the counters of an entity whose
latest event is already counted), so the check would silently keep stale counters. Rows are
written in commit order by the one applier holding the lease, which keeps the latest state last.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg2
from feast import FeatureStore
from feast.errors import ProjectNotFoundException, ProjectObjectNotFoundException
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, get_online_store_from_config
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.features import global_rate, smoothed_ctr
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.realtime_tables import REALTIME_TABLES, RealtimeTable
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.streaming.join import KINDS
from taobao_assets.streaming.state import EntityState, StreamState

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: A row as Feast's online stores take it: entity key, feature values, event time, creation time.
OnlineRow = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]
#: The gold table whose latest day gives the CTR prior: every impression with an item is in it.
PRIOR_TABLE = next(t for t in GOLD_TABLES if t.key_names == ["item_id"])
#: The spans of the contract, in the order :func:`row` reads them: ``EntityState.today``, ``.hour``.
SPANS = ("today", "1h")
#: Feature names in the order :func:`row` fills them: per span, the three counters and the CTR.
FEATURES = tuple(f"{what}_{span}" for span in SPANS
                 for what in ("impressions", "clicks", "conversions", "ctr"))
#: How long a resolved prior is used before the latest gold day is asked again.
PRIOR_REFRESH_SECONDS = 300.0


@dataclass(frozen=True)
class Prior:
    ctr: float
    source: str


class CtrPrior:
    """The global CTR the real-time rates are shrunk towards (see the module docstring)."""

    def __init__(self, state: StreamState, postgres: PostgresResource, pinned: float | None = None) -> None:
        self.state = state
        self.postgres = postgres
        self.pinned = pinned
        self._gold: Prior | None = None
        self._gold_at = -PRIOR_REFRESH_SECONDS

    def _latest_gold_day(self) -> Prior | None:
        table = PRIOR_TABLE.qualified_name
        sql = (f"SELECT max({TIMESTAMP_FIELD}), sum(clicks_1d), sum(impressions_1d) FROM {table} "
               f"WHERE {TIMESTAMP_FIELD} = (SELECT max({TIMESTAMP_FIELD}) FROM {table})")
        try:
            with self.postgres.connect() as conn, conn.cursor() as cur:
                cur.execute(sql)
                day_end, clicks, impressions = cur.fetchone() or (None, None, None)
        except psycopg2.errors.UndefinedTable:
            return None
        if not impressions:
            return None
        return Prior(float(global_rate(clicks, impressions)), f"{table} at {day_end}")

    def current(self) -> Prior:
        if self.pinned is not None:
            return Prior(self.pinned, "pinned")
        if time.monotonic() - self._gold_at >= PRIOR_REFRESH_SECONDS:
            self._gold, self._gold_at = self._latest_gold_day(), time.monotonic()
        if self._gold is not None:
            return self._gold
        totals = self.state.totals()
        return Prior(float(global_rate(totals.get("clicks", 0), totals.get("impressions", 0))),
                     "stream running totals")


def missing_views(store: FeatureStore, tables: Sequence[RealtimeTable] = REALTIME_TABLES) -> list[str]:
    """The real-time views the project's registry lacks (the ``feast_registry`` asset registers them)."""
    registered = {view.name for view in store.list_feature_views()}
    return [t.name for t in tables if t.name not in registered]


def streaming_store(feast: FeastResource) -> FeatureStore:
    """The project's feature store with the Redis timestamp check off (see the module docstring)."""
    return feast.store_with(online_store={"skip_dedup": True})


def _check_features(table: RealtimeTable) -> None:
    """Fail early if the contract declares other features than :func:`row` produces."""
    produced = sorted(FEATURES)
    declared = sorted(c.name for c in table.features)
    if produced != declared:
        raise ValueError(
            f"real-time table {table.name} declares features {declared}, the streaming run produces "
            f"{produced}: change taobao_assets/streaming/online.py with taobao_assets/realtime_tables.py")


class OnlineWriter:
    """Writes the committed state of entities to the real-time feature views."""

    def __init__(self, store: FeatureStore, state: StreamState,
                 tables: Sequence[RealtimeTable] = REALTIME_TABLES) -> None:
        missing = missing_views(store, tables)
        if missing:
            raise LookupError(f"Feast project {store.project!r} has no feature view {missing}: materialize "
                              f"the feast_registry asset first (it registers the real-time views)")
        self.store = store
        self.online_store = get_online_store_from_config(store.config.online_store)
        self.tables: dict[str, RealtimeTable] = {}
        for table in tables:
            kind = KINDS.get(tuple(table.key_names))
            if kind is None:
                raise ValueError(f"real-time table {table.name} has keys {table.key_names}; the streaming "
                                 f"run counts entities keyed by {sorted(KINDS)}")
            _check_features(table)
            self.tables[f"{state.entity_prefix}{kind}:"] = table

    def write(self, states: Sequence[EntityState], prior: float) -> dict[str, int]:
        """Write ``states`` with CTRs smoothed towards ``prior``; returns the rows written per table."""
        by_table: dict[str, list[EntityState]] = {}
        for state in states:
            by_table.setdefault(_kind_prefix(state.key, self.tables), []).append(state)
        written = {}
        for prefix, table_states in by_table.items():
            table = self.tables[prefix]
            view = self.store.get_feature_view(table.name)
            key_names = table.key_names
            rows = [row(key_names, state.key[len(prefix):], state, prior) for state in table_states]
            self.online_store.online_write_batch(self.store.config, view, rows, None)
            # The same rows to the view's Postgres table, so that training sets see the real-time
            # values as of each impression. An upsert: a rewrite after a crash changes nothing.
            self.store.write_to_offline_store(table.name, offline_frame(key_names, rows))
            written[table.name] = len(rows)
        return written


def offline_frame(key_names: list[str], rows: Sequence[OnlineRow]) -> pd.DataFrame:
    """``rows`` as the view's table holds them: keys, ``event_timestamp``, then the features."""
    frame: dict[str, list[Any]] = {
        name: [entity_key.entity_values[i].int64_val for entity_key, _, _, _ in rows]
        for i, name in enumerate(key_names)}
    frame[TIMESTAMP_FIELD] = [stamp for _, _, stamp, _ in rows]
    for name in FEATURES:
        frame[name] = [_number(values[name]) for _, values, _, _ in rows]
    return pd.DataFrame(frame)


def _number(value: ValueProto) -> int | float:
    """A value of :func:`row` (every feature is an int64 count or a double rate) as Python's."""
    return value.int64_val if value.HasField("int64_val") else value.double_val


def row(key_names: list[str], ids: str, state: EntityState, prior: float) -> OnlineRow:
    """One online row as Feast writes it: entity key, feature values, event timestamp."""
    entity_key = EntityKeyProto(join_keys=key_names,
                                entity_values=[ValueProto(int64_val=int(i)) for i in ids.split(":")])
    (di, dc, dv), (hi, hc, hv) = state.today, state.hour
    values = (ValueProto(int64_val=di), ValueProto(int64_val=dc), ValueProto(int64_val=dv),
              ValueProto(double_val=smoothed_ctr(dc, di, prior)),
              ValueProto(int64_val=hi), ValueProto(int64_val=hc), ValueProto(int64_val=hv),
              ValueProto(double_val=smoothed_ctr(hc, hi, prior)))
    return entity_key, dict(zip(FEATURES, values, strict=True)), _timestamp(state.latest_ms), None


def _timestamp(epoch_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=epoch_ms)


def _kind_prefix(key: str, prefixes: dict[str, RealtimeTable]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return prefix
    raise ValueError(f"state key {key!r} belongs to no real-time table")


def drop_online_rows(state: StreamState, feast: FeastResource) -> int:
    """Delete the real-time rows of every entity in ``state`` from ``feast``'s project; returns rows deleted.

    Feast's Redis store keeps one hash per entity key and project (the serialized entity key
    followed by the project name) holding the rows of every view of that entity, each feature a
    field named by the murmur3 hash of ``<view>:<feature>`` plus a ``_ts:<view>`` timestamp. Only
    the real-time views' fields are deleted: the gold views' rows of the same entity stay.
    """
    tables = {f"{state.entity_prefix}{KINDS[tuple(t.key_names)]}:": t for t in REALTIME_TABLES}
    fields = {prefix: [f"_ts:{t.name}".encode(), *(_mmh3(f"{t.name}:{c.name}") for c in t.features)]
              for prefix, t in tables.items()}
    project = feast.project.encode()
    deleted = 0
    with state.client.pipeline(transaction=False) as pipe:
        for raw in state.client.scan_iter(match=state.entity_prefix + "*", count=10_000):
            key = raw.decode()
            prefix = next((p for p in tables if key.startswith(p)), None)
            if prefix is None or key.endswith(":m"):
                continue
            ids = [ValueProto(int64_val=int(i)) for i in key[len(prefix):].split(":")]
            entity = EntityKeyProto(join_keys=tables[prefix].key_names, entity_values=ids)
            online_key = serialize_entity_key(entity, entity_key_serialization_version=3) + project
            pipe.hdel(online_key, *fields[prefix])  # type: ignore[arg-type]  # redis-py takes bytes keys
            deleted += 1
            if len(pipe) >= 10_000:
                pipe.execute()
        pipe.execute()
    return deleted


def drop_project(feast: FeastResource) -> None:
    """Delete ``feast``'s project from the registry (a stream's own project: tests, benchmarks).

    Feast 0.67 leaves traces its ``delete_project`` does not remove: the views' version history
    (applying a project of the same name again then fails on it), and the project metadata row that
    merely opening a store writes, which later stores turn back into a project. Both go too.
    """
    registry = feast.store().registry
    with suppress(ProjectNotFoundException, ProjectObjectNotFoundException):
        registry.delete_project(feast.project, commit=True)
    with feast.postgres.connect() as conn, conn.cursor() as cur:
        for table in ("feature_view_version_history", "feast_metadata", "projects"):
            cur.execute(f"DELETE FROM {table} WHERE project_id = %s", (feast.project,))
