"""Kafka clients without Dagster: what the replay CLI, the streaming follower and the Dagster
resource share.

Clients are aiokafka's, handed out as async context managers so a client is always stopped (its
connections and background tasks closed) even when the body fails. Dagster sensors are plain
functions: they call ``asyncio.run(kafka.end_offsets(topic))``. This module imports no Dagster:
a command-line replay starts in a fraction of a second (importing Dagster alone takes ~0.5 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from taobao_assets.settings import KAFKA_SASL_MECHANISM, Settings


@dataclass(frozen=True)
class TopicSpec:
    """What a topic must look like: ``config`` holds topic-level settings (``cleanup.policy``...)."""

    name: str
    partitions: int = 3
    config: Mapping[str, str] = field(default_factory=dict)


class KafkaClients:
    """The client methods, for any class with the connection attributes below (the plain
    :class:`KafkaClient` and the Dagster resource)."""

    bootstrap_servers: str
    username: str
    password: str
    client_id: str
    #: 1 on the local single broker; a cluster sets it to its broker count (at most 3).
    replication_factor: int

    @asynccontextmanager
    async def producer(self, **options: Any) -> AsyncIterator[AIOKafkaProducer]:
        """A started producer; ``options`` override the defaults (any AIOKafkaProducer argument).

        Idempotence with ``acks=all`` is the default so a retried send never writes a record twice;
        a 5 ms linger lets the replay fill batches instead of sending one request per record.
        """
        config: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5, **options}
        producer = AIOKafkaProducer(**self.connection_options(), **config)
        await producer.start()
        try:
            yield producer
        finally:
            await producer.stop()

    @asynccontextmanager
    async def consumer(self, *topics: str, **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
        """A started consumer, subscribed to ``topics`` if given (else ``assign`` partitions yourself).

        Auto-commit is off by default: the streaming path stores the offsets it applied together
        with the state it produced, so a commit made behind its back could lose records.
        """
        config: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest", **options}
        consumer = AIOKafkaConsumer(*topics, **self.connection_options(), **config)
        await consumer.start()
        try:
            yield consumer
        finally:
            await consumer.stop()

    def connection_options(self) -> dict[str, Any]:
        """Where the broker is and how to sign in: SASL/SCRAM, the only way the broker lets a client in."""
        return {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id,
                "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": KAFKA_SASL_MECHANISM,
                "sasl_plain_username": self.username, "sasl_plain_password": self.password}

    @asynccontextmanager
    async def _admin(self) -> AsyncIterator[AIOKafkaAdminClient]:
        admin = AIOKafkaAdminClient(**self.connection_options())
        await admin.start()
        try:
            yield admin
        finally:
            await admin.close()

    @staticmethod
    async def _ready_topics(admin: AIOKafkaAdminClient) -> dict[str, list[int]]:
        """Partition ids of each topic whose partitions all have a leader.

        All topics are listed rather than named ones: on a cluster with auto-creation on, asking
        for a named topic's metadata would create it.
        """
        return {
            t["topic"]: sorted(p["partition"] for p in t["partitions"])
            for t in await admin.describe_topics()
            if t["error_code"] == 0 and all(p["leader"] >= 0 for p in t["partitions"])
        }

    async def create_topics(self, specs: Sequence[TopicSpec], timeout_s: float = 30.0) -> list[str]:
        """Create the topics that do not exist yet, wait until they are usable, return their names.

        Existing topics are kept. One with another partition count is an error: records are
        partitioned by key, and silently using a differently partitioned topic would change
        which consumer sees which key.
        """
        async with self._admin() as admin:
            existing = {name: len(parts) for name, parts in (await self._ready_topics(admin)).items()}
            for spec in specs:
                if spec.name in existing and existing[spec.name] != spec.partitions:
                    raise ValueError(
                        f"Kafka topic {spec.name!r} on {self.bootstrap_servers} has "
                        f"{existing[spec.name]} partitions, {spec.partitions} wanted; delete it or "
                        f"change the spec"
                    )
            missing = [s for s in specs if s.name not in existing]
            if not missing:
                return []
            response = await admin.create_topics([
                NewTopic(s.name, s.partitions, self.replication_factor, topic_configs=dict(s.config))
                for s in missing
            ])
            for topic, code, *message in response.topic_errors:
                error = for_code(code)
                # Someone else creating it between our listing and our request is fine too.
                if code != 0 and error is not TopicAlreadyExistsError:
                    raise error(f"creating Kafka topic {topic!r} failed: {message[0] if message else ''}")
            # The controller answers once the topic is committed; the brokers learn of it a moment
            # later, and a caller producing right away should not have to know that.
            async with asyncio.timeout(timeout_s):
                while not {s.name for s in missing} <= (await self._ready_topics(admin)).keys():
                    await asyncio.sleep(0.05)
        return [s.name for s in missing]

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Offset of the next record to be written, per partition, asked of the broker (no poll)."""
        async with self._admin() as admin:
            partitions = (await self._ready_topics(admin)).get(topic)
        if partitions is None:
            raise ValueError(
                f"Kafka topic {topic!r} does not exist (or has a partition without leader) on "
                f"{self.bootstrap_servers}; create it with create_topics"
            )
        async with self.consumer() as consumer:
            offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in offsets.items()}

    async def offsets_at(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose record timestamp is >= ``timestamp_ms``.

        A partition with no such record answers its end offset, so ``offsets_at(t1)`` minus
        ``offsets_at(t0)`` is exactly the records of ``[t0, t1)`` when timestamps never decrease
        along a partition (which the replay guarantees).
        """
        end = await self.end_offsets(topic)
        async with self.consumer() as consumer:
            found = await consumer.offsets_for_times({TopicPartition(topic, p): timestamp_ms for p in end})
        return {tp.partition: end[tp.partition] if at is None else at.offset for tp, at in found.items()}

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> AsyncIterator[Any]:
        """The records of ``topic``/``partition`` with offsets in ``[start, end)``, in offset order."""
        if end <= start:
            return
        tp = TopicPartition(topic, partition)
        async with self.consumer(max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20) as consumer:
            consumer.assign([tp])
            consumer.seek(tp, start)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=5000, max_records=10_000)
                if not batch:
                    raise TimeoutError(
                        f"Kafka {topic}[{partition}] returned nothing for 5 s while reading offsets "
                        f"[{start}, {end}); is the broker {self.bootstrap_servers} healthy?"
                    )
                for record in batch.get(tp, []):
                    if record.offset >= end:
                        return
                    yield record
                    if record.offset + 1 >= end:
                        return

    async def delete_topics(self, names: Sequence[str], timeout_s: float = 30.0) -> None:
        """Delete the topics among ``names`` that exist and wait until the brokers forgot them."""
        async with self._admin() as admin:
            existing = [n for n in names if n in await self._ready_topics(admin)]
            if not existing:
                return
            await admin.delete_topics(existing)
            async with asyncio.timeout(timeout_s):
                while set(existing) & (await self._ready_topics(admin)).keys():
                    await asyncio.sleep(0.1)


@dataclass(frozen=True)
class KafkaClient(KafkaClients):
    """The Kafka clients of a command-line tool: the connection settings, no Dagster."""

    bootstrap_servers: str
    username: str
    password: str = field(repr=False)
    client_id: str = "taobao-feature-platform"
    replication_factor: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaClient:
        return cls(bootstrap_servers=settings.kafka_bootstrap_servers, username=settings.kafka_user,
                   password=settings.kafka_password)
