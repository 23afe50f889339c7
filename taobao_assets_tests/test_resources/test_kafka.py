from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from deploy.service import Service
from deploy.services.kafka import Kafka
from taobao_assets.resources.kafka import KafkaResource, TopicSpec
from taobao_assets.resources.kafka_client import KafkaClient
from taobao_assets.settings import REPO_ROOT, Settings

# The topic is kept between runs (no deletion needed): each test reads only what it wrote,
# located by the end offsets taken before writing.
TOPIC = TopicSpec("tfp.test.roundtrip", partitions=3, config={"cleanup.policy": "compact"})
EVENT_TIME_MS = 1_514_764_800_000  # 2018-01-01: simulated event times lie far in the past


@dataclass(frozen=True)
class Sent:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


async def _topic_config_then_delete(kafka: KafkaResource, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(**kafka.connection_options())
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    (resource,) = response.resources
    return {name: value for name, value, *_ in resource[4]}


def test_create_topics_is_idempotent_and_applies_topic_config(
    settings: Settings, kafka_service: Service
) -> None:
    kafka = KafkaResource.from_settings(settings)
    fresh = TopicSpec(f"tfp.test.create-{uuid.uuid4().hex[:8]}", partitions=2,
                      config={"cleanup.policy": "compact"})

    assert asyncio.run(kafka.create_topics([fresh])) == [fresh.name]
    assert asyncio.run(kafka.create_topics([fresh])) == []
    assert asyncio.run(kafka.end_offsets(fresh.name)) == {0: 0, 1: 0}
    assert asyncio.run(_topic_config_then_delete(kafka, fresh.name))["cleanup.policy"] == "compact"


def test_create_topics_rejects_an_existing_topic_with_other_partitioning(
    settings: Settings, kafka_service: Service
) -> None:
    kafka = KafkaResource.from_settings(settings)
    asyncio.run(kafka.create_topics([TOPIC]))
    with pytest.raises(ValueError, match="has 3 partitions, 5 wanted"):
        asyncio.run(kafka.create_topics([TopicSpec(TOPIC.name, partitions=5)]))


def test_end_offsets_of_a_missing_topic_names_it(settings: Settings, kafka_service: Service) -> None:
    kafka = KafkaResource.from_settings(settings)
    with pytest.raises(ValueError, match=r"'tfp\.test\.no-such-topic' does not exist"):
        asyncio.run(kafka.end_offsets("tfp.test.no-such-topic"))


async def _round_trip(kafka: KafkaResource, n: int) -> None:
    await kafka.create_topics([TOPIC])
    before = await kafka.end_offsets(TOPIC.name)
    run = uuid.uuid4().hex
    sent: dict[tuple[int, int], Sent] = {}
    async with kafka.producer() as producer:
        pending = []
        for i in range(n):
            record = Sent(
                key=f"{run}-{i % 17}".encode(),
                value=bytes([i % 256]) * (i + 1),
                headers=[("source", b"test"), ("seq", str(i).encode()), ("empty", b"")],
                timestamp_ms=EVENT_TIME_MS + i * 1000,
            )
            future = await producer.send(TOPIC.name, record.value, key=record.key,
                                         headers=record.headers, timestamp_ms=record.timestamp_ms)
            pending.append((record, future))
        for record, future in pending:
            meta = await future
            sent[(meta.partition, meta.offset)] = record

    after = await kafka.end_offsets(TOPIC.name)
    written = {p: sum(1 for part, _ in sent if part == p) for p in before}
    assert {p: after[p] - before[p] for p in before} == written
    assert len({p for p, _ in sent}) > 1, "keys should spread over the partitions"

    received: dict[tuple[int, int], Sent] = {}
    async with kafka.consumer() as consumer:
        tps = [TopicPartition(TOPIC.name, p) for p in before]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, before[tp.partition])
        async with asyncio.timeout(30):
            while len(received) < n:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    for r in records:
                        if r.offset < after[tp.partition]:
                            assert r.timestamp_type == 0, "CreateTime: the producer's event time is kept"
                            received[(tp.partition, r.offset)] = Sent(
                                r.key, r.value, list(r.headers), r.timestamp)
    assert received == sent


def test_records_round_trip_with_keys_headers_and_event_timestamps(
    settings: Settings, kafka_service: Service
) -> None:
    asyncio.run(_round_trip(KafkaResource.from_settings(settings), n=200))


def test_stack_status_reports_kafka_healthy(kafka_service: Service) -> None:
    out = subprocess.run([sys.executable, "-m", "deploy.stack", "status", "kafka"],
                         capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout
    assert out.split()[:2] == ["kafka", "healthy"], out


def test_the_broker_lets_in_only_clients_that_sign_in_with_the_installs_password(
    settings: Settings, kafka_service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """No sign-in, or a wrong password, gets no metadata; the stack's own check signs in with SCRAM."""
    async def topics(**options: Any) -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=3000,
                                    **options)
        try:
            await admin.start()
            return list(await admin.list_topics())
        finally:
            await admin.close()

    signed_in = {k: v for k, v in KafkaClient.from_settings(settings).connection_options().items()
                 if k != "bootstrap_servers"}
    asyncio.run(KafkaResource.from_settings(settings).create_topics([TOPIC]))
    assert TOPIC.name in asyncio.run(topics(**signed_in))
    with pytest.raises(KafkaConnectionError):
        asyncio.run(topics())
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(topics(**{**signed_in, "sasl_plain_password": settings.kafka_password + "x"}))
    assert "SaslAuthenticationFailed" in caplog.text
    assert Kafka(settings).healthy()
    assert not Kafka(dataclasses.replace(settings, kafka_password=settings.kafka_password + "x")).healthy()
