"""The Kafka topics the raw files are replayed into, and the record headers they carry.

Replay writes them; bronze, silver (for quarantine locations) and the streaming path read them.
"""

from __future__ import annotations

from taobao_assets.resources.kafka import TopicSpec
from taobao_assets.settings import get_settings
from taobao_assets.source.format import FileKind

_PREFIX = get_settings().topic_prefix
SAMPLES = TopicSpec(f"{_PREFIX}.samples", partitions=3)
# Compacted: the latest row per common_feature_index is all a consumer needs to join samples.
COMMON_FEATURES = TopicSpec(f"{_PREFIX}.common_features", partitions=3, config={"cleanup.policy": "compact"})
#: Short names, used in asset keys and object paths.
SHORT_NAMES = {SAMPLES.name: "samples", COMMON_FEATURES.name: "common_features"}

TOPIC_OF_KIND = {FileKind.SAMPLE_SKELETON: SAMPLES, FileKind.COMMON_FEATURES: COMMON_FEATURES}

#: Header naming the raw file a record was read from (e.g. ``sample_skeleton_train.csv``).
SOURCE_HEADER = "source"
#: Header with the record's 1-based line number in that file (ASCII digits).
LINE_HEADER = "line"
