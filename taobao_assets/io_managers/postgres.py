"""Writes gold partitions to Postgres atomically: delete the day, bulk COPY the new rows, one transaction.

The same transaction replaces the day's column statistics (:mod:`taobao_assets.quality.stats`),
taken from the rows being written, so the stored statistics always describe the stored day; they
are also the output's numeric metadata.

The table is created from the contract in the asset's metadata (:mod:`taobao_assets.gold_tables`),
with a primary key on (entity keys, event_timestamp): it enforces uniqueness and is exactly the
index a point-in-time join needs (equality on the keys, range on the timestamp). Readers never see
a half-written day: the delete and the COPY commit together.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pyarrow.csv as pa_csv
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taobao_assets import failpoints
from taobao_assets.feature_tables import PG_TYPES, TIMESTAMP_FIELD, FeatureTable
from taobao_assets.gold_tables import GoldTable
from taobao_assets.partitions import end_of_day
from taobao_assets.quality.stats import stats_metadata, store_stats, table_stats
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.server_loss import on_server_loss

if TYPE_CHECKING:
    import pandas as pd


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
        timestamp = end_of_day(context.partition_key)
        names = [c.name for c in table.columns]
        rows = obj.withColumn(TIMESTAMP_FIELD, F.lit(timestamp)).select(*names).toArrow()
        csv = BytesIO()
        pa_csv.write_csv(rows, csv, pa_csv.WriteOptions(include_header=False))
        csv.seek(0)
        started = time.perf_counter()
        stats = table_stats(rows, table)
        stats_seconds = time.perf_counter() - started
        with self.postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(create_table_sql(table), (table.description,))
            cur.execute(f"DELETE FROM {table.qualified_name} WHERE {TIMESTAMP_FIELD} = %s", (timestamp,))
            deleted = cur.rowcount
            cur.copy_expert(f"COPY {table.qualified_name} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv)", csv)
            started = time.perf_counter()
            store_stats(cur, table, date.fromisoformat(context.partition_key), stats)
            stats_seconds += time.perf_counter() - started
        context.add_output_metadata({
            "row_count": rows.num_rows,
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
