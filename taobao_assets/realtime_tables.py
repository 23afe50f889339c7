"""The declared contract of the real-time feature tables that the streaming run pushes to Feast.

Same shape as the gold contract (a :class:`~taobao_assets.feature_tables.FeatureTable`: keys,
features, description, TTL), declared once here and carried as the
metadata of the streaming assets, from which the Feast repository generates a push source and a
feature view per table. What differs is where a row lives and what its timestamp means:

- rows are written by the streaming run to the online store (Redis) and to ``streaming.<table>``
  in Postgres, the push source's batch source, where every row the run writes is kept (one per
  entity and ``event_timestamp``), so point-in-time retrieval sees the values as of each time;
- ``event_timestamp`` is the event time of the latest impression counted, not a day's end;
- ``ttl_seconds`` is also how long the streaming state behind a row lives in Redis after the last
  batch that touched the entity (:mod:`taobao_assets.streaming.state`), so it must be at least a day.

Counters cover two spans of event time: ``today`` (from the start of the UTC day of
``event_timestamp``) and ``1h`` (the 60 minutes up to it). Rates use the batch formulas of
:mod:`taobao_assets.features`, so a real-time CTR and a gold CTR are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from taobao_assets.feature_tables import Column, FeatureTable
from taobao_assets.features import CTR_PRIOR_STRENGTH
from taobao_assets.gold_tables import GOLD_TABLES

SCHEMA = "streaming"
METADATA_KEY = "taobao/realtime_table"
#: Span name -> what it covers; feature names end with ``_<span>``.
SPANS = {
    "today": "since the start of the UTC day of event_timestamp",
    "1h": "in the 60 minutes of event time up to event_timestamp",
}


@dataclass(frozen=True)
class RealtimeTable(FeatureTable):
    """A table whose rows the streaming run pushes to the online store instead of writing them daily."""

    schema: ClassVar[str] = SCHEMA
    metadata_key: ClassVar[str] = METADATA_KEY
    timestamp_description: ClassVar[str] = "Event time of the latest impression counted: the counters are as of then."


def realtime_counters(what: str) -> tuple[Column, ...]:
    """Impressions, clicks, conversions and smoothed CTR of ``what`` over each span."""
    columns = []
    for span, covers in SPANS.items():
        columns += [
            Column(f"impressions_{span}", "int64", f"Impressions of {what} {covers}."),
            Column(f"clicks_{span}", "int64", f"Clicks on {what} {covers}."),
            Column(f"conversions_{span}", "int64", f"Conversions of {what} {covers}."),
            Column(f"ctr_{span}", "float64",
                   f"Smoothed CTR of {what} {covers} (taobao_assets.features.smoothed_ctr, "
                   f"{CTR_PRIOR_STRENGTH:g} pseudo impressions at the global CTR of the latest gold day, "
                   f"or of the stream itself until there is one)."),
        ]
    return tuple(columns)


def _key_of(gold_key: str) -> Column:
    """The key column exactly as gold declares it, so both views join on the same entity."""
    (column,) = {k for t in GOLD_TABLES for k in t.keys if k.name == gold_key}
    return column


REALTIME_TABLES = (
    RealtimeTable("user_realtime", (_key_of("user_id"),), realtime_counters("the user"),
                  "Per user, pushed by the streaming run: today's and last hour's counters and CTR.",
                  ttl_seconds=86_400),
    RealtimeTable("item_realtime", (_key_of("item_id"),), realtime_counters("the item"),
                  "Per item, pushed by the streaming run: today's and last hour's counters and CTR.",
                  ttl_seconds=86_400),
    RealtimeTable("user_category_realtime", (_key_of("user_id"), _key_of("category_id")),
                  realtime_counters("the user in the item category"),
                  "Per user and item category, pushed by the streaming run: today's and last hour's counters "
                  "and CTR.",
                  ttl_seconds=86_400),
)
