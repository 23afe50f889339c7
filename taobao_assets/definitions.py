"""The table of contents of the Dagster project: assets, checks, jobs, sensors and resources."""

from __future__ import annotations

from dagster import Definitions

from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource
from taobao_assets.settings import get_settings

settings = get_settings()

defs = Definitions(
    resources={
        "postgres": PostgresResource.from_settings(settings),
        "redis": RedisResource.from_settings(settings),
    },
)
