"""A batch's new counters, computed a column at a time from its entities' stored state.

The rules are those of :mod:`taobao_assets.streaming.state`: an entity's ``t`` moves to the latest
event time counted, ``today`` restarts when the UTC day of ``t`` changes, ``1h`` is the sum of the
minute buckets within the 60 minutes up to the minute of ``t``, and an event older than both spans
is counted in neither (late). Here they are applied to every entity of a batch at once with numpy,
so that the commit only has to write the results (plain Redis commands in one transaction) instead
of a script working them out entity by entity, which was most of Redis's time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DAY_MS, MINUTE_MS, MINUTES_PER_DAY = 86_400_000, 60_000, 1_440
#: The ``1h`` span: the minute of ``t`` and the 59 before it.
HOUR_MINUTES = 60


@dataclass(slots=True)
class EntityDelta:
    """One entity's increments in a batch: the latest event time and (i, c, v) per epoch minute."""

    latest_ms: int
    minutes: dict[int, list[int]]


@dataclass(frozen=True)
class Deltas:
    """A batch's increments, a column per field: entity ``e`` (``keys[e]``) has ``group_counts[e]``
    consecutive rows of ``groups`` (epoch minute, impressions, clicks, conversions), and its latest
    event time in the batch is ``latest_ms[e]``."""

    keys: list[str]
    latest_ms: np.ndarray
    group_counts: np.ndarray
    groups: np.ndarray

    @classmethod
    def of(cls, deltas: Mapping[str, EntityDelta]) -> Deltas:
        """From one :class:`EntityDelta` per entity key (a few entities: the state tests)."""
        rows = [[minute, *counts] for delta in deltas.values() for minute, counts in delta.minutes.items()]
        return cls(list(deltas), np.array([d.latest_ms for d in deltas.values()], np.int64),
                   np.array([len(d.minutes) for d in deltas.values()], np.int64),
                   np.array(rows, np.int64).reshape(len(rows), 4))

    @classmethod
    def concat(cls, parts: Sequence[Deltas]) -> Deltas:
        return cls([key for part in parts for key in part.keys],
                   np.concatenate([p.latest_ms for p in parts]), np.concatenate([p.group_counts for p in parts]),
                   np.concatenate([p.groups for p in parts]).reshape(-1, 4))

    def __len__(self) -> int:
        return len(self.keys)




@dataclass(frozen=True)
class Stored:
    """What the store holds for a batch's entities (``e`` indexes ``Deltas.keys``).

    ``t`` is -1 for an entity without state; ``buckets`` has one row per stored minute bucket:
    entity, epoch minute, impressions, clicks, conversions.
    """

    t: np.ndarray
    n: np.ndarray
    today: np.ndarray
    buckets: np.ndarray


@dataclass(frozen=True)
class Updated:
    """The entities' state after the batch, and the impressions each counted in neither span."""

    t: np.ndarray
    n: np.ndarray
    today: np.ndarray
    hour: np.ndarray
    buckets: np.ndarray
    late: np.ndarray


def _sum_by_bucket(rows: np.ndarray) -> np.ndarray:
    """Rows (entity, minute, i, c, v) with one row per (entity, minute), counts summed."""
    if not len(rows):
        return rows.reshape(0, 5)
    order = np.lexsort((rows[:, 1], rows[:, 0]))
    rows = rows[order]
    starts = np.flatnonzero(np.r_[True, (rows[1:, 0] != rows[:-1, 0]) | (rows[1:, 1] != rows[:-1, 1])])
    return np.column_stack([rows[starts, 0], rows[starts, 1], np.add.reduceat(rows[:, 2:], starts, axis=0)])


def advance(stored: Stored, deltas: Deltas) -> Updated:
    """Apply ``deltas`` to ``stored``."""
    entities = len(deltas.keys)
    group_entity = np.repeat(np.arange(entities), deltas.group_counts)
    minute_of_group, counts = deltas.groups[:, 0], deltas.groups[:, 1:]
    latest = np.maximum(stored.t, deltas.latest_ms)
    day, minute = latest // DAY_MS, latest // MINUTE_MS
    same_day = (stored.t >= 0) & (stored.t // DAY_MS == day)
    in_day = minute_of_group // MINUTES_PER_DAY == day[group_entity]
    in_hour = minute_of_group > minute[group_entity] - HOUR_MINUTES
    today = np.where(same_day[:, None], stored.today, 0)
    np.add.at(today, group_entity[in_day], counts[in_day])
    n = stored.n + np.bincount(group_entity, weights=counts[:, 0], minlength=entities).astype(np.int64)
    kept = stored.buckets[stored.buckets[:, 1] > minute[stored.buckets[:, 0]] - HOUR_MINUTES]
    added = np.column_stack([group_entity[in_hour], minute_of_group[in_hour], counts[in_hour]])
    buckets = _sum_by_bucket(np.concatenate([kept, added.reshape(-1, 5)]))
    hour = np.zeros((entities, 3), np.int64)
    np.add.at(hour, buckets[:, 0], buckets[:, 2:])
    neither = ~(in_day | in_hour)
    late = np.bincount(group_entity[neither], weights=counts[neither, 0], minlength=entities).astype(np.int64)
    return Updated(latest, n, today, hour, buckets, late)
