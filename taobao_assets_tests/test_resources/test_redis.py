from __future__ import annotations

import uuid

import pytest
import redis

from deploy.service import Service
from taobao_assets.resources.redis import RedisResource
from taobao_assets.settings import Settings


def test_redis_round_trips_a_key(settings: Settings, redis_service: Service) -> None:
    client = RedisResource.from_settings(settings).client()
    key = f"test:{uuid.uuid4().hex}"
    payload = bytes(range(256)) * 100
    client.set(key, payload, ex=60)
    try:
        assert client.get(key) == payload
    finally:
        client.delete(key)


def test_redis_requires_the_generated_password(settings: Settings, redis_service: Service) -> None:
    anonymous = redis.Redis(host=settings.redis_host, port=settings.redis_port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
