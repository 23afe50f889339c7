"""The table of contents of the Dagster project: assets, checks, jobs, sensors and resources.

Runs use the in-process executor: the steps of a run share one process and so one Spark session.
Dagster's default (a process per step) would start a Spark driver for every silver and gold step
and check, seconds each and ~1 GB apiece; the parallelism of this workload is Spark's, not the
step graph's.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from taobao_assets.assets.analytics import analytics_assets
from taobao_assets.assets.bronze import bronze_assets, kafka_topics
from taobao_assets.assets.gold import gold_features
from taobao_assets.assets.serving import serving_assets
from taobao_assets.assets.silver import silver_assets
from taobao_assets.checks.analytics import analytics_checks
from taobao_assets.checks.bronze import bronze_checks
from taobao_assets.checks.gold import gold_checks
from taobao_assets.checks.serving import serving_checks
from taobao_assets.checks.silver import silver_checks
from taobao_assets.io_managers.bronze import BronzeIOManager
from taobao_assets.io_managers.iceberg import IcebergIOManager
from taobao_assets.io_managers.postgres import PostgresPartitionIOManager
from taobao_assets.jobs import (
    batch_job,
    bronze_job,
    daily_batch_schedule,
    registry_job,
    replay_job,
    serving_job,
    streaming_job,
)
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.resources.trino import TrinoResource
from taobao_assets.sensors import sensors
from taobao_assets.settings import get_settings
from taobao_assets.streaming.resource import StreamingResource

settings = get_settings()
s3 = S3Resource.from_settings(settings)
spark = SparkResource.from_settings(settings)
postgres = PostgresResource.from_settings(settings)

defs = Definitions(
    assets=[*kafka_topics, *bronze_assets, *silver_assets, gold_features, *serving_assets, *analytics_assets],
    asset_checks=[*bronze_checks, *silver_checks, *gold_checks, *serving_checks, *analytics_checks],
    jobs=[replay_job, bronze_job, batch_job, registry_job, serving_job, streaming_job],
    schedules=[daily_batch_schedule],
    sensors=sensors,
    executor=in_process_executor,
    resources={
        "postgres": postgres,
        "redis": RedisResource.from_settings(settings),
        "kafka": KafkaResource.from_settings(settings),
        "s3": s3,
        "spark": spark,
        "bronze_io_manager": BronzeIOManager(s3=s3),
        "iceberg_io_manager": IcebergIOManager.from_settings(settings, spark),
        "gold_io_manager": PostgresPartitionIOManager(postgres=postgres),
        "feast": FeastResource.from_settings(settings),
        "streaming": StreamingResource.from_settings(settings),
        "trino": TrinoResource.from_settings(settings),
    },
)
