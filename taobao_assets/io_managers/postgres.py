"""Writes gold partitions to Postgres atomically: delete the day and insert the new rows in one transaction.

The rows never pass through this process: Spark's Python workers ``COPY`` each partition into an
unlogged staging table (:class:`~taobao_assets.postgres_arrow.PartitionCopier`), and one
transaction then replaces the day with the staging table's rows and drops it. The same
transaction computes the day's column statistics from the staging table and replaces the stored
ones (:mod:`taobao_assets.quality.stats`), so the stored statistics always describe the stored
day; they are also the output's numeric metadata.

The table is created from the contract in the asset's metadata (:mod:`taobao_assets.gold_tables`),
with a primary key on (entity keys, event_timestamp): it enforces uniqueness and is exactly the
index a point-in-time join needs (equality on the keys, range on the timestamp). Readers never see
a half-written day: the delete and the insert commit together.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taobao_assets import failpoints
from taobao_assets.feature_tables import PG_TYPES, TIMESTAMP_FIELD, FeatureTable
from taobao_assets.gold_tables import GoldTable
from taobao_assets.partitions import end_of_day
from taobao_assets.postgres_arrow import COPIED, PartitionCopier
from taobao_assets.quality.stats import stats_metadata, store_stats, table_stats
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.server_loss import on_server_loss

if TYPE_CHECKING:
    import pandas as pd

#: Where a day's rows wait, one unlogged table per gold table and day, until they replace the day.
STAGING_SCHEMA = "gold_staging"


def create_table_sql(table: FeatureTable) -> str:
    """The table of a contract, created if missing; one parameter: the table's comment."""
    columns = ",\n  ".join(
        f"{c.name} {PG_TYPES[c.dtype]}{' NOT NULL' if c in table.keys or c.name == TIMESTAMP_FIELD else ''}"
        for c in table.columns
    )
    primary_key = ", ".join([*table.key_names, TIMESTAMP_FIELD])
    return (
        f"CREATE SCHEMA IF NOT EXISTS {table.schema};\n"
        f"CREATE TABLE IF NOT EXISTS {table.qualified_name} (\n  {columns},\n  PRIMARY KEY ({primary_key})\n);\n"
        f"COMMENT ON TABLE {table.qualified_name} IS %s;"
    )


class PostgresPartitionIOManager(ConfigurableIOManager):
    postgres: PostgresResource

    @on_server_loss("minio", "postgres")
    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        table = GoldTable.from_metadata(context.definition_metadata)
        day = date.fromisoformat(context.partition_key)
        timestamp = end_of_day(context.partition_key)
        staging = f"{STAGING_SCHEMA}.{table.name}_{day:%Y%m%d}"
        names = [c.name for c in table.columns]
        columns = ", ".join(names)
        frame = obj.withColumn(TIMESTAMP_FIELD, F.lit(timestamp)).select(*names)
        with self.postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(create_table_sql(table), (table.description,))
            # A staging table a crashed write left behind is dropped, not appended to.
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGING_SCHEMA}; DROP TABLE IF EXISTS {staging}; "
                        f"CREATE UNLOGGED TABLE {staging} (LIKE {table.qualified_name})")
        # One Spark job computes the day and copies it, partition by partition; each returns its rows.
        copied = frame.mapInArrow(PartitionCopier(self.postgres.conninfo, staging), COPIED).collect()
        rows = sum(row.rows for row in copied)
        failpoints.reached("gold.rows_staged")
        with self.postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DELETE FROM {table.qualified_name} WHERE {TIMESTAMP_FIELD} = %s", (timestamp,))
            deleted = cur.rowcount
            # The primary key rejects a row a retried Spark task copied twice; the count, rows the
            # tasks did not report (another write of the same day into the same staging table).
            cur.execute(f"INSERT INTO {table.qualified_name} ({columns}) SELECT {columns} FROM {staging}")
            if cur.rowcount != rows:
                raise RuntimeError(f"{staging} holds {cur.rowcount} rows, Spark's tasks copied {rows} rows "
                                   f"of the day of {table.qualified_name}: nothing was replaced")
            started = time.perf_counter()
            stats = table_stats(cur, staging, table)
            store_stats(cur, table, day, stats)
            stats_seconds = time.perf_counter() - started
            cur.execute(f"DROP TABLE {staging}")
        context.add_output_metadata({
            "row_count": rows,
            "rows_replaced": deleted,
            "table": table.qualified_name,
            "event_timestamp": MetadataValue.timestamp(timestamp),
            **stats_metadata(stats),
            # What the statistics cost this write (the trust layer's overhead, bench/trust.py).
            "stats_seconds": stats_seconds,
        })
        failpoints.reached("gold.table_written")

    @on_server_loss("postgres")
    def load_input(self, context: InputContext) -> pd.DataFrame:
        """The rows of the requested day(s), as pandas (checks, tests, training sets)."""
        import pandas as pd  # imported here: reading gold back needs pandas, the batch runs writing it do not

        assert context.upstream_output is not None
        table = GoldTable.from_metadata(context.upstream_output.definition_metadata)
        window = context.asset_partitions_time_window
        params: dict[str, Any] = {"start": window.start + timedelta(days=1), "end": window.end + timedelta(days=1)}
        with self.postgres.connect() as conn:
            return pd.read_sql_query(
                f"SELECT * FROM {table.qualified_name} WHERE {TIMESTAMP_FIELD} >= %(start)s "
                f"AND {TIMESTAMP_FIELD} < %(end)s",
                conn, params=params,
            )
