"""Stores Spark DataFrames as day-partitioned Iceberg tables in the lakehouse catalog (silver).

Asset key ``["silver", "impressions"]`` is table ``<catalog>.silver.impressions``. An output
replaces exactly the days of its partition (or partition range): ``writeTo(...).overwrite`` with a
filter on ``day`` rather than ``overwritePartitions()``, because dynamic overwrite replaces only
the days that appear in the new rows, so a re-run that finds no rows for a day (e.g. no
quarantined line any more) would leave the old rows of that day in place. The overwrite is one
Iceberg commit: readers see the old day or the new day, never a mix.

The table and its namespace are created on first write, partitioned by ``day``. If the output
declares its columns (``dagster/column_schema``, see :func:`table_schema`), the DataFrame must
have exactly those names and types, checked before anything is written so a drifted transform
fails with a clear message instead of writing a table that no longer matches its contract.

An input is the upstream table restricted to the days of the requested partition or time window,
so a downstream asset with a 7-day ``TimeWindowPartitionMapping`` receives those seven days, and
an unpartitioned one receives the whole table.
"""

from __future__ import annotations

from datetime import date, timedelta

from dagster import (
    AssetKey,
    ConfigurableIOManager,
    InputContext,
    OutputContext,
    TableColumn,
    TableSchema,
    TableSchemaMetadataValue,
)
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from taobao_assets import failpoints
from taobao_assets.resources.spark import SparkResource
from taobao_assets.server_loss import on_server_loss
from taobao_assets.settings import Settings

PARTITION_COLUMN = "day"
COLUMN_SCHEMA_KEY = "dagster/column_schema"


def table_name(catalog: str, key: AssetKey) -> str:
    """``catalog.namespace.table`` of an asset key ``[namespace, table]``."""
    if len(key.path) != 2:
        raise ValueError(
            f"asset {key.to_user_string()} cannot be an Iceberg table: the Iceberg IO manager maps keys "
            f"of exactly two parts, [namespace, table], to {catalog}.<namespace>.<table>"
        )
    return ".".join([catalog, *key.path])


def table_schema(schema: StructType, descriptions: dict[str, str] | None = None) -> TableSchema:
    """A Spark schema as Dagster column metadata; types are Spark's (``bigint``, ``array<...>``)."""
    descriptions = descriptions or {}
    return TableSchema(columns=[
        TableColumn(f.name, f.dataType.simpleString(), descriptions.get(f.name)) for f in schema.fields
    ])


def schema_columns(schema: StructType) -> list[tuple[str, str]]:
    """(name, type) of each column: what the contract fixes (nullability is left to the checks)."""
    return [(f.name, f.dataType.simpleString()) for f in schema.fields]


def days_filter(first: date, last: date) -> Column:
    """Rows whose ``day`` is in ``[first, last]``."""
    return F.col(PARTITION_COLUMN).between(F.lit(first), F.lit(last))


class IcebergIOManager(ConfigurableIOManager):
    """Day-partitioned Iceberg tables of the shared catalog, written and read with Spark."""

    spark: SparkResource
    catalog: str

    @classmethod
    def from_settings(cls, settings: Settings, spark: SparkResource) -> IcebergIOManager:
        return cls(spark=spark, catalog=settings.iceberg_catalog)

    @on_server_loss("minio", "postgres")
    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        table = table_name(self.catalog, context.asset_key)
        declared = context.definition_metadata.get(COLUMN_SCHEMA_KEY)
        if isinstance(declared, TableSchemaMetadataValue):  # how a run passes it; tests may pass the schema
            declared = declared.schema
        if isinstance(declared, TableSchema):
            _require_columns(table, obj.schema, declared)
        session = obj.sparkSession
        self._ensure_table(session, table, obj.schema)
        span = _days(context)
        days = F.lit(True) if span is None else days_filter(*span)
        where = "all days" if span is None else f"{span[0]} .. {span[1]}"
        context.log.info(f"writing {table} ({where})")
        obj.writeTo(table).overwrite(days)
        row_count = session.table(table).where(days).count()
        context.log.info(f"{table} ({where}): {row_count:,} rows")
        context.add_output_metadata({
            "row_count": row_count,
            "dagster/row_count": row_count,
            "table": table,
            "dagster/table_name": table,
            "days": where,
        })
        failpoints.reached("silver.table_written")

    @on_server_loss("minio", "postgres")
    def load_input(self, context: InputContext) -> DataFrame:
        table = table_name(self.catalog, context.asset_key)
        session = self.spark.spark_session
        if not session.catalog.tableExists(table):
            raise FileNotFoundError(
                f"Iceberg table {table} does not exist yet: materialize {context.asset_key.to_user_string()} "
                f"(at least one partition) before the assets that read it"
            )
        span = _days(context)
        frame = session.table(table)
        return frame if span is None else frame.where(days_filter(*span))

    @staticmethod
    def _ensure_table(session: SparkSession, table: str, schema: StructType) -> None:
        if session.catalog.tableExists(table):
            return
        namespace = table.rsplit(".", 1)[0]
        session.sql(f"CREATE NAMESPACE IF NOT EXISTS {namespace}")
        try:
            (session.createDataFrame([], schema).writeTo(table).using("iceberg")
             .partitionedBy(F.col(PARTITION_COLUMN)).create())
        except AnalysisException as error:
            # Another run (another day of a backfill) created it between the check and here.
            if error.getCondition() != "TABLE_OR_VIEW_ALREADY_EXISTS":
                raise


def _days(context: InputContext | OutputContext) -> tuple[date, date] | None:
    """First and last day of the context's partition or partition range (None: not partitioned)."""
    if not context.has_asset_partitions:
        return None
    window = context.asset_partitions_time_window
    # A daily window ends at the exclusive midnight after its last day.
    return window.start.date(), window.end.date() - timedelta(days=1)


def _require_columns(table: str, schema: StructType, declared: TableSchema) -> None:
    got = schema_columns(schema)
    want = [(c.name, c.type) for c in declared.columns]
    if got != want:
        missing = [c for c in want if c not in got]
        unexpected = [c for c in got if c not in want]
        raise ValueError(
            f"the DataFrame for {table} does not match its declared columns: missing {missing}, "
            f"unexpected {unexpected}"
            + ("" if missing or unexpected else " (same columns, different order)")
            + "; fix the transform or the declared schema (dagster/column_schema of the asset)"
        )
