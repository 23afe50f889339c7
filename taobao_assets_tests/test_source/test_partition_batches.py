"""The order in which the replay's batches reach the producer: contexts before the samples after them.

Pure logic: the producer is never started; its ``send_batch`` is replaced by a recorder, so what is
checked is only the order :class:`PartitionBatches` hands batches over in (what Kafka does with them
is the replay tests' business)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from taobao_assets.source.partition_batches import PartitionBatches

CONTEXTS, SAMPLES = "t.common_features", "t.samples"


async def _handed_order(records: list[tuple[str, bytes]], upstream: str | None) -> list[list[bytes]]:
    """Add ``records`` (topic, key); returns the keys of each batch in the order it was handed."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=1_000)
    handed: list[list[bytes]] = []
    keys: dict[int, list[bytes]] = {}

    async def send_batch(builder: object, topic: str, *, partition: int) -> asyncio.Future[None]:
        handed.append(keys.pop(id(builder)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    producer.send_batch = send_batch  # type: ignore[method-assign]
    batches = PartitionBatches(producer, {CONTEXTS: 1, SAMPLES: 1}, upstream=upstream)
    for topic, key in records:
        await batches.add(topic, key, b"x" * 300, 0, [])
        builder = batches._open[topic, 0]
        keys.setdefault(id(builder), []).append(key)
    await batches.hand_over()
    return handed


def _records() -> list[tuple[str, bytes]]:
    """A context, then samples enough to fill a batch (three 300-byte records fill 1,000 bytes)."""
    return [(CONTEXTS, b"c1"), *((SAMPLES, b"s%d" % i) for i in range(4))]


def test_a_full_batch_of_samples_goes_after_the_open_batch_of_contexts_before_it() -> None:
    order = asyncio.run(_handed_order(_records(), upstream=CONTEXTS))
    assert order == [[b"c1"], [b"s0", b"s1", b"s2"], [b"s3"]]


@pytest.mark.parametrize("upstream", [None, SAMPLES])
def test_without_contexts_upstream_the_samples_overtake_them(upstream: str | None) -> None:
    """The defect the ``upstream`` rule removes: the samples' full batch is handed first."""
    order = asyncio.run(_handed_order(_records(), upstream=upstream))
    assert order[0] == [b"s0", b"s1", b"s2"]
    assert [b"c1"] in order[1:]
