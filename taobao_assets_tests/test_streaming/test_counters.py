"""A batch's counters computed by numpy equal the rules applied entity by entity, group by group
(no server needed)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from taobao_assets.streaming.counters import Deltas, EntityDelta, Stored, advance

DAY, MINUTE = 86_400_000, 60_000


@dataclass
class Entity:
    """One entity's state, as the rules describe it."""

    t: int | None = None
    n: int = 0
    today: list[int] = field(default_factory=lambda: [0, 0, 0])
    buckets: dict[int, list[int]] = field(default_factory=dict)

    def apply(self, delta: EntityDelta) -> int:
        """The batch's groups; returns the impressions counted in neither span."""
        latest = delta.latest_ms if self.t is None else max(self.t, delta.latest_ms)
        if self.t is None or self.t // DAY != latest // DAY:
            self.today = [0, 0, 0]
        minute = latest // MINUTE
        self.buckets = {m: b for m, b in self.buckets.items() if m > minute - 60}
        late = 0
        for m, (i, c, v) in delta.minutes.items():
            self.n += i
            counted = False
            if m // 1440 == latest // DAY:
                self.today = [self.today[0] + i, self.today[1] + c, self.today[2] + v]
                counted = True
            if m > minute - 60:
                old = self.buckets.get(m, [0, 0, 0])
                self.buckets[m] = [old[0] + i, old[1] + c, old[2] + v]
                counted = True
            if not counted:
                late += i
        self.t = latest
        return late

    @property
    def hour(self) -> list[int]:
        return [sum(b[k] for b in self.buckets.values()) for k in range(3)]


def _stored(keys: list[str], entities: dict[str, Entity]) -> Stored:
    rows = [[e, m, *b] for e, key in enumerate(keys) for m, b in entities.get(key, Entity()).buckets.items()]
    return Stored(np.array([-1 if entities.get(k, Entity()).t is None else entities[k].t for k in keys], np.int64),
                  np.array([entities.get(k, Entity()).n for k in keys], np.int64),
                  np.array([entities.get(k, Entity()).today for k in keys], np.int64).reshape(-1, 3),
                  np.array(rows, np.int64).reshape(-1, 5))


def test_numpy_counters_follow_the_rules_batch_after_batch() -> None:
    rng = random.Random(17)
    start = 1_780_000_000_000 - 1_780_000_000_000 % DAY + DAY - 2 * 3_600_000  # two hours before midnight
    reference: dict[str, Entity] = {}
    stored: dict[str, Entity] = {}
    late_total = 0
    for batch in range(40):
        keys = rng.sample([f"e:{k}" for k in range(30)], 12)
        deltas = {}
        for key in keys:
            minutes: dict[int, list[int]] = {}
            # Mostly recent events, some at the edge of the hour, an hour or a day old (late for an
            # entity already ahead).
            for _ in range(rng.randint(1, 4)):
                back = rng.choice([0, 0, 0, 50, 59, 60, 61, 70, 1500]) * MINUTE
                ms = start + batch * 7 * MINUTE - back + rng.randrange(MINUTE)
                i = rng.randint(1, 3)
                c = rng.randint(0, i)
                counts = minutes.setdefault(ms // MINUTE, [0, 0, 0])
                counts[0], counts[1], counts[2] = counts[0] + i, counts[1] + c, counts[2] + rng.randint(0, c)
            latest = max(m * MINUTE for m in minutes) + rng.randrange(MINUTE)
            deltas[key] = EntityDelta(latest, minutes)
        batch_deltas = Deltas.of(deltas)
        updated = advance(_stored(keys, stored), batch_deltas)
        for e, key in enumerate(keys):
            entity = reference.setdefault(key, Entity())
            late = entity.apply(deltas[key])
            late_total += late
            assert (updated.t[e], updated.n[e], updated.late[e]) == (entity.t, entity.n, late), (batch, key)
            assert updated.today[e].tolist() == entity.today and updated.hour[e].tolist() == entity.hour
            mine = {int(m): row[2:].tolist() for row in updated.buckets if row[0] == e for m in [row[1]]}
            assert mine == entity.buckets
            stored[key] = Entity(int(updated.t[e]), int(updated.n[e]), updated.today[e].tolist(), mine)
    assert late_total > 0, "the data should have late events"
