"""Fixtures that start (or reuse) the real local stack.

``make test`` brings the whole stack up before pytest; these fixtures make a single test file
runnable on its own too, by starting just the services it needs through the stack manager.
Nothing here fakes a server.
"""

from __future__ import annotations

import os

import pytest

# Tests get their own topics, bucket and database on the shared servers, so running them never
# touches a demo's data. Set before anything reads the settings.
os.environ.setdefault("TFP_TOPIC_PREFIX", "test.aliccp")
os.environ.setdefault("TFP_LAKE_BUCKET", "lake-test")
os.environ.setdefault("TFP_POSTGRES_DB", "tfp_test")
os.environ.setdefault("TFP_EVENT_DAYS", "5")

from deploy.service import Service
from deploy.services import SERVICES
from taobao_assets.settings import Settings, get_settings


def ensure_running(name: str, settings: Settings) -> Service:
    """Start ``name`` through the stack manager (a no-op health check when it already runs).

    ``start`` also runs the service's idempotent set-up, which creates the tests' own bucket and
    database on a stack that ``make up`` started with the default settings.
    """
    (cls,) = [c for c in SERVICES if c.name == name]
    service = cls(settings)
    service.start()
    return service


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def postgres_service(settings: Settings) -> Service:
    return ensure_running("postgres", settings)


@pytest.fixture(scope="session")
def redis_service(settings: Settings) -> Service:
    return ensure_running("redis", settings)


@pytest.fixture(scope="session")
def kafka_service(settings: Settings) -> Service:
    return ensure_running("kafka", settings)


@pytest.fixture(scope="session")
def minio_service(settings: Settings) -> Service:
    return ensure_running("minio", settings)


@pytest.fixture(scope="session")
def trino_service(settings: Settings, postgres_service: Service, minio_service: Service) -> Service:
    return ensure_running("trino", settings)
