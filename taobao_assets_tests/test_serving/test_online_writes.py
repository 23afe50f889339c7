"""The bulk writers' shared parts encode what protobuf does (no server needed)."""

from __future__ import annotations

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from taobao_assets.online_writes import timestamp_protos

NANOS = [0, 1, 999_999_999, 1_000_000_000, 1_000_000_001, 1_700_000_000_000_000_000,
         1_700_000_000_123_000_000, 4_102_444_800_999_999_999, 127_000_000_000, 128_000_000_000]


def test_timestamps_are_protobufs_bytes() -> None:
    expected = [Timestamp(seconds=n // 1_000_000_000, nanos=n % 1_000_000_000).SerializeToString() for n in NANOS]
    assert timestamp_protos(np.array(NANOS, np.int64)).tolist() == expected
