"""One silver partition on the stack's Spark standalone cluster (a master and two workers).

The layer tests run Spark in ``local[*]``; this test proves the cluster path of the same asset:
the driver connects to ``spark://`` (only the master URL setting changes), the executors on both
workers run the Python parser inside ``mapInArrow``, and the day it rewrites is identical to what
the local run wrote (a partition re-run replaces that day with the same rows). The driver runs in
a fresh interpreter because this process already holds the suite's local SparkContext.
"""

from __future__ import annotations

import dataclasses

from dagster import ExecuteInProcessResult

from deploy.services.spark import Spark
from taobao_assets.assets.silver import IMPRESSIONS_KEY, SCHEMAS
from taobao_assets.io_managers.iceberg import table_name
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.settings import Settings
from taobao_assets_tests.conftest import (
    DAILY,
    busy_workers,
    in_fresh_interpreter,
    materialize_silver,
    silver_digest,
    silver_resources,
)


def _silver_day_on_cluster(settings: Settings, day: str) -> tuple[bool, int, list[str]]:
    """Materialize silver of ``day`` from a driver on the cluster: success, busy workers, failed checks."""
    spark = SparkResource.from_settings(settings)
    spark.spark_session  # noqa: B018 - starts the driver; the master then gives it an executor per worker
    try:
        busy = busy_workers(Spark(settings))
        result = materialize_silver(day, silver_resources(settings, spark, S3Resource.from_settings(settings)))
        return result.success, busy, [str(e.asset_check_key) for e in result.get_asset_check_evaluations()
                                      if not e.passed]
    finally:
        spark.spark_session.stop()


def _snapshots(spark: SparkResource, settings: Settings) -> dict[str, int]:
    """The current snapshot id of each silver table."""
    snapshots = {}
    for key in SCHEMAS:
        name = table_name(settings.iceberg_catalog, key)
        row = spark.spark_session.sql(f"SELECT snapshot_id FROM {name}.snapshots ORDER BY committed_at DESC").first()
        snapshots[name] = row[0] if row else 0
    return snapshots


def test_one_silver_partition_runs_on_both_workers_of_the_standalone_cluster(
    silver: dict[str, ExecuteInProcessResult], cluster: Spark, spark: SparkResource, settings: Settings,
) -> None:
    day = DAILY.get_partition_keys()[2]
    local_rows, local_snapshots = silver_digest(spark, settings, day), _snapshots(spark, settings)
    on_cluster = dataclasses.replace(settings, spark_master=cluster.master_url)

    success, workers, failed_checks = in_fresh_interpreter(_silver_day_on_cluster, on_cluster, day)

    assert success and not failed_checks, failed_checks
    assert workers == settings.spark_standalone_workers == 2
    cluster_rows, cluster_snapshots = silver_digest(spark, settings, day), _snapshots(spark, settings)
    assert all(cluster_snapshots[t] != local_snapshots[t] for t in local_snapshots), "the cluster run wrote no day"
    assert cluster_rows == local_rows
    assert cluster_rows[table_name(settings.iceberg_catalog, IMPRESSIONS_KEY)][0] > 0
