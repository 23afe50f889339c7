"""What a bronze day is, in memory and in MinIO: the parts spooled by the asset and the stored manifest.

The bronze asset (:mod:`taobao_assets.assets.bronze`) produces a :class:`BronzeDay`; the bronze IO
manager (:mod:`taobao_assets.io_managers.bronze`) stores it under :func:`day_prefix` with the
manifest written last, and hands downstream assets a :class:`BronzeManifest`. Both sides import
these types from here, so the IO manager depends on no asset module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

#: The manifest object of a stored day; written last, so a day with a manifest is complete.
MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class BronzePart:
    """One Kafka partition's records of the day, spooled locally until the IO manager stores them."""

    partition: int
    start_offset: int
    end_offset: int
    records: int
    bytes: int
    sha256: str
    data_file: Path
    index_file: Path
    #: Records kept although the replay did not write them like that: offset, reason, message.
    faults: list[dict[str, Any]] = field(default_factory=list)

    def manifest(self, folder: str) -> dict[str, Any]:
        """The part's entry in the day's manifest, its objects under ``folder`` (the day's generation)."""
        return {
            "partition": self.partition, "start_offset": self.start_offset, "end_offset": self.end_offset,
            "records": self.records, "bytes": self.bytes, "sha256": self.sha256,
            "data_object": f"{folder}/{self.data_file.name}", "index_object": f"{folder}/{self.index_file.name}",
            "faults": self.faults,
        }


@dataclass(frozen=True)
class AppendTimes:
    """When a day's records reached Kafka (the replay's ``produced_at`` header) against their event
    time (the record timestamp), for the freshness of each hop (:mod:`taobao_assets.quality.freshness`).

    ``appended_p50_ms`` and ``appended_p01_ms`` are the median and first percentile of the append
    times: the median and 99th percentile of a later hop's lag ``t - appended`` for a layer written
    at one time ``t``. Records without the header (another producer's) are not counted.
    """

    records: int = 0
    event_to_append_p50_ms: float | None = None
    event_to_append_p99_ms: float | None = None
    appended_p50_ms: float | None = None
    appended_p01_ms: float | None = None

    @classmethod
    def of(cls, event_ms: Sequence[int], appended_ms: Sequence[int]) -> AppendTimes:
        if not appended_ms:
            return cls()
        appended = np.asarray(appended_ms, np.float64)
        lag = appended - np.asarray(event_ms, np.float64)
        p50, p99 = np.percentile(lag, [50, 99])
        a50, a01 = np.percentile(appended, [50, 1])
        return cls(len(appended), float(p50), float(p99), float(a50), float(a01))


@dataclass(frozen=True)
class BronzeDay:
    topic: str
    day: date
    parts: list[BronzePart] = field(default_factory=list)
    append_times: AppendTimes = field(default_factory=AppendTimes)

    @property
    def records(self) -> int:
        return sum(p.records for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)

    @property
    def generation(self) -> str:
        """Names the folder of the day's objects after their content: a re-run that reads the same
        records writes the same keys, and one that reads others writes beside the stored day."""
        digest = hashlib.sha256()
        for p in self.parts:
            digest.update(f"{p.partition}:{p.start_offset}:{p.end_offset}:{p.sha256};".encode())
        return f"g-{digest.hexdigest()[:16]}"

    def manifest(self) -> dict[str, Any]:
        return {"topic": self.topic, "day": self.day.isoformat(), "records": self.records,
                "bytes": self.bytes, "parts": [p.manifest(self.generation) for p in self.parts],
                "append_times": asdict(self.append_times)}


def day_prefix(topic: str, day: date | str) -> str:
    return f"bronze/{topic}/day={day}/"


@dataclass(frozen=True)
class BronzeManifest:
    """What a stored bronze day holds; ``raw`` is the manifest JSON as written."""

    bucket: str
    prefix: str
    raw: dict[str, Any]

    @property
    def topic(self) -> str:
        return str(self.raw["topic"])

    @property
    def records(self) -> int:
        return int(self.raw["records"])

    @property
    def parts(self) -> list[dict[str, Any]]:
        return list(self.raw["parts"])

    @property
    def append_times(self) -> AppendTimes:
        """Absent from a manifest written before the platform recorded them: nothing counted."""
        return AppendTimes(**self.raw.get("append_times", {}))

    def key(self, object_name: str) -> str:
        return self.prefix + object_name

    def uri(self, object_name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{object_name}"
