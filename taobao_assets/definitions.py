"""The table of contents of the Dagster project: assets, checks, jobs, sensors and resources."""

from __future__ import annotations

from dagster import Definitions

from taobao_assets.assets.bronze import bronze_assets, kafka_topics
from taobao_assets.checks.bronze import bronze_checks
from taobao_assets.io_managers.bronze import BronzeIOManager
from taobao_assets.jobs import bronze_job, replay_job
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import get_settings

settings = get_settings()
s3 = S3Resource.from_settings(settings)

defs = Definitions(
    assets=[*kafka_topics, *bronze_assets],
    asset_checks=bronze_checks,
    jobs=[replay_job, bronze_job],
    resources={
        "postgres": PostgresResource.from_settings(settings),
        "redis": RedisResource.from_settings(settings),
        "kafka": KafkaResource.from_settings(settings),
        "s3": s3,
        "bronze_io_manager": BronzeIOManager(s3=s3),
    },
)
