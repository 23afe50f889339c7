"""The one daily partitioning shared by bronze, silver, gold and serving, and the day helpers around it.

The days are those of the simulated event time (:mod:`taobao_assets.source.event_time`), whose
first day and length are settings. The partitions are therefore built from a :class:`Settings`
when the definitions are built (:func:`taobao_assets.definitions.build_definitions`), never at
import, so a test or a second deployment with other settings gets its own days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from dagster import DailyPartitionsDefinition, TimeWindowPartitionMapping

from taobao_assets.settings import Settings
from taobao_assets.source.event_time import event_time_config


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    config = event_time_config(settings)
    return DailyPartitionsDefinition(
        start_date=config.start_date.isoformat(),
        end_date=config.end_date.isoformat(),
        timezone="UTC",
    )


def days_up_to_the_day(daily: DailyPartitionsDefinition) -> TimeWindowPartitionMapping:
    """Every day of the time line up to the downstream day, none after it.

    What a day reads of ``silver.user_context``: a user's context is stored once, on the day of
    its first impression, and that day's and every later day's impressions use it. Mapping to *all*
    days instead would make each day depend on the days after it, so a backfill of the last days
    would re-run every earlier day downstream and a new day would mark every old one stale.
    """
    return TimeWindowPartitionMapping(start_offset=-(len(daily.get_partition_keys()) - 1),
                                      allow_nonexistent_upstream_partitions=True)


def end_of_day(day: date | str) -> datetime:
    """``event_timestamp`` of a day's features: the day's exclusive end, midnight UTC after it."""
    start = date.fromisoformat(day) if isinstance(day, str) else day
    return datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
