"""Streaming = batch, per day: the real-time counters of day D against gold's 1-day counters of D.

The stream keeps, per entity, the impressions, clicks and conversions of the UTC day of its latest
event (:mod:`taobao_assets.streaming.state`). Once the stream has applied every record up to the
end of D, an entity whose latest event is on D holds exactly D's counts, which gold's
``impressions_1d``, ``clicks_1d`` and ``conversions_1d`` of D hold too (same records, the same
user join), and an entity that gold says was active on D must not be stuck before D. So for every
key of the user, item and user x category tables:

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

from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.streaming.join import KINDS
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets.streaming.state import StreamState, unpack

COUNTERS = ("impressions", "clicks", "conversions")
DAY_MS = 86_400_000
#: Below this share of compared keys with equal counters, the check fails.
REQUIRED_SHARE = 0.999


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


def entity_states(state: StreamState) -> dict[str, list[tuple[tuple[int, ...], np.ndarray]]]:
    """Per entity kind, (key ids, [latest_ms, impressions, clicks, conversions of its day]) of every
    entity the stream holds: one ``SCAN`` of the keyspace for all kinds."""
    found: dict[str, list[tuple[tuple[int, ...], np.ndarray]]] = {kind: [] for kind in KINDS.values()}
    keys = [cast(bytes, k) for k in state.client.scan_iter(match=state.entity_prefix + "*", count=10_000)]
    start = len(state.entity_prefix)
    for first in range(0, len(keys), 10_000):
        chunk = keys[first:first + 10_000]
        stored = unpack(cast(list[bytes | None], state.client.mget(chunk)))
        for key, latest, today in zip(chunk, stored.t.tolist(), stored.today.tolist(), strict=True):
            kind, _, ids = key.decode()[start:].partition(":")
            if latest >= 0 and kind in found:
                found[kind].append((tuple(int(i) for i in ids.split(":")), np.array([latest, *today])))
    return found


def compare_day(state: StreamState, postgres: PostgresResource, day: date) -> list[TableConsistency]:
    """:class:`TableConsistency` of every streamed table on ``day`` (the stream must be past its end)."""
    states = entity_states(state)
    return [compare_table(states[kind_of(t) or ""], postgres, t, day) for t in STREAMED_TABLES]


def compare_table(states: list[tuple[tuple[int, ...], np.ndarray]], postgres: PostgresResource, table: GoldTable,
                  day: date) -> TableConsistency:
    """:class:`TableConsistency` of ``table`` on ``day`` against ``states``, the stream's entities of its
    kind (:func:`entity_states`)."""
    day_start_ms = int((end_of_day(day) - timedelta(days=1)).timestamp() * 1000)
    columns = [f"{c}_1d" for c in COUNTERS]
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(table.key_names)}, {', '.join(columns)} FROM {table.qualified_name} "
                    f"WHERE {TIMESTAMP_FIELD} = %s AND impressions_1d > 0", (end_of_day(day),))
        gold = {tuple(row[:len(table.key_names)]): np.array(row[len(table.key_names):], np.int64)
                for row in cur.fetchall()}
    report = TableConsistency(table.name)
    streamed: dict[tuple[int, ...], np.ndarray] = {}
    moved_on: set[tuple[int, ...]] = set()
    for key, values in states:
        days_after = (int(values[0]) - day_start_ms) // DAY_MS
        if days_after > 0:
            moved_on.add(key)
        elif days_after == 0:
            streamed[key] = values[1:]
        # before D: none of D's events reached the stream; compared as 0 if gold saw the key on D
    report.moved_on = len(moved_on)
    zeros = np.zeros(len(COUNTERS), np.int64)
    for key in (gold.keys() | streamed.keys()) - moved_on:
        got, want = streamed.get(key, zeros), gold.get(key, zeros)
        report.compared += 1
        diff = np.abs(got - want)
        if not diff.any():
            report.equal += 1
            continue
        for name, d in zip(COUNTERS, diff.tolist(), strict=True):
            report.max_abs_diff[name] = max(report.max_abs_diff[name], d)
        if len(report.examples) < 10:
            report.examples.append(f"{table.name} {dict(zip(table.key_names, key, strict=True))}: stream "
                                   f"{dict(zip(COUNTERS, got.tolist(), strict=True))}, gold "
                                   f"{dict(zip(COUNTERS, want.tolist(), strict=True))}")
    return report
