"""Feast's Postgres offline store, with point-in-time retrieval on the tables' indexes and with push.

Feast loads this store by its path (``offline_store.type`` in ``feature_store.yaml``, see
:mod:`taobao_assets.resources.feast`). It keeps every behaviour of the stock
``PostgreSQLOfflineStore`` and changes three things, measured by ``bench.pit_retrieval``:

- **Point-in-time SQL.** The stock query joins every entity row with every candidate feature row
  of its keys (all of them within the TTL), numbers them with a window function over text row ids,
  and joins back. Postgres estimates the candidate counts badly (the time bounds come from
  sub-selects over a table without statistics) and picks nested loops that are quadratic in the
  entity rows, unless nested loops are turned off for the whole role. Here each view is one
  ``LEFT JOIN LATERAL (... ORDER BY event_timestamp DESC LIMIT 1)`` per entity row: a backward
  scan of the table's ``(keys, event_timestamp)`` index that stops at the first row, O(log M) per
  row, whatever the planner's estimates.
- **Loads.** The entity frame goes to a temporary table with ``COPY`` (stock: one ``INSERT`` per
  row, no statistics) and the result comes back with ``COPY`` into Arrow (stock: tuples,
  transposed cell by cell in Python). See :mod:`taobao_assets.postgres_arrow`.
- **Push.** ``offline_write_batch`` (stock: ``NotImplementedError``) upserts pushed rows, so
  ``push(..., to=ONLINE_AND_OFFLINE)`` and ``write_to_offline_store`` reach training sets.

The results are those of the stock store cell for cell, in the entity frame's row order (the
stock order is unspecified). The one case where the stock query and a LIMIT 1 differ is a tie:
two rows of the same keys with the same timestamps, which the stock query returns both of,
duplicating the entity row. This store therefore uses its query only when each view's table has
a unique index over some of its key and timestamp columns (the gold and real-time tables' primary
keys), so ties cannot exist; otherwise, and for what it does not cover (an entity frame given as
SQL, retrieval without entity rows, a query-based source), it runs the stock code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureView, OnDemandFeatureView, RepoConfig
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
    PostgreSQLOfflineStore,
    PostgreSQLOfflineStoreConfig,
    PostgreSQLRetrievalJob,
    _get_entity_df_event_timestamp_range,
)
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.infra.utils.postgres.connection_utils import _get_conn
from feast.type_map import arrow_to_pg_type, pg_type_code_to_arrow
from psycopg import sql
from pydantic import Field

from taobao_assets.postgres_arrow import copy_in, copy_out, exact_session, table_name

#: The path Feast loads this store by.
STORE_TYPE = "taobao_assets.offline_store.IndexedPostgreSQLOfflineStore"
#: The entity frame's row number in the temporary table: the result's order.
ROW = "__entity_row"
ENTITY_TABLE = "entity_rows"


class IndexedPostgreSQLOfflineStoreConfig(PostgreSQLOfflineStoreConfig):
    """The stock store's settings, its ``type`` (Feast validates it against the class) and ``readers``."""

    type: Literal["taobao_assets.offline_store.IndexedPostgreSQLOfflineStore"] = (
        "taobao_assets.offline_store.IndexedPostgreSQLOfflineStore")  # type: ignore[assignment]
    #: Connections a training set is read over at once, each taking a part of the entity rows:
    #: about the cores Postgres and this process have.
    readers: int = Field(default=2, ge=1)
    #: Fewest entity rows worth a connection of their own.
    reader_min_rows: int = Field(default=50_000, ge=1)


@dataclass(frozen=True)
class _ViewProbe:
    """How one feature view is read at a point in time: its table, columns and bounds."""

    table: str
    #: (column in the table, column in the entity frame), per entity key.
    keys: list[tuple[str, str]]
    timestamp: str
    created: str | None
    ttl_seconds: int
    #: (column in the table, output name), per feature.
    features: list[tuple[str, str]]

    def lateral(self, alias: str, entity_time: str, filter_by_created: bool) -> sql.Composable:
        """``LEFT JOIN LATERAL``: the latest row of the entity's keys at or before its time, within the TTL."""
        row = sql.Identifier(alias)
        probe = sql.SQL("t.{} <= e.{}").format(sql.Identifier(self.timestamp), sql.Identifier(entity_time))
        bounds = [sql.SQL("t.{} = e.{}").format(sql.Identifier(column), sql.Identifier(key))
                  for column, key in self.keys]
        bounds.append(probe)
        if self.ttl_seconds:
            bounds.append(sql.SQL("t.{} >= e.{} - {} * interval '1 second'").format(
                sql.Identifier(self.timestamp), sql.Identifier(entity_time), sql.Literal(self.ttl_seconds)))
        order = [sql.SQL("t.{} DESC").format(sql.Identifier(self.timestamp))]
        if self.created:
            if filter_by_created:
                bounds.append(sql.SQL("t.{} <= e.{}").format(sql.Identifier(self.created),
                                                              sql.Identifier(entity_time)))
            order.append(sql.SQL("t.{} DESC").format(sql.Identifier(self.created)))
        columns = sql.SQL(", ").join(sql.SQL("t.{} AS {}").format(sql.Identifier(column), sql.Identifier(name))
                                     for column, name in self.features)
        return sql.SQL("LEFT JOIN LATERAL (SELECT {} FROM {} AS t WHERE {} ORDER BY {} LIMIT 1) AS {} ON true").format(
            columns, table_name(self.table), sql.SQL(" AND ").join(bounds), sql.SQL(", ").join(order), row)


def _probes(contexts: list[offline_utils.FeatureViewQueryContext], views: list[FeatureView],
            full_feature_names: bool) -> list[_ViewProbe] | None:
    """The views as probes, or None where one is not a plain table with entities."""
    sources = {view.projection.name_to_use(): view.batch_source for view in views}
    probes = []
    for context in contexts:
        source = sources.get(context.name)
        if not isinstance(source, PostgreSQLSource) or not source._postgres_options._table or not context.entities:
            return None
        keys = [tuple(selection.split(" AS ")) for selection in context.entity_selections]
        features = [(feature, f"{context.name}__{context.field_mapping.get(feature, feature)}" if full_feature_names
                     else context.field_mapping.get(feature, feature)) for feature in context.features]
        probes.append(_ViewProbe(table=source._postgres_options._table, keys=[(k[0], k[1]) for k in keys],
                                 timestamp=context.timestamp_field, created=context.created_timestamp_column or None,
                                 ttl_seconds=context.ttl, features=features))
    return probes


def _unique_columns(cur: psycopg.Cursor, table: str) -> list[list[str]]:
    """The column lists of ``table``'s plain unique indexes (no expressions, no predicate)."""
    cur.execute(
        "SELECT array(SELECT a.attname FROM unnest(i.indkey) AS k(n) "
        "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.n) "
        "FROM pg_index AS i WHERE i.indrelid = to_regclass(%s) AND i.indisunique "
        "AND i.indpred IS NULL AND i.indexprs IS NULL",
        (table,))
    return [list(columns) for (columns,) in cur.fetchall()]


def push_target(config: RepoConfig, feature_view: FeatureView) -> tuple[str, pa.Schema]:
    """The table a view's pushed rows go to, and its columns as Arrow types (one catalog query)."""
    source = feature_view.batch_source
    if not isinstance(source, PostgreSQLSource) or not source._postgres_options._table:
        raise ValueError(f"feature view {feature_view.name}: pushed rows can only be written to a "
                         f"Postgres table source, not {source}")
    schema, _ = offline_utils.get_pyarrow_schema_from_batch_source(config, source)
    return source._postgres_options._table, schema


def upsert_rows(cur: psycopg.Cursor, target: str, table: pa.Table) -> None:
    """Write ``table`` (the columns of ``target``, in order and typed) into ``target`` in the cursor's
    transaction, as :meth:`IndexedPostgreSQLOfflineStore.offline_write_batch` describes."""
    staging = sql.Identifier("pushed_rows")
    names = table.column_names
    exact_session(cur)
    cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {}) ON COMMIT DROP").format(staging, table_name(target)))
    copy_in(cur, "pushed_rows", table)
    columns = sql.SQL(", ").join(map(sql.Identifier, names))
    unique = next(iter(_unique_columns(cur, target)), None)
    if unique is None:
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            table_name(target), columns, columns, staging))
        return
    key = sql.SQL(", ").join(map(sql.Identifier, unique))
    values = [n for n in names if n not in unique]
    conflict = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in values)) if values else (
        sql.SQL("DO NOTHING"))
    cur.execute(sql.SQL(
        "INSERT INTO {target} ({columns}) SELECT DISTINCT ON ({key}) {columns} FROM {staging} "
        "ORDER BY {key}, ctid DESC ON CONFLICT ({key}) {conflict}").format(
        target=table_name(target), columns=columns, key=key, staging=staging, conflict=conflict))


def _tie_free(cur: psycopg.Cursor, probe: _ViewProbe) -> bool:
    """Whether no two rows of ``probe``'s table can share keys and timestamp (a unique index says so)."""
    allowed = {column for column, _ in probe.keys} | {probe.timestamp}
    return any(set(columns) <= allowed for columns in _unique_columns(cur, probe.table))


def _entity_table(entity_df: pd.DataFrame) -> pa.Table:
    """The entity frame as Arrow, with its row numbers, as the stock store would type its columns."""
    table = pa.Table.from_pandas(entity_df, preserve_index=False)
    return table.append_column(ROW, pa.array(np.arange(len(entity_df), dtype=np.int64)))


class IndexedRetrievalJob(PostgreSQLRetrievalJob):
    """A training set read in parts: each part's entity rows copied in, the LATERAL query copied out.

    The parts run at once on their own connections (``readers`` of the store's settings): the
    probes and Postgres's output of the result on one side, the decoding on the other, each part
    keeps a core busy.
    Only the row numbers and features come back; the entity columns are the caller's own, typed
    as the stock store types them after their trip through Postgres.
    """

    def __init__(self, config: RepoConfig, entity_df: pd.DataFrame, probes: list[_ViewProbe], entity_time: str,
                 filter_by_created: bool, full_feature_names: bool,
                 on_demand_feature_views: list[OnDemandFeatureView], metadata: RetrievalMetadata) -> None:
        self._entity_df = entity_df
        self._probes = probes
        self._entity_time = entity_time
        self._filter_by_created = filter_by_created
        super().__init__(query=self._query_text, config=config, full_feature_names=full_feature_names,
                         on_demand_feature_views=on_demand_feature_views, metadata=metadata)

    def _select(self, entity_columns: list[str]) -> sql.Composable:
        outputs = [sql.SQL("e.{}").format(sql.Identifier(c)) for c in entity_columns]
        outputs += [sql.SQL("{}.{}").format(sql.Identifier(f"v{i}"), sql.Identifier(name))
                    for i, probe in enumerate(self._probes) for _, name in probe.features]
        joins = [probe.lateral(f"v{i}", self._entity_time, self._filter_by_created)
                 for i, probe in enumerate(self._probes)]
        return sql.SQL("SELECT {} FROM {} AS e {}").format(
            sql.SQL(", ").join(outputs), sql.Identifier(ENTITY_TABLE), sql.SQL(" ").join(joins))

    @contextlib.contextmanager
    def _query_text(self) -> Iterator[str]:
        """The query as text (what ``to_sql`` shows); it reads the temporary table ``entity_rows``."""
        yield self._select([*map(str, self._entity_df.columns)]).as_string(None)

    def _read_part(self, entities: pa.Table) -> tuple[pa.Schema, pa.Table]:
        """The result's schema as the stock store derives it (from the Postgres types), and the row
        numbers and features of ``entities`` (in their order)."""
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(arrow_to_pg_type(str(f.type))))
            for f in entities.schema)
        with _get_conn(self.config.offline_store) as conn, conn.cursor() as cur:
            exact_session(cur)
            # Index probes are nested loops by nature; a role or database default that turns them
            # off (earlier versions of the platform did, for the stock SQL) must not apply here.
            cur.execute("SET enable_nestloop = on")
            cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(
                sql.Identifier(ENTITY_TABLE), columns))
            # Only what the probes read goes over the wire; the other columns stay null there.
            probed = {ROW, self._entity_time, *(key for probe in self._probes for _, key in probe.keys)}
            copy_in(cur, ENTITY_TABLE, entities.select([c for c in entities.column_names if c in probed]))
            cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ENTITY_TABLE)))
            cur.execute(sql.SQL("{} LIMIT 0").format(self._select(entities.column_names)))
            schema = pa.schema([(c.name, pg_type_code_to_arrow(c.type_code)) for c in cur.description or []])
            features = pa.schema([schema.field(ROW), *(schema.field(n) for n in schema.names[entities.num_columns:])])
            table = copy_out(cur, self._select([ROW]), features)
        order = table.column(ROW)
        if len(order) and not pc.all(pc.greater(order[1:], order[:-1])).as_py():
            table = table.take(pc.sort_indices(order))
        return schema, table.drop_columns([ROW])

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        entities = _entity_table(self._entity_df)
        settings = self.config.offline_store
        size = max(settings.reader_min_rows, -(-entities.num_rows // settings.readers))
        parts = [entities.slice(start, size) for start in range(0, max(entities.num_rows, 1), size)]
        with ThreadPoolExecutor(len(parts), thread_name_prefix="pit-reader") as pool:
            results = list(pool.map(self._read_part, parts))
        schema = results[0][0]
        features = pa.concat_tables([table for _, table in results])
        own = [pc.cast(entities.column(name), schema.field(name).type, safe=False) for name in self._entity_df.columns]
        return pa.Table.from_arrays([*own, *features.columns], schema=pa.schema(
            [*(schema.field(name) for name in self._entity_df.columns), *features.schema]))


class IndexedPostgreSQLOfflineStore(PostgreSQLOfflineStore):
    """The stock Postgres offline store with index-probing point-in-time retrieval and push (module docstring)."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig, feature_views: list[FeatureView], feature_refs: list[str],
        entity_df: pd.DataFrame | str | None, registry: BaseRegistry, project: str,
        full_feature_names: bool = False, filter_by_created_timestamp: bool = False, **kwargs: Any,
    ) -> RetrievalJob:
        def stock() -> RetrievalJob:
            return PostgreSQLOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names=full_feature_names, filter_by_created_timestamp=filter_by_created_timestamp,
                **kwargs)

        if not isinstance(entity_df, pd.DataFrame) or kwargs.get("start_date") or kwargs.get("end_date"):
            return stock()
        entity_schema = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
        entity_time = offline_utils.infer_event_timestamp_from_entity_df(entity_schema)
        offline_utils.assert_expected_columns_in_entity_df(
            entity_schema, offline_utils.get_expected_join_keys(project, feature_views, registry), entity_time)
        time_range = _get_entity_df_event_timestamp_range(entity_df, entity_time, config)
        contexts = offline_utils.get_feature_view_query_context(
            feature_refs, feature_views, registry, project, time_range)
        probes = _probes(contexts, feature_views, full_feature_names)
        if probes is None:
            return stock()
        with _get_conn(config.offline_store) as conn, conn.cursor() as cur:
            if not all(_tie_free(cur, probe) for probe in probes):
                return stock()
        return IndexedRetrievalJob(
            config, entity_df, probes, entity_time, filter_by_created_timestamp, full_feature_names,
            OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry),
            RetrievalMetadata(features=feature_refs, keys=list(entity_schema.keys() - {entity_time}),
                              min_event_timestamp=time_range[0], max_event_timestamp=time_range[1]))

    @staticmethod
    def offline_write_batch(config: RepoConfig, feature_view: FeatureView, table: pa.Table,
                            progress: Callable[[int], Any] | None) -> None:
        """Write pushed rows to the view's table: a row whose keys and timestamp exist replaces it.

        A real-time row can change without its timestamp moving (late events add to the counters
        of an entity whose latest event is already counted), so an existing row is updated, not
        duplicated; the unique index that makes point-in-time reads tie-free decides what
        "existing" means. Within one batch the last row of a key wins. Without such an index rows
        are appended.
        """
        target, schema = push_target(config, feature_view)
        if table.column_names != schema.names:
            raise ValueError(f"feature view {feature_view.name}: pushed columns {table.column_names} differ "
                             f"from the columns of {target}, {schema.names} (same names, same order)")
        with _get_conn(config.offline_store) as conn, conn.cursor() as cur:
            upsert_rows(cur, target, table.cast(schema))
        if progress:
            progress(len(table))
