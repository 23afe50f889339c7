"""The one daily partitioning shared by bronze, silver and gold: the days of simulated event time."""

from __future__ import annotations

from datetime import date, timedelta

from dagster import DailyPartitionsDefinition, TimeWindowPartitionMapping

from taobao_assets.settings import Settings, get_settings
from taobao_assets.source.event_time import EventTimeConfig


def event_time_config(settings: Settings) -> EventTimeConfig:
    return EventTimeConfig(date.fromisoformat(settings.event_start_date), settings.event_days)


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    config = event_time_config(settings)
    return DailyPartitionsDefinition(
        start_date=config.start_date.isoformat(),
        end_date=(config.start_date + timedelta(days=config.days)).isoformat(),
        timezone="UTC",
    )


DAILY = daily_partitions(get_settings())


def days_up_to_the_day() -> TimeWindowPartitionMapping:
    """Every day of the time line up to the downstream day, none after it.

    What a day reads of ``silver.user_context``: a user's context is stored once, on the day of
    its first impression, and that day's and every later day's impressions use it. Mapping to *all*
    days instead would make each day depend on the days after it, so a backfill of the last days
    would re-run every earlier day downstream and a new day would mark every old one stale.
    """
    return TimeWindowPartitionMapping(start_offset=-(len(DAILY.get_partition_keys()) - 1),
                                      allow_nonexistent_upstream_partitions=True)
