"""Redis: the Feast online store and the streaming path's state (counters + applied offsets)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import redis
from dagster import ConfigurableResource
from pydantic import Field

from taobao_assets.settings import Settings


class RedisResource(ConfigurableResource):
    host: str
    port: int
    password: str = Field(repr=False)
    db: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisResource:
        return cls(host=settings.redis_host, port=settings.redis_port, password=settings.redis_password)

    @property
    def connection_string(self) -> str:
        """Feast's Redis online-store connection string: ``host:port,key=value,...``.

        Feast splits it on commas, then reads each value as JSON when it can: the password goes in
        as a JSON string, so one that looks like a number or ``true`` stays the text it is. A comma
        cannot be carried at all, so a password with one is refused here rather than cut in two.
        """
        if "," in self.password:
            raise ValueError("the Redis password holds a comma, which Feast's Redis connection string cannot "
                             "carry: set TFP_REDIS_PASSWORD to one without (and the server's, `make up`)")
        return f"{self.host}:{self.port},password={json.dumps(self.password)},db={self.db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.password, db=self.db)


#: Keys asked for per ``SCAN`` call and deleted per ``UNLINK``: ``SCAN``'s default of 10 made clearing
#: a project on a server holding millions of other keys take minutes of round trips.
SCAN_BATCH = 10_000


def scan_batches(client: redis.Redis, pattern: bytes | str) -> Iterator[list[bytes]]:
    """The keys matching the ``SCAN`` glob ``pattern``, in lists of up to ``SCAN_BATCH``."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=SCAN_BATCH):
        batch.append(key)
        if len(batch) == SCAN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def unlink_matching(client: redis.Redis, pattern: bytes | str) -> int:
    """Delete every key matching the ``SCAN`` glob ``pattern`` (``UNLINK``: freed in the background);
    returns how many there were. A key deleted during the scan is at most returned twice by it."""
    deleted = 0
    for batch in scan_batches(client, pattern):
        deleted += int(client.unlink(*batch))  # type: ignore[arg-type]
    return deleted
