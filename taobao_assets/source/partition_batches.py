"""Records gathered into one batch per partition here and handed to aiokafka whole, for the replay.

Why not ``AIOKafkaProducer.send``: it costs, per record, a metadata check, a size estimate, a
partition lookup, a future and later that future's result and callbacks; profiled, that was most
of the replay's time and kept it at half the records/s of Kafka's Java producer (bench/replay.py).
Here a record costs one partition hash and one append to aiokafka's own ``BatchBuilder`` (the
same record format ``send`` writes), and a batch costs one future.

What stays as ``send`` would do it: the partition of a key is the one aiokafka's (and Java's)
default partitioner picks; records of a partition go out in the order they were added; the
producer's idempotence numbers every batch, so a retried batch is never written twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata


@dataclass(frozen=True, slots=True)
class Delivery:
    """A batch handed to the producer: its partition, its record count and its acknowledgement."""

    topic: str
    partition: int
    records: int
    acknowledged: asyncio.Future[RecordMetadata]

    async def end_offset(self) -> int:
        """Wait for the acknowledgement; the offset after the batch's last record."""
        return (await self.acknowledged).offset + self.records


class PartitionBatches:
    """Open batches per (topic, partition) of one producer; ``partitions`` gives each topic's count.

    ``upstream`` names a topic whose records others depend on (the replay's common-features rows,
    which the samples after them need): every open batch of it is handed over before a batch of
    another topic, so no record reaches Kafka before an upstream record added earlier. Without it a
    full batch of samples would go out at once while the contexts it needs waited in a batch still
    filling, and a consumer at the end of the stream would find the samples' users unknown.
    """

    def __init__(self, producer: AIOKafkaProducer, partitions: Mapping[str, int], upstream: str | None = None
                 ) -> None:
        self._producer = producer
        self._upstream = upstream
        self._partition_ids = {topic: list(range(count)) for topic, count in partitions.items()}
        self._partitioner = DefaultPartitioner()
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._handed: list[Delivery] = []

    async def add(self, topic: str, key: bytes, value: bytes, timestamp_ms: int,
                  headers: Sequence[tuple[str, bytes]]) -> None:
        """Add a record to its partition's open batch; a full batch is handed over first."""
        partition = self._partitioner(key, self._partition_ids[topic], None)
        builder = self._open.get((topic, partition))
        if builder is None:
            builder = self._open[topic, partition] = self._producer.create_batch()
        if builder.append(timestamp=timestamp_ms, key=key, value=value, headers=headers) is None:
            if topic != self._upstream:
                await self._hand_upstream()
            await self._hand(topic, partition, builder)
            builder = self._open[topic, partition] = self._producer.create_batch()
            # An empty batch takes any record; one larger than a request fails at the broker, loudly.
            builder.append(timestamp=timestamp_ms, key=key, value=value, headers=headers)

    async def hand_over(self) -> None:
        """Hand every open batch to the producer, which sends it without waiting for more."""
        await self._hand_upstream()
        for (topic, partition), builder in self._open.items():
            await self._hand(topic, partition, builder)
        self._open.clear()

    async def _hand_upstream(self) -> None:
        for topic, partition in [key for key in self._open if key[0] == self._upstream]:
            await self._hand(topic, partition, self._open.pop((topic, partition)))

    def handed(self) -> list[Delivery]:
        """The batches handed over since the last call, in order."""
        handed, self._handed = self._handed, []
        return handed

    async def _hand(self, topic: str, partition: int, builder: BatchBuilder) -> None:
        # A closed batch is ready at once: the producer's linger is for batches still filling.
        builder.close()
        acknowledged = await self._producer.send_batch(builder, topic, partition=partition)
        self._handed.append(Delivery(topic, partition, builder.record_count(), acknowledged))
