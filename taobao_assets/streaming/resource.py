"""The Dagster resource of the streaming path: which stream, its stores, and how it is paced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import ConfigurableResource

from taobao_assets.realtime_tables import REALTIME_TABLES
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.kafka import KafkaResource, TopicSpec
from taobao_assets.resources.redis import RedisResource
from taobao_assets.settings import Settings
from taobao_assets.source.topics import RawTopics
from taobao_assets.streaming.dead_letter import dead_letter_topic
from taobao_assets.streaming.join import KINDS
from taobao_assets.streaming.state import StreamState

#: Lifetime of the streaming state of each entity kind: the declared TTL of the real-time table it feeds.
STATE_TTL_SECONDS = {KINDS[tuple(t.key_names)]: t.ttl_seconds for t in REALTIME_TABLES}


@dataclass(frozen=True)
class StreamTopics:
    samples: TopicSpec
    common_features: TopicSpec
    dead_letter: TopicSpec

    @classmethod
    def of(cls, prefix: str) -> StreamTopics:
        """The replay's topics (same partitions and configs) under ``prefix``, and the dead letters."""
        raw = RawTopics.of(prefix)
        return cls(raw.samples, raw.common_features, dead_letter_topic(prefix))


class StreamingResource(ConfigurableResource):
    """Where the stream comes from (Kafka topics ``<topic_prefix>.*``) and goes (Redis state, Feast).

    Pacing: a run applies at most ``max_records_per_run`` sample records (the sensor cuts a
    backlog into several runs) in commits of at most ``batch_records``; the online store is
    written every ``run_flush_seconds`` in a run (fewer, larger writes: most time goes to Feast
    rows, and a popular entity is written once per flush however many events it got) and
    every ``follow_flush_seconds`` by the continuous consumer (0: after every commit).
    """

    kafka: KafkaResource
    redis: RedisResource
    feast: FeastResource
    topic_prefix: str
    max_records_per_run: int = 50_000
    batch_records: int = 5_000
    run_flush_seconds: float = 5.0
    follow_flush_seconds: float = 0.0
    #: An applier holds the stream's lease while it applies; a dead one's lease expires after this.
    lease_seconds: float = 30.0
    #: How long a run waits for the lease (another run, or the continuous consumer) before failing.
    lease_wait_seconds: float = 600.0
    #: A sample whose event time is further ahead of the clock is dead-lettered (``future_timestamp``).
    #: Raise it to replay a simulated time line that lies in the future (``TFP_EVENT_START_DATE``).
    max_future_skew_seconds: float = 3600.0
    #: A sample whose context is unknown waits for it this long after the sample was produced
    #: (its ``produced_at`` header) before it counts as ``unresolved_context``: a producer may append
    #: a sample to its topic just before the context to the other topic.
    context_wait_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings, **pacing: Any) -> StreamingResource:
        """The stream of the configured topic prefix; ``pacing`` overrides the other fields."""
        return cls(kafka=KafkaResource.from_settings(settings), redis=RedisResource.from_settings(settings),
                   feast=FeastResource.from_settings(settings), topic_prefix=settings.topic_prefix, **pacing)

    @property
    def topics(self) -> StreamTopics:
        return StreamTopics.of(self.topic_prefix)

    def state(self) -> StreamState:
        return StreamState(self.redis.client(), self.topics.samples.name, STATE_TTL_SECONDS)
