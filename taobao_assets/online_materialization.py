"""A Feast batch engine that materializes Postgres views into Redis at Redis' speed.

Feast's local engine fetches a view's rows from Postgres as Python tuples, filters and
deduplicates them in pandas, then makes a protobuf object per cell and a redis-py command per row:
about 15k rows/s, whatever Redis could take. This engine keeps Feast's bookkeeping (it is Feast's
local engine with one step replaced: ``materialize`` still moves the view through its states and
records the interval in the registry) and replaces the per-view work:

- read: Postgres ``COPY`` into Arrow (:mod:`taobao_assets.postgres_arrow`) of each entity's latest
  row in ``[start, end]``, the rows Feast's filter and dedup nodes keep: ``DISTINCT ON`` the join
  keys, newest event time first, then newest created time (nulls last, where pandas puts them);
- encode: every key, value and command a column at a time (:mod:`taobao_assets.online_encoding`,
  :mod:`taobao_assets.online_writes`);
- write: batches of pipelined ``HSET`` commands on one connection, one batch in flight while the
  next is encoded, keeping Feast's rule that a row is written only if its event time is newer
  than the view's ``_ts`` mark stored for the entity (read by a pipelined ``HGET`` per key), unless
  the store's ``skip_dedup`` says otherwise; ``key_ttl_seconds`` adds Feast's ``EXPIRE``. With
  ``rewrite_same_time`` a row whose stored mark equals its event time is written too: a day's
  re-run after its gold was recomputed replaces what the first run wrote, decided on the marks
  this engine reads anyway.

Redis then holds the same bytes as after Feast's own materialization (the tests compare every
hash). A view this engine cannot write exactly as Feast does goes to Feast's local engine
unchanged (logged): a view of another class than ``FeatureView`` (batch, stream, on-demand), one
with transformations, aggregations, validation or a filter, a source that is not a
``PostgreSQLSource`` (a push source, a view on views), a view without entities, an entity or
feature type other than those of :data:`~taobao_assets.online_encoding.KEY_TYPES` and
:data:`~taobao_assets.online_encoding.FEATURE_TYPES`, a view also written offline, a task that
keeps every row (``only_latest`` false), a Redis cluster or sentinel, or a field mapping Feast
itself could not resolve.

Enabled by ``batch_engine: {"type": ENGINE_TYPE}`` in the repository config, which
:mod:`taobao_assets.resources.feast` sets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
from feast import FeatureView
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.local.compute import LocalComputeEngine
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import PostgreSQLOfflineStoreConfig
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType, _versioned_fv_name
from feast.infra.registry.base_registry import BaseRegistry
from feast.infra.utils.postgres.connection_utils import _get_conn
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.utils import _get_column_names
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg import sql

from taobao_assets.online_encoding import FEATURE_TYPES, KEY_TYPES, Cells, command, entity_keys, wire
from taobao_assets.online_layout import timestamp_field
from taobao_assets.online_writes import hset_commands, raw_pipeline
from taobao_assets.postgres_arrow import copy_out, exact_session

ENGINE_TYPE = "taobao_assets.online_materialization.PostgresRedisEngine"
#: Rows per pipelined batch of commands, by default.
WRITE_BATCH = 10_000
logger = logging.getLogger(__name__)

#: The Arrow type each Feast value type is read as; a float is read as a double and rounded by
#: the encoder, as Feast rounds the double psycopg gives it.
_ARROW_TYPES = {ValueType.INT64: pa.int64(), ValueType.INT32: pa.int32(), ValueType.DOUBLE: pa.float64(),
                ValueType.FLOAT: pa.float64(), ValueType.STRING: pa.string(), ValueType.BOOL: pa.bool_()}
_TIMESTAMP = pa.timestamp("us", "UTC")


class PostgresRedisEngineConfig(FeastConfigBaseModel):
    """The engine's configuration: Feast resolves ``<type>Config`` next to the engine class."""

    type: str = ENGINE_TYPE
    #: Feast's local engine's option, for the views left to it.
    backend: str | None = None
    #: Rows per pipelined batch of commands (bounds the memory of a batch's encoded commands).
    write_batch: int = WRITE_BATCH
    #: Also write a row whose stored ``_ts`` mark equals its event time (Feast writes only newer
    #: rows); a newer stored row still wins. Views left to Feast's local engine are refused then:
    #: it cannot, and skipping their rows would serve the old values.
    rewrite_same_time: bool = False


@dataclass(frozen=True)
class _Column:
    """A column Feast writes: its name in Feast, the source column it is read from, its type."""

    name: str
    source: str
    value_type: ValueType


@dataclass(frozen=True)
class _ViewPlan:
    """How one view's rows are read from Postgres and written to Redis."""

    view: str
    table: str
    keys: tuple[_Column, ...]
    features: tuple[_Column, ...]
    timestamp: str
    created: str | None

    @classmethod
    def of(cls, config: RepoConfig, registry: BaseRegistry, task: MaterializationTask) -> _ViewPlan | str:
        """The plan of the task's view, or why this engine leaves it to Feast's local engine."""
        view = task.feature_view
        source = getattr(view, "data_source", None)
        store = config.online_store
        if not task.only_latest:
            return "the task keeps every row, not each entity's latest"
        if type(view) is not FeatureView:
            return f"a {type(view).__name__}, not a plain FeatureView"
        if not isinstance(source, PostgreSQLSource):
            return f"source {type(source).__name__}, not a PostgreSQLSource"
        if view.enable_validation or getattr(view, "filter", None):
            return "validation or a filter"
        if not view.online or view.offline:
            return "not written online only"
        if not isinstance(store, RedisOnlineStoreConfig) or store.redis_type != RedisType.redis:
            return "not a single Redis server"
        if not isinstance(config.offline_store, PostgreSQLOfflineStoreConfig):
            return "not the Postgres offline store"
        entities = [registry.get_entity(name, task.project) for name in view.entities]
        sources, feature_sources, timestamp, created = _get_column_names(view, entities)
        sources += feature_sources
        if not sources or not view.entity_columns:
            return "no entities"
        mapping = source.field_mapping or {}
        read_as = {mapping.get(column, column): column for column in (*sources, timestamp)}

        def columns(fields: list[Any], supported: frozenset[ValueType]) -> tuple[_Column, ...] | str:
            found = []
            for field in fields:
                kind = field.dtype.to_value_type()
                if kind not in supported or field.name not in read_as:
                    return f"{field.name}: type {kind.name} or no source column"
                found.append(_Column(field.name, read_as[field.name], kind))
            return tuple(found)

        keys, features = columns(view.entity_columns, KEY_TYPES), columns(view.features, FEATURE_TYPES)
        if isinstance(keys, str) or isinstance(features, str):
            return str(keys if isinstance(keys, str) else features)
        types = {(c.source, _ARROW_TYPES[c.value_type]) for c in (*keys, *features)}
        if len(types) != len({source for source, _ in types}):
            return "a source column read as two types"
        return cls(_versioned_fv_name(view, config), source.get_table_query_string(), keys, features,
                   timestamp, created)

    def schema(self) -> pa.Schema:
        columns = {c.source: _ARROW_TYPES[c.value_type] for c in (*self.keys, *self.features)}
        return pa.schema([*columns.items(), (self.timestamp, _TIMESTAMP)])

    def query(self, start: datetime, end: datetime) -> sql.Composed:
        """Each entity's latest row with an event time in ``[start, end]`` (Feast's filter and dedup)."""
        keys = sql.SQL(", ").join(sql.Identifier(c.source) for c in self.keys)
        timestamp = sql.Identifier(self.timestamp)
        order = [sql.SQL("{} DESC").format(timestamp)]
        if self.created:
            order.append(sql.SQL("{} DESC NULLS LAST").format(sql.Identifier(self.created)))
        return sql.SQL("SELECT DISTINCT ON ({keys}) {columns} FROM {table} AS source "
                       "WHERE {ts} BETWEEN {start} AND {end} ORDER BY {keys}, {order}").format(
            keys=keys, columns=sql.SQL(", ").join(sql.Identifier(name) for name in self.schema().names),
            table=sql.SQL(self.table), ts=timestamp, start=sql.Literal(start), end=sql.Literal(end),
            order=sql.SQL(", ").join(order))


def _nanos(stored: list[bytes | None]) -> np.ndarray:
    """The event times (ns) of stored ``_ts`` marks; 0 for none, as Feast reads a missing mark."""
    parsed: dict[bytes | None, int] = {None: 0, b"": 0}
    for mark in stored:
        if mark not in parsed:
            stamp = Timestamp.FromString(mark)
            parsed[mark] = stamp.seconds * 1_000_000_000 + stamp.nanos
    return np.fromiter((parsed[mark] for mark in stored), np.int64, len(stored))


class PostgresRedisEngine(LocalComputeEngine):
    """Feast's local engine with the materialization of a Postgres view into Redis replaced."""

    def __init__(self, *, write_batch: int = WRITE_BATCH, rewrite_same_time: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.write_batch, self.rewrite_same_time = write_batch, rewrite_same_time

    def _materialize_one(self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
                         ) -> LocalMaterializationJob:
        plan = _ViewPlan.of(self.repo_config, registry, task)
        if isinstance(plan, str):
            if self.rewrite_same_time:
                raise ValueError(f"view {task.feature_view.name}: rewrite_same_time needs this engine, but the view "
                                 f"is left to Feast's local engine ({plan}), which writes only newer rows")
            logger.info("materializing %s with Feast's local engine: %s", task.feature_view.name, plan)
            return super()._materialize_one(registry, task, **kwargs)
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        try:
            self._write(plan, self._read(plan, task.start_time, task.end_time))
        except Exception as error:  # reported through the job, as the local engine does
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=error)
        return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)

    def _read(self, plan: _ViewPlan, start: datetime, end: datetime) -> pa.Table:
        with _get_conn(self.repo_config.offline_store) as conn, conn.cursor() as cur:
            exact_session(cur)
            return copy_out(cur, plan.query(start, end), plan.schema())

    def _write(self, plan: _ViewPlan, table: pa.Table) -> None:
        config = self.repo_config
        store: RedisOnlineStoreConfig = config.online_store
        assert isinstance(self.online_store, RedisOnlineStore)
        # A day's rows share a few event times: each one's Timestamp bytes and nanoseconds, once.
        micros = table.column(plan.timestamp).cast(pa.int64()).to_numpy()
        distinct, which = np.unique(micros, return_inverse=True)
        stamps = [Timestamp(seconds=int(us // 1_000_000), nanos=int(us % 1_000_000) * 1000).SerializeToString()
                  for us in distinct.tolist()]
        nanos = (distinct * 1000)[which]
        with raw_pipeline(self.online_store._get_client(store)) as pipeline:
            # The marks of batch k+1 are asked for before batch k is written, so Redis answers them
            # while batch k is encoded. Each entity has one row (DISTINCT ON), so no batch reads a
            # key another batch writes, and the order changes nothing.
            asked: tuple[int, int, pa.Table, Cells] | None = None
            for start in [*range(0, table.num_rows, self.write_batch), table.num_rows]:
                batch = table.slice(start, self.write_batch)
                rows = batch.num_rows
                ask = None
                if rows:
                    keys = entity_keys(config.project, {c.name: batch.column(c.source).combine_chunks()
                                                        for c in plan.keys},
                                       {c.name: c.value_type for c in plan.keys})
                    ticket = 0 if store.skip_dedup else pipeline.send(
                        wire(command(rows, b"HGET", keys, timestamp_field(plan.view)), rows), rows)
                    ask = (ticket, start, batch, keys)
                if asked is not None:
                    ticket, first, chosen, chosen_keys = asked
                    newer = np.arange(chosen.num_rows)
                    if ticket:
                        stored = _nanos(pipeline.receive(ticket))
                        times = nanos[first:first + chosen.num_rows]
                        write = (stored == 0) | (times > stored)
                        if self.rewrite_same_time:
                            write |= times == stored
                        newer = np.flatnonzero(write)
                    if len(newer):
                        pipeline.send(*self._writes(
                            plan, chosen.take(pa.array(newer)), Cells(chosen_keys.data[newer],
                                                                      chosen_keys.lengths[newer]),
                            Cells.of(stamps, which[first:first + chosen.num_rows][newer])))
                asked = ask

    def _writes(self, plan: _ViewPlan, rows: pa.Table, keys: Cells, stamps: Cells) -> tuple[bytes, int]:
        """The commands writing ``rows`` (of Redis ``keys``, event times ``stamps``), and their replies."""
        store: RedisOnlineStoreConfig = self.repo_config.online_store
        features = [(c.name, rows.column(c.source).combine_chunks(), c.value_type) for c in plan.features]
        return hset_commands(plan.view, keys, stamps, features, store.key_ttl_seconds)
