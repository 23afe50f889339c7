"""Redis: the Feast online store and the streaming path's state (counters + applied offsets)."""

from __future__ import annotations

import redis
from dagster import ConfigurableResource

from taobao_assets.settings import Settings


class RedisResource(ConfigurableResource):
    host: str
    port: int
    password: str
    db: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisResource:
        return cls(host=settings.redis_host, port=settings.redis_port, password=settings.redis_password)

    @property
    def connection_string(self) -> str:
        """Feast's Redis online-store connection string format."""
        return f"{self.host}:{self.port},password={self.password},db={self.db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.password, db=self.db)
