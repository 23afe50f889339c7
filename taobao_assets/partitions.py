"""The one daily partitioning shared by bronze, silver and gold: the days of simulated event time."""

from __future__ import annotations

from datetime import date, timedelta

from dagster import DailyPartitionsDefinition

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
