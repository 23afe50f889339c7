"""Fixtures that start (or reuse) the real local stack.

``make test`` brings the whole stack up before pytest; these fixtures make a single test file
runnable on its own too, by starting just the services it needs through the stack manager.
Nothing here fakes a server.
"""

from __future__ import annotations

import pytest

from deploy.service import Service
from deploy.services import SERVICES
from taobao_assets.settings import Settings, get_settings


def ensure_running(name: str, settings: Settings) -> Service:
    """Start ``name`` through the stack manager unless it is already healthy."""
    (cls,) = [c for c in SERVICES if c.name == name]
    service = cls(settings)
    if not (service.pid() is not None and service.healthy()):
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
