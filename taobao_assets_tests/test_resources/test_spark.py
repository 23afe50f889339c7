"""Spark writes Iceberg tables to MinIO through the JDBC catalog in Postgres.

The tests use the suite's shared resource (``spark`` in conftest): a process holds one
SparkContext and the layer tests keep theirs open. The cluster path (a driver on ``spark://``,
Iceberg written from both workers) is ``test_assets/test_cluster.py``, on a real silver day.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date

import pytest
from dagster import asset, materialize
from pyspark.sql import DataFrame, SparkSession

from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.settings import Settings

NAMESPACE = "spark_test"
SCHEMA = "user_id BIGINT, item STRING, clicks INT, day DATE"
DAY1, DAY2, DAY3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
ROWS = [
    (1, "a", 0, DAY1), (2, "b", 1, DAY1),
    (1, "c", 2, DAY2), (3, "a", 0, DAY2),
    (2, "b", 5, DAY3),
]


@pytest.fixture(scope="module")
def session(spark: SparkResource, settings: Settings) -> SparkSession:
    spark_session: SparkSession = spark.spark_session
    spark_session.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.iceberg_catalog}.{NAMESPACE}")
    return spark_session


@pytest.fixture
def table(session: SparkSession, settings: Settings) -> Iterator[str]:
    """A fresh table name; afterwards the table is dropped and its files deleted from MinIO.

    Deleting the table's prefix takes a few requests; ``DROP TABLE ... PURGE`` would run Spark
    jobs over the manifests to find the same files, seconds per table.
    """
    name = f"events_{uuid.uuid4().hex[:8]}"
    yield f"{settings.iceberg_catalog}.{NAMESPACE}.{name}"
    session.sql(f"DROP TABLE IF EXISTS {settings.iceberg_catalog}.{NAMESPACE}.{name}")
    warehouse = settings.iceberg_warehouse.removeprefix(f"{settings.lake_uri}/")
    S3Resource.from_settings(settings).delete_prefix(f"{warehouse}/{NAMESPACE}/{name}/")


def _write_partitioned(session: SparkSession, table: str) -> DataFrame:
    frame = session.createDataFrame(ROWS, SCHEMA)
    frame.writeTo(table).partitionedBy(frame.day).create()
    return frame


def _rows(session: SparkSession, table: str) -> list[tuple[object, ...]]:
    return sorted(tuple(row) for row in session.table(table).collect())


def test_iceberg_table_round_trips_through_jdbc_catalog_on_minio(
    session: SparkSession, table: str, settings: Settings,
) -> None:
    _write_partitioned(session, table)

    assert _rows(session, table) == sorted(ROWS)
    assert session.table(table).schema == session.createDataFrame([], SCHEMA).schema
    partitions = {row.partition.day for row in session.table(f"{table}.partitions").collect()}
    assert partitions == {DAY1, DAY2, DAY3}
    _, namespace, name = table.split(".")
    with PostgresResource.from_settings(settings).connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT metadata_location FROM iceberg_tables "
            "WHERE catalog_name = %s AND table_namespace = %s AND table_name = %s",
            (settings.iceberg_catalog, namespace, name),
        )
        ((metadata_location,),) = cur.fetchall()
    assert metadata_location.startswith(f"{settings.iceberg_warehouse}/{namespace}/{name}/")


def test_overwrite_of_one_day_replaces_only_that_partition(session: SparkSession, table: str) -> None:
    _write_partitioned(session, table)
    rerun_of_day2 = [(7, "z", 9, DAY2)]

    session.createDataFrame(rerun_of_day2, SCHEMA).write.insertInto(table, overwrite=True)

    assert _rows(session, table) == sorted([r for r in ROWS if r[3] != DAY2] + rerun_of_day2)


def test_assets_get_the_session_through_the_dagster_resource(
    session: SparkSession, table: str, settings: Settings,
) -> None:
    @asset
    def events(pyspark: SparkResource) -> None:
        _write_partitioned(pyspark.spark_session, table)

    result = materialize([events], resources={"pyspark": SparkResource.from_settings(settings)})

    assert result.success
    assert _rows(session, table) == sorted(ROWS)
