"""Fixtures of the streaming tests: a fresh stream per test on the real Kafka, Redis and Feast.

Each test gets its own topics (``test.stream.<id>.*``), hence its own state in Redis, and the
session's ``dataset`` (the shared generated files, malformed lines included) as its events, in the
replay's order, and a Feast project of its own; or the session's replayed topics themselves
(``replayed_stream``), to run on what the replay wrote. The expected values are recomputed in
plain Python from the same events (:func:`recompute`), independently of the streaming code.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.service import Service
from taobao_assets.assets.serving import create_push_tables
from taobao_assets.feast_repo import generated_repo
from taobao_assets.partitions import event_time_config
from taobao_assets.realtime_tables import REALTIME_TABLES
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource
from taobao_assets.settings import Settings
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.format import FileKind
from taobao_assets.source.parser import CommonFeaturesRecord, QuarantineRecord, SampleRecord
from taobao_assets.source.replay import ReplayRecord, ReplayResult, plan
from taobao_assets.streaming.online import drop_online_rows, drop_project
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets_tests.conftest import TOPICS
from taobao_assets_tests.parser_reference import parse_line

DAY_MS, MINUTE_MS = 86_400_000, 60_000


@pytest.fixture
def stream_feast(settings: Settings, postgres_service: Service, redis_service: Service
                 ) -> Iterator[FeastResource]:
    """A Feast project of the test's own (no rows of another test can mask a missing write), applied
    from the definitions; dropped afterwards with the online rows the test wrote."""

    feast = FeastResource(postgres=PostgresResource.from_settings(settings),
                          redis=RedisResource.from_settings(settings),
                          project=f"stream_{uuid.uuid4().hex[:8]}")
    repo = generated_repo()
    # The real-time views' Postgres tables are shared by every project of the database: emptied.
    create_push_tables(feast.postgres, repo)
    with feast.postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(t.qualified_name for t in REALTIME_TABLES)}")
    feast.apply(repo.contents())
    yield feast
    drop_project(feast)


@pytest.fixture(scope="session")
def events(dataset: Path, settings: Settings) -> list[ReplayRecord]:
    """The shared data set as the replay sends it (common features before the samples using them)."""
    return list(plan(dataset, Timeline.from_folder(dataset, event_time_config(settings)), TOPICS))


def _streaming(settings: Settings, feast: FeastResource, topic_prefix: str) -> StreamingResource:
    """The stream of ``topic_prefix``, paced for tests: small runs and batches, a short lease."""
    return StreamingResource(
        kafka=KafkaResource.from_settings(settings), redis=RedisResource.from_settings(settings),
        feast=feast, topic_prefix=topic_prefix, max_records_per_run=8_000, batch_records=2_000,
        run_flush_seconds=1.0, lease_seconds=3.0, lease_wait_seconds=30.0,
    )


def _forget(streaming: StreamingResource) -> None:
    """Delete what the stream applied (online rows, state) and its dead-letter topic."""
    drop_online_rows(streaming.state(), streaming.feast)
    streaming.state().reset()
    asyncio.run(streaming.kafka.delete_topics([streaming.topics.dead_letter.name]))


@pytest.fixture
def stream(settings: Settings, kafka_service: Service, stream_feast: FeastResource
           ) -> Iterator[StreamingResource]:
    """A stream of its own: fresh topics, state and Feast project."""
    streaming = _streaming(settings, stream_feast, f"test.stream.{uuid.uuid4().hex[:8]}")
    topics = streaming.topics
    asyncio.run(streaming.kafka.create_topics([topics.samples, topics.common_features]))
    yield streaming
    _forget(streaming)
    asyncio.run(streaming.kafka.delete_topics([topics.samples.name, topics.common_features.name]))


@pytest.fixture
def replayed_stream(replayed: tuple[ReplayResult, int], settings: Settings, stream_feast: FeastResource
                    ) -> Iterator[StreamingResource]:
    """The stream of the session's replayed topics (written by the replay itself), with a state and a
    Feast project of its own; the topics stay for the other tests that read them."""
    streaming = _streaming(settings, stream_feast, settings.topic_prefix)
    streaming.state().reset()  # a state an earlier session left for topics that were re-created since
    yield streaming
    _forget(streaming)


def produce(streaming: StreamingResource, records: list[ReplayRecord], rate: float | None = None) -> None:
    """Send ``records`` to the stream's topics as the replay would (``produced_at`` header included)."""
    names = {TOPICS.samples.name: streaming.topics.samples.name,
             TOPICS.common_features.name: streaming.topics.common_features.name}

    async def send() -> None:
        started = time.monotonic()
        async with streaming.kafka.producer(linger_ms=5) as producer:
            pending = []
            for sent, record in enumerate(records, 1):
                pending.append(await producer.send(names[record.topic], record.value, key=record.key,
                                                   timestamp_ms=record.timestamp_ms, headers=record.headers()))
                if rate is not None and (ahead := sent / rate - (time.monotonic() - started)) > 0:
                    await asyncio.gather(*pending)
                    pending.clear()
                    await asyncio.sleep(ahead)
            await asyncio.gather(*pending)

    asyncio.run(send())


@dataclass(frozen=True)
class Expected:
    """Counters recomputed from events: per state key, (latest ms, today's i/c/v, last hour's i/c/v)."""

    counters: dict[str, tuple[int, tuple[int, int, int], tuple[int, int, int]]]
    impressions: int
    clicks: int
    conversions: int
    #: (source file, line, reason) of every rejected record.
    rejected: set[tuple[str, int, str]]
    #: Samples whose context no record gives.
    unresolved: int
    #: Contexts the records give.
    contexts: int


def recompute(records: list[ReplayRecord], entity_prefix: str) -> Expected:
    """The real-time counters by their definition, in plain Python, from the full list of events."""
    users: dict[str, int | None] = {}
    samples: list[tuple[int, SampleRecord]] = []
    rejected: set[tuple[str, int, str]] = set()
    for record in records:
        kind = FileKind.SAMPLE_SKELETON if record.topic == TOPICS.samples.name else FileKind.COMMON_FEATURES
        parsed = parse_line(record.value, kind, record.source, record.line)
        if isinstance(parsed, QuarantineRecord):
            rejected.add((record.source, record.line, parsed.reason.value))
        elif isinstance(parsed, CommonFeaturesRecord):
            users[parsed.common_feature_index] = parsed.feature_id("101")
        elif isinstance(parsed, SampleRecord):
            samples.append((record.timestamp_ms, parsed))
    events: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for ms, sample in samples:
        event = (ms, sample.click, sample.conversion)
        item, category = sample.feature_id("205"), sample.feature_id("206")
        user = users.get(sample.common_feature_index)
        if item is not None:
            events[f"{entity_prefix}i:{item}"].append(event)
        if user is not None:
            events[f"{entity_prefix}u:{user}"].append(event)
            if category is not None:
                events[f"{entity_prefix}uc:{user}:{category}"].append(event)
    counters = {}
    for key, entity_events in events.items():
        latest = max(ms for ms, _, _ in entity_events)
        today = [e for e in entity_events if e[0] // DAY_MS == latest // DAY_MS]
        hour = [e for e in entity_events if e[0] // MINUTE_MS > latest // MINUTE_MS - 60]
        counters[key] = (latest, _sums(today), _sums(hour))
    return Expected(counters, len(samples), sum(s.click for _, s in samples),
                    sum(s.conversion for _, s in samples), rejected,
                    sum(s.common_feature_index not in users for _, s in samples), len(users))


def _sums(events: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    return len(events), sum(e[1] for e in events), sum(e[2] for e in events)
