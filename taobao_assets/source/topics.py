"""The Kafka topics the raw files are replayed into, and the record headers they carry.

Replay writes them; bronze, silver (for quarantine locations) and the streaming path read them.
Every topic name is made here, from the ``topic_prefix`` setting (the tests and the demo's test
use their own prefix, so they never touch a demo's data on the same broker).
"""

from __future__ import annotations

from dataclasses import dataclass

from taobao_assets.resources.kafka_client import TopicSpec

#: Short names of the raw topics: the last part of their names, asset keys and object paths.
SAMPLES = "samples"
COMMON_FEATURES = "common_features"

#: Header naming the raw file a record was read from (e.g. ``sample_skeleton_train.csv``).
SOURCE_HEADER = "source"
#: Header with the record's 1-based line number in that file (ASCII digits).
LINE_HEADER = "line"


@dataclass(frozen=True)
class RawTopics:
    """The two raw topics under one prefix: ``<prefix>.samples`` and ``<prefix>.common_features``."""

    samples: TopicSpec
    common_features: TopicSpec

    @classmethod
    def of(cls, prefix: str) -> RawTopics:
        return cls(
            TopicSpec(f"{prefix}.{SAMPLES}", partitions=3),
            # Compacted: the latest row per common_feature_index is all a consumer needs to join samples.
            TopicSpec(f"{prefix}.{COMMON_FEATURES}", partitions=3, config={"cleanup.policy": "compact"}),
        )

    @property
    def all(self) -> tuple[TopicSpec, TopicSpec]:
        return self.samples, self.common_features

    @staticmethod
    def short_name(topic: TopicSpec) -> str:
        """``samples`` of ``aliccp.samples``: the part of a name that does not depend on the prefix."""
        return topic.name.rsplit(".", 1)[-1]
