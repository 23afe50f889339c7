"""The table of contents of the Dagster project: assets, checks, jobs, sensors and resources.

Nothing happens when this module is imported. Dagster calls :func:`defs` when it loads the code
location (the webserver, the daemon, every run process), and only then are the settings read
and the definitions built: the daily partitions and the topic names come from the settings, so
they are made by :func:`build_definitions`, never frozen at import, and a test builds its own
from its own settings. Resources connect to nothing until a step uses them; the Spark resource
resolves its jars when its first session starts.

Secrets reach the resources as ``EnvVar``: Dagster reads them when a run starts and never shows
them in the UI. Passwords the platform generated (``.state/credentials.json``) are put into this
process's environment under their ``TFP_*`` names first, so those variables always exist.

Runs use the in-process executor: the steps of a run share one process and so one Spark session.
Dagster's default (a process per step) would start a Spark driver for every silver and gold step
and check, seconds each and ~1 GB apiece; the parallelism of this workload is Spark's, not the
step graph's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from dagster import Definitions, EnvVar, definitions, in_process_executor

from taobao_assets.assets.analytics import analytics_assets
from taobao_assets.assets.bronze import bronze_assets, kafka_topics
from taobao_assets.assets.gold import gold_assets
from taobao_assets.assets.quality import quality_assets
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
    bronze_job,
    daily_batch_job,
    daily_batch_schedule,
    daily_serving_job,
    feast_apply_job,
    replay_job,
    streaming_consistency_job,
    streaming_job,
)
from taobao_assets.known_warnings import accept_known_warnings
from taobao_assets.partitions import daily_partitions
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.resources.trino import TrinoResource
from taobao_assets.sensors import sensors
from taobao_assets.settings import ENV_PREFIX, GENERATED_SECRETS, Settings, get_settings
from taobao_assets.source.topics import RawTopics
from taobao_assets.streaming.resource import StreamingResource


def secrets_from_environment(settings: Settings) -> Settings:
    """``settings`` with each secret replaced by an ``EnvVar`` of its ``TFP_*`` variable.

    The variables of generated passwords are set in this process first (run processes and the
    daemon's children inherit them), so every ``EnvVar`` resolves.
    """
    replaced: dict[str, Any] = {}
    for name in GENERATED_SECRETS:
        variable = ENV_PREFIX + name.upper()
        os.environ.setdefault(variable, getattr(settings, name))
        replaced[name] = EnvVar(variable)
    return dataclasses.replace(settings, **replaced)


def build_resources(settings: Settings) -> dict[str, Any]:
    """Every resource of the code location, keyed as the assets ask for them."""
    s3 = S3Resource.from_settings(settings)
    spark = SparkResource.from_settings(settings)
    postgres = PostgresResource.from_settings(settings)
    return {
        "postgres": postgres,
        "redis": RedisResource.from_settings(settings),
        "kafka": KafkaResource.from_settings(settings),
        "s3": s3,
        "spark": spark,
        "bronze_io_manager": BronzeIOManager(s3=s3),
        "silver_io_manager": IcebergIOManager.from_settings(settings, spark),
        "gold_io_manager": PostgresPartitionIOManager(postgres=postgres),
        "feast": FeastResource.from_settings(settings),
        "streaming": StreamingResource.from_settings(settings),
        "trino": TrinoResource.from_settings(settings),
    }


def build_definitions(settings: Settings) -> Definitions:
    """The whole code location for ``settings``: its days, its topics, its servers."""
    accept_known_warnings()
    daily = daily_partitions(settings)
    topics = RawTopics.of(settings.topic_prefix)
    return Definitions(
        assets=[*kafka_topics(topics), *bronze_assets(daily, topics), *silver_assets(daily), *gold_assets(daily),
                *serving_assets(daily), *analytics_assets(daily), *quality_assets(daily)],
        asset_checks=[*bronze_checks(daily, topics), *silver_checks(daily, topics), *gold_checks(daily),
                      *serving_checks(daily), *analytics_checks(daily)],
        jobs=[replay_job, bronze_job, daily_batch_job, feast_apply_job, daily_serving_job, streaming_job,
              streaming_consistency_job],
        schedules=[daily_batch_schedule],
        sensors=sensors,
        executor=in_process_executor,
        resources=build_resources(secrets_from_environment(settings)),
    )


@definitions
def defs() -> Definitions:
    """The code location Dagster loads (``[tool.dagster]`` in pyproject.toml, ``workspace.yaml``)."""
    return build_definitions(get_settings())
