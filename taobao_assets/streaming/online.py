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

Rows are written as Feast's Redis store writes a push to the view's push source
(``online_write_batch`` with its timestamp check off), but built a column at a time by
:mod:`taobao_assets.online_writes`: Feast's per-row protobuf objects, murmur hashes and redis-py
commands were most of a streaming run's time. The same rows also go to the view's Postgres table
(the upsert of the project's offline store, :func:`taobao_assets.offline_store.upsert_rows`), so
point-in-time training sets can use them.

The timestamp check is off (``skip_dedup``): it skips a row whose ``event_timestamp`` is not
newer than the stored one, and a real-time row can change without its timestamp moving (late
events of a slower partition add to the counters of an entity whose latest event is already
counted), so the check would silently keep stale counters. Rows are written in commit order by
the one applier holding the lease, which keeps the latest state last.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import psycopg2
import pyarrow as pa
from feast import FeatureStore, FeatureView
from feast.errors import ProjectNotFoundException, ProjectObjectNotFoundException
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType, _versioned_fv_name
from feast.infra.utils.postgres.connection_utils import _get_conn
from feast.value_type import ValueType

from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.features import global_rate, smoothed_ctr
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.offline_store import push_target, upsert_rows
from taobao_assets.online_encoding import entity_keys
from taobao_assets.online_layout import feature_field, redis_key, timestamp_field
from taobao_assets.online_writes import hset_commands, raw_pipeline, timestamp_protos
from taobao_assets.realtime_tables import REALTIME_TABLES, RealtimeTable
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.streaming.join import KINDS
from taobao_assets.streaming.state import EntityState, StreamState

#: The gold table whose latest day gives the CTR prior: every impression with an item is in it.
PRIOR_TABLE = next(t for t in GOLD_TABLES if t.key_names == ["item_id"])
#: The spans of the contract, in the order of ``EntityState.today`` and ``.hour``.
SPANS = ("today", "1h")
#: Feature names, the offline tables' order: per span, the three counters and the CTR.
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
    """Writes the committed state of entities to the real-time feature views, a column at a time.

    The rows go to Redis as Feast's ``online_write_batch`` writes them (the commands of
    :mod:`taobao_assets.online_writes`; a test compares the bytes with Feast's own write), and to
    the views' Postgres tables through the project's offline store, as an Arrow table.
    """

    def __init__(self, store: FeatureStore, state: StreamState,
                 tables: Sequence[RealtimeTable] = REALTIME_TABLES) -> None:
        missing = missing_views(store, tables)
        if missing:
            raise LookupError(f"Feast project {store.project!r} has no feature view {missing}: materialize "
                              f"the feast_registry asset first (it registers the real-time views)")
        self.store = store
        online = store.config.online_store
        if not isinstance(online, RedisOnlineStoreConfig) or online.redis_type != RedisType.redis:
            raise ValueError(f"the streaming run writes to a single Redis server; the Feast project "
                             f"{store.project!r} has online store {online}")
        self.client = RedisOnlineStore()._get_client(online)
        self._offline: psycopg.Connection[Any] | None = None
        self.tables: dict[str, _View] = {}
        for table in tables:
            kind = KINDS.get(tuple(table.key_names))
            if kind is None:
                raise ValueError(f"real-time table {table.name} has keys {table.key_names}; the streaming "
                                 f"run counts entities keyed by {sorted(KINDS)}")
            _check_features(table)
            self.tables[f"{state.entity_prefix}{kind}:"] = _View.of(store, table)

    def write(self, states: Sequence[EntityState], prior: float) -> dict[str, int]:
        """Write ``states`` with CTRs smoothed towards ``prior``; returns the rows written per table."""
        by_table: dict[str, list[EntityState]] = {}
        for state in states:
            by_table.setdefault(_kind_prefix(state.key, self.tables), []).append(state)
        config = self.store.config
        rows = {prefix: self.tables[prefix].rows(prefix, table_states, prior)
                for prefix, table_states in by_table.items()}
        with raw_pipeline(self.client) as pipeline:
            for prefix, table in rows.items():
                view = self.tables[prefix]
                keys = entity_keys(config.project, {n: table.column(n).combine_chunks() for n in view.key_types},
                                   view.key_types)
                nanos = table.column(TIMESTAMP_FIELD).cast(pa.timestamp("ns", "UTC")).cast(pa.int64()).to_numpy()
                features = [(name, table.column(name).combine_chunks(), value_type)
                            for name, value_type in view.feature_types.items()]
                pipeline.send(*hset_commands(view.online_name, keys, timestamp_protos(nanos), features,
                                             config.online_store.key_ttl_seconds))
        # The same rows to the views' Postgres tables, so that training sets see the real-time values
        # as of each impression: the offline store's upsert (a rewrite after a crash changes nothing),
        # on a connection kept open, as a follower flushes several times a second.
        connection = self._offline_connection()
        for prefix, table in rows.items():
            view = self.tables[prefix]
            with connection.transaction(), connection.cursor() as cur:
                upsert_rows(cur, view.offline_table, table.cast(view.offline_schema))
        return {self.tables[prefix].table.name: table.num_rows for prefix, table in rows.items()}

    def _offline_connection(self) -> psycopg.Connection[Any]:
        if self._offline is None or self._offline.closed or self._offline.broken:
            self._offline = _get_conn(self.store.config.offline_store)
            self._offline.autocommit = True  # each upsert is a transaction block of its own
        return self._offline

    def close(self) -> None:
        if self._offline is not None:
            self._offline.close()


@dataclass(frozen=True)
class _View:
    """A real-time table's registered view: its name in Redis and the Feast types of its columns."""

    table: RealtimeTable
    view: FeatureView
    online_name: str
    key_types: dict[str, ValueType]
    feature_types: dict[str, ValueType]
    offline_table: str
    offline_schema: pa.Schema

    @classmethod
    def of(cls, store: FeatureStore, table: RealtimeTable) -> _View:
        view = store.get_feature_view(table.name)
        key_types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        if set(key_types.values()) != {ValueType.INT64}:
            raise ValueError(f"feature view {view.name}: entity keys {key_types}; the streaming run's ids "
                             f"are INT64")
        feature_types = {f.name: f.dtype.to_value_type() for f in view.features}
        offline_table, offline_schema = push_target(store.config, view)
        return cls(table, view, _versioned_fv_name(view, store.config), key_types,
                   {name: feature_types[name] for name in FEATURES}, offline_table, offline_schema)

    def rows(self, prefix: str, states: Sequence[EntityState], prior: float) -> pa.Table:
        """The rows of ``states`` as the view's table holds them: keys, ``event_timestamp``, then the
        features (the contract's order, :data:`FEATURES`)."""
        ids = np.array([state.key[len(prefix):].split(":") for state in states], np.int64).reshape(
            len(states), len(self.key_types))
        counts = np.array([(*state.today, *state.hour) for state in states], np.int64).reshape(len(states), 6)
        columns: dict[str, Any] = {name: ids[:, i] for i, name in enumerate(self.table.key_names)}
        columns[TIMESTAMP_FIELD] = pa.array(np.array([s.latest_ms for s in states], np.int64),
                                            pa.timestamp("ms", "UTC"))
        for span, (impressions, clicks, conversions) in zip(SPANS, ((0, 1, 2), (3, 4, 5)), strict=True):
            columns[f"impressions_{span}"] = counts[:, impressions]
            columns[f"clicks_{span}"] = counts[:, clicks]
            columns[f"conversions_{span}"] = counts[:, conversions]
            columns[f"ctr_{span}"] = smoothed_ctr(counts[:, clicks], counts[:, impressions], prior)
        return pa.table({name: columns[name] for name in (*self.table.key_names, TIMESTAMP_FIELD, *FEATURES)})


def _kind_prefix(key: str, prefixes: Mapping[str, Any]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return prefix
    raise ValueError(f"state key {key!r} belongs to no real-time table")


def drop_online_rows(state: StreamState, feast: FeastResource) -> int:
    """Delete the real-time rows of every entity in ``state`` from ``feast``'s project; returns rows deleted.

    Feast's Redis store keeps one hash per entity key and project holding the rows of every view
    of that entity (:mod:`taobao_assets.online_layout`). Only the real-time views' fields are
    deleted: the gold views' rows of the same entity stay.
    """
    tables = {f"{state.entity_prefix}{KINDS[tuple(t.key_names)]}:": t for t in REALTIME_TABLES}
    fields = {prefix: [timestamp_field(t.name), *(feature_field(t.name, c.name) for c in t.features)]
              for prefix, t in tables.items()}
    deleted = 0
    with state.client.pipeline(transaction=False) as pipe:
        for raw in state.client.scan_iter(match=state.entity_prefix + "*", count=10_000):
            key = raw.decode()
            prefix = next((p for p in tables if key.startswith(p)), None)
            if prefix is None:
                continue
            online_key = redis_key(feast.project, tables[prefix].key_names,
                                   [int(i) for i in key[len(prefix):].split(":")])
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
