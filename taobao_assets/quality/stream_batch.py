"""Streaming = batch, per day: the real-time counters of day D against gold's 1-day counters of D.

The stream keeps, per entity, the impressions, clicks and conversions of the UTC day of its latest
event (:mod:`taobao_assets.streaming.state`). Once the stream has applied every record up to the
end of D, an entity whose latest event is on D holds exactly D's counts, which gold's
``impressions_1d``, ``clicks_1d`` and ``conversions_1d`` of D hold too (same records, the same
user join), and an entity that gold says was active on D must not be stuck before D. So for every
key the user, item and user x category tables hold on D (active on D or in the 7 days before):

- gold active on D or stream's latest event on D: *compared* (a stream that missed D entirely
  compares as 0 against gold's counts);
- stream's latest event after D: *moved on*, not comparable any more (its D counts were replaced
  when its next day began), listed as such.

A stream that is not yet past the end of D cannot be compared; the report says so (``behind``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import cast

import numpy as np
import pyarrow as pa

from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.partitions import end_of_day
from taobao_assets.quality.copy_out import copy_out_csv
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.streaming.join import KINDS
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets.streaming.state import StreamState, unpack

COUNTERS = ("impressions", "clicks", "conversions")
DAY_MS = 86_400_000
#: Below this share of compared keys with equal counters, the check fails.
REQUIRED_SHARE = 0.999
#: Keys per ``MGET``.
MGET_CHUNK = 10_000


@dataclass
class TableConsistency:
    """One gold table of one day against the stream's entities of the same kind."""

    table: str
    compared: int = 0
    equal: int = 0
    moved_on: int = 0
    max_abs_diff: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    examples: list[str] = field(default_factory=list)

    @property
    def share_equal(self) -> float:
        return self.equal / self.compared if self.compared else 1.0

    @property
    def passed(self) -> bool:
        return self.share_equal >= REQUIRED_SHARE


@dataclass(frozen=True)
class Behind:
    """The stream has not applied every record up to the end of the day."""

    applied: dict[int, int]
    needed: dict[int, int]


def kind_of(table: GoldTable) -> str | None:
    """The stream's entity kind counted with the same keys as ``table`` (``None``: not streamed)."""
    return KINDS.get(tuple(table.key_names))


STREAMED_TABLES = [t for t in GOLD_TABLES if kind_of(t) is not None]


def stream_behind(streaming: StreamingResource, day: date) -> Behind | None:
    """:class:`Behind` if some partition's applied offset is before its first record after the end of ``day``."""
    needed = asyncio.run(streaming.kafka.offsets_at(streaming.topics.samples.name,
                                                     int(end_of_day(day).timestamp() * 1000)))
    applied = streaming.state().sample_offsets()
    if any(applied.get(p, 0) < offset for p, offset in needed.items()):
        return Behind(applied, needed)
    return None


def compare_day(state: StreamState, postgres: PostgresResource, day: date) -> list[TableConsistency]:
    """:class:`TableConsistency` of every streamed table on ``day`` (the stream must be past its end)."""
    return [compare_table(state, postgres, t, day) for t in STREAMED_TABLES]


def compare_table(state: StreamState, postgres: PostgresResource, table: GoldTable, day: date) -> TableConsistency:
    """:class:`TableConsistency` of ``table`` on ``day``: the stream's state of every key gold holds on
    ``day`` (active on it or in the 7 days before), read with ``MGET``.

    Looking up gold's keys rather than scanning the stream's keyspace keeps the cost to the day's
    entities, whatever else the Redis server holds (a ``SCAN`` walks every key of every namespace).
    The price: an entity the stream counted on ``day`` that gold has not seen in those 8 days (an
    id the stream made up) is not looked at.
    """
    day_start_ms = int((end_of_day(day) - timedelta(days=1)).timestamp() * 1000)
    columns = [f"{c}_1d" for c in COUNTERS]
    with postgres.connect() as conn, conn.cursor() as cur:
        query = cur.mogrify(f"SELECT {', '.join(table.key_names + columns)} FROM {table.qualified_name} "
                            f"WHERE {TIMESTAMP_FIELD} = %s", (end_of_day(day),)).decode()
        gold = copy_out_csv(cur, query, dict.fromkeys(table.key_names + columns, pa.int64()))
    keys = [gold[k].to_numpy() for k in table.key_names]
    want = np.column_stack([gold[c].to_numpy() for c in columns]) if gold.num_rows else np.zeros((0, 3), np.int64)
    prefix = f"{state.entity_prefix}{kind_of(table)}:"
    names = [prefix + ":".join(map(str, ids)) for ids in zip(*(k.tolist() for k in keys), strict=True)]
    latest, today = np.full(len(names), -1, np.int64), np.zeros((len(names), len(COUNTERS)), np.int64)
    for first in range(0, len(names), MGET_CHUNK):
        stored = unpack(cast(list[bytes | None], state.client.mget(names[first:first + MGET_CHUNK])))
        latest[first:first + MGET_CHUNK], today[first:first + MGET_CHUNK] = stored.t, stored.today
    # Days from D to the entity's latest event (a key without state is before D: none of D reached it).
    days_after = np.where(latest >= 0, (latest - day_start_ms) // DAY_MS, -1)
    moved_on, on_day = days_after > 0, days_after == 0
    got = np.where(on_day[:, None], today, 0)
    compared = ~moved_on & (on_day | (want[:, 0] > 0))
    diff = np.abs(got - want)
    unequal = compared & diff.any(axis=1)
    report = TableConsistency(table.name, compared=int(compared.sum()), equal=int((compared & ~unequal).sum()),
                              moved_on=int(moved_on.sum()))
    if unequal.any():
        report.max_abs_diff = dict(zip(COUNTERS, diff[unequal].max(axis=0).tolist(), strict=True))
    for row in np.flatnonzero(unequal)[:10].tolist():
        key = {name: int(k[row]) for name, k in zip(table.key_names, keys, strict=True)}
        report.examples.append(f"{table.name} {key}: stream {dict(zip(COUNTERS, got[row].tolist(), strict=True))}, "
                               f"gold {dict(zip(COUNTERS, want[row].tolist(), strict=True))}")
    return report
