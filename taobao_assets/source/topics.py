"""The Kafka topics the raw files are replayed into, and the record headers they carry.

Replay writes them; bronze, silver (for quarantine locations) and the streaming path read them.
Every topic name is made here, from the ``topic_prefix`` setting (the tests and the demo's test
use their own prefix, so they never touch a demo's data on the same broker).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from taobao_assets.resources.kafka_client import TopicSpec

#: Short names of the raw topics: the last part of their names, asset keys and object paths.
SAMPLES = "samples"
COMMON_FEATURES = "common_features"

#: Header naming the raw file a record was read from (e.g. ``sample_skeleton_train.csv``).
SOURCE_HEADER = "source"
#: Header with the record's 1-based line number in that file (ASCII digits).
LINE_HEADER = "line"
#: Header with the wall-clock time (epoch ms, ASCII digits) the replay sent the record: freshness.
PRODUCED_AT_HEADER = "produced_at"


class BadHeader(ValueError):
    """A header that is not what the replay writes (the message names it and its bytes)."""


@dataclass(frozen=True, slots=True)
class RecordHeaders:
    """What the replay's headers say of a record (absent: empty file, line 0, no produce time)."""

    source: str = ""
    line: int = 0
    produced_at: int | None = None


def read_headers(headers: Iterable[tuple[str, bytes | None]]) -> RecordHeaders:
    """The replay's headers of a record. Another producer may leave them out; one that is present
    but not what the replay writes (a ``source`` that is not UTF-8, a ``line`` or ``produced_at``
    that is not an integer) raises :class:`BadHeader`."""
    source, line, produced = "", 0, None
    for name, value in headers:
        try:
            if name == SOURCE_HEADER:
                source = value.decode()  # type: ignore[union-attr]  # None raises, as it should
            elif name == LINE_HEADER:
                line = int(value)  # type: ignore[arg-type]
            elif name == PRODUCED_AT_HEADER:
                produced = int(value)  # type: ignore[arg-type]
        except (AttributeError, TypeError, ValueError) as error:
            wanted = "UTF-8 text" if name == SOURCE_HEADER else "an integer"
            raise BadHeader(f"header {name} is {value!r}, not {wanted}") from error
    return RecordHeaders(source, line, produced)


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
