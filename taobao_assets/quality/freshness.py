"""Freshness per hop for one day of samples: event time -> Kafka -> bronze -> silver -> gold -> online.

- **event -> Kafka**: per record, its ``produced_at`` header (when the replay, or a live producer,
  appended it) minus its event time (the record timestamp); median and 99th percentile, taken by
  bronze as it reads the day (:class:`~taobao_assets.bronze_objects.AppendTimes`). A replay of old
  data makes this hop as long as the data is old; a live producer makes it its own latency;
- **Kafka -> bronze**: per record, when the bronze day was stored minus its append time;
- **bronze -> silver -> gold -> online**: each layer writes the day at one moment (its Dagster
  materialization), so these hops are one number each: the time between the two layers' latest
  materializations of the day.

A layer materialized before the one it reads (a re-run of an upstream day without its downstream)
gives a negative hop: shown as measured, since it says the downstream is stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from taobao_assets.assets.bronze import bronze_asset_key
from taobao_assets.assets.gold import GOLD_KEYS
from taobao_assets.assets.serving import ONLINE_STORE_KEY
from taobao_assets.assets.silver import IMPRESSIONS_KEY
from taobao_assets.bronze_objects import AppendTimes
from taobao_assets.io_managers.bronze import load_manifest
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.source.topics import SAMPLES

HOPS = ("event_to_kafka", "kafka_to_bronze", "bronze_to_silver", "silver_to_gold", "gold_to_online")


@dataclass(frozen=True)
class HopFreshness:
    """Lags of one day's samples per hop, in seconds: (median, 99th percentile); ``None`` where unknown."""

    day: str
    records: int
    lags_s: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def metadata(self) -> dict[str, float]:
        """``lag_s/<hop>/p50`` and ``/p99`` for the hops that are known."""
        out: dict[str, float] = {}
        for hop, (p50, p99) in self.lags_s.items():
            if p50 is not None:
                out[f"lag_s/{hop}/p50"] = p50
            if p99 is not None:
                out[f"lag_s/{hop}/p99"] = p99
        return out

    def table(self) -> str:
        def shown(value: float | None) -> str:
            return "-" if value is None else f"{value:,.1f}"

        rows = [f"| {hop.replace('_', ' ')} | {shown(p50)} | {shown(p99)} |" for hop, (p50, p99) in self.lags_s.items()]
        return "\n".join([f"Freshness of the samples of {self.day} ({self.records:,} records timed), seconds:",
                          "| hop | p50 | p99 |", "|---|---|---|", *rows])


def _written_at(instance: DagsterInstance, keys: list[AssetKey], day: str) -> float | None:
    """Epoch seconds of the latest materialization of ``day`` among ``keys`` (``None``: never)."""
    times = []
    for key in keys:
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[day]),
                                                  limit=1).records
        times += [r.timestamp for r in records]
    return max(times, default=None)


def _between(later: float | None, earlier: float | None) -> tuple[float | None, float | None]:
    lag = None if later is None or earlier is None else later - earlier
    return lag, lag


def hop_freshness(instance: DagsterInstance, s3: S3Resource, samples_topic: str, day: str) -> HopFreshness:
    """:class:`HopFreshness` of ``day`` from the bronze manifest and the layers' materializations."""
    appended = load_manifest(s3, samples_topic, day).append_times
    bronze = _written_at(instance, [bronze_asset_key(SAMPLES)], day)
    silver = _written_at(instance, [IMPRESSIONS_KEY], day)
    gold = _written_at(instance, GOLD_KEYS, day)
    online = _written_at(instance, [ONLINE_STORE_KEY], day)
    return HopFreshness(day, appended.records, {
        "event_to_kafka": (_seconds(appended.event_to_append_p50_ms), _seconds(appended.event_to_append_p99_ms)),
        "kafka_to_bronze": _after_append(bronze, appended),
        "bronze_to_silver": _between(silver, bronze),
        "silver_to_gold": _between(gold, silver),
        "gold_to_online": _between(online, gold),
    })


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _after_append(written: float | None, appended: AppendTimes) -> tuple[float | None, float | None]:
    """Median and 99th percentile of ``written`` minus each record's append time."""
    if written is None or appended.appended_p50_ms is None or appended.appended_p01_ms is None:
        return None, None
    return written - appended.appended_p50_ms / 1000, written - appended.appended_p01_ms / 1000
