"""The streaming state in Redis: applied offsets, the counters they produced, the context map, the lease.

Exactly once. A batch of records is applied by one Lua script that first compares the stored
applied offset of every partition in the batch with the offset the batch starts from, and only if
all match applies the counter increments and advances the offsets. Redis runs a script atomically
and its append-only file logs the script's effects as one transaction, so counters and offsets
are never seen (or restored after a crash) one without the other: a replayed batch finds its
offsets already advanced and changes nothing, a lost one finds them behind and applies. The
script checks before it writes, and nothing after the check can fail on arguments this module
builds, so an error never leaves half a batch behind (Redis does not roll scripts back).

Counters. One hash per entity (``e:u:<user>``, ``e:i:<item>``, ``e:uc:<user>:<category>``):

- ``t``: the event time (epoch ms) of the latest impression counted; ``n``: impressions counted
  ever (a version: it grows with every batch that touches the entity);
- ``di dc dv``: impressions, clicks, conversions of the UTC day of ``t``;
- ``hi hc hv``: the same over the 60 one-minute buckets of event time up to and including the
  minute of ``t``, kept in a second hash (``...:m``, fields ``<epoch minute><i|c|v>``) so that
  buckets leaving the hour can be subtracted and deleted.

Events arrive out of event-time order across partitions. An event older than the day of ``t`` and
than its hour window is counted in neither span (it would already have been dropped had it arrived
in order), so the state depends only on the set of events applied, never on their order: the
property that lets a test recompute it in plain Python. Such late impressions are counted per
entity kind in the totals (``late.u``, ``late.i``, ``late.uc``) and in the run's metadata, not
dead-lettered: lateness belongs to an entity, not to a record (a record can be late for its user,
whose latest event is already on the next day, and on time for its item).

Every applied batch also marks the entities it touched in ``dirty`` (entity key -> ``n``). The
online writer derives Feast rows from the committed state of the dirty entities and unmarks an
entity only if its ``n`` is still the one it wrote, so a crash between a commit and the Feast
write is repaired by whoever flushes next.

Lifetime. An entity's two hashes expire ``ttl`` after the batch that last touched it, set by the
same script that applies the batch (a replayed batch changes nothing, its TTL included): ``ttl``
is the declared TTL of the real-time table the entity feeds, and must be at least a day. An
entity unseen for a day has no count left in either span (its next impression is on a later UTC
day of event time, which resets ``today``, and more than an hour later), so while event time keeps
pace with the clock an expiry never changes a value, it only frees the memory; ``n`` restarts, which
the dirty marks (set to the new ``n`` by every commit) do not mind. The offsets and totals never
expire: they are the record of what was applied.

The context map holds one key per ``common_feature_index`` (``ctx:<index>``: the user id, or
empty when the row has none), which expires the longest entity ``ttl`` after the row was last
applied, or is deleted by a tombstone (a record of the index without a value, the compacted
topic's deletion). A context is needed only until the samples of its session are applied: the replay sends
it just before the first of them and an Ali-CCP session is one page view, so its samples follow
within seconds, and an applier applies contexts just before the samples that need them. A sample
whose context expired before it was applied (an applier more than a day behind on samples but not
on contexts) still counts for its item and is counted as ``unresolved_context``, never silently.

All keys share the hash tag ``{<samples topic>}``, so the state lives in one slot of a Redis
cluster and the scripts stay valid there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import redis

#: The shortest TTL of entity state: the ``today`` span (see the module docstring).
MIN_TTL_SECONDS = 86_400
#: The counter fields of an entity, in the order :meth:`StreamState.read_states` returns them.
STATE_FIELDS = ("t", "n", "di", "dc", "dv", "hi", "hc", "hv")

_OFFSET_CHECK = """
local function check_offsets(offsets, a)
  local moves = tonumber(ARGV[a])
  local stored, conflict = {}, false
  for j = 0, moves - 1 do
    local current = redis.call('HGET', offsets, ARGV[a + 1 + 3 * j]) or '0'
    stored[#stored + 1] = current
    if current ~= ARGV[a + 2 + 3 * j] then conflict = true end
  end
  return conflict, stored, moves, a + 1 + 3 * moves
end

local function advance_offsets(offsets, a, moves)
  for j = 0, moves - 1 do
    redis.call('HSET', offsets, ARGV[a + 1 + 3 * j], ARGV[a + 3 + 3 * j])
  end
end

local function add_totals(totals, a)
  local count = tonumber(ARGV[a])
  for j = 0, count - 1 do
    redis.call('HINCRBY', totals, ARGV[a + 1 + 2 * j], ARGV[a + 2 + 2 * j])
  end
  return a + 1 + 2 * count
end
"""

#: KEYS: offsets, totals, then one key per context set, then one per context deleted. ARGV: offset
#: moves, totals, the contexts' TTL in ms, how many are set, then the user of each context set
#: ("" when the row has no user id).
_APPLY_CONTEXTS = _OFFSET_CHECK + """
local conflict, stored, moves, a = check_offsets(KEYS[1], 1)
if conflict then return {0, stored} end
local b = add_totals(KEYS[2], a)
local ttl, sets = ARGV[b], tonumber(ARGV[b + 1])
for k = 3, 2 + sets do
  redis.call('SET', KEYS[k], ARGV[b + k - 1], 'PX', ttl)
end
for k = 3 + sets, #KEYS do
  redis.call('DEL', KEYS[k])
end
advance_offsets(KEYS[1], 1, moves)
return {1, stored}
"""

#: KEYS: offsets, totals, dirty, then one key per entity. ARGV: offset moves, totals, then per
#: entity: latest event ms of the batch, TTL in ms, number of minute groups, and (minute, i, c, v)
#: per group.
_APPLY_SAMPLES = _OFFSET_CHECK + """
local DAY_MS, MINUTE_MS, MINUTES_PER_DAY, HOUR = 86400000, 60000, 1440, 60
local conflict, stored, moves, a = check_offsets(KEYS[1], 1)
if conflict then return {0, stored} end
a = add_totals(KEYS[2], a)
local dirty, late = {}, {}
for k = 4, #KEYS do
  local key = KEYS[k]
  local batch_latest, ttl, groups = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local s = redis.call('HMGET', key, 't', 'n', 'di', 'dc', 'dv', 'hi', 'hc', 'hv')
  local t = tonumber(s[1])
  local n = tonumber(s[2]) or 0
  local di, dc, dv = tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0
  local hi, hc, hv = tonumber(s[6]) or 0, tonumber(s[7]) or 0, tonumber(s[8]) or 0
  local buckets = key .. ':m'
  local latest = batch_latest
  if t and t > latest then latest = t end
  local day, minute = math.floor(latest / DAY_MS), math.floor(latest / MINUTE_MS)
  if t then
    local old_minute = math.floor(t / MINUTE_MS)
    if day > math.floor(t / DAY_MS) then di, dc, dv = 0, 0, 0 end
    -- Every bucket holds at least one impression: with hi == 0 there is none to expire.
    if hi > 0 and minute > old_minute then
      if minute - old_minute >= HOUR then
        redis.call('DEL', buckets)
        hi, hc, hv = 0, 0, 0
      else
        -- The few buckets there are, rather than every minute that left the hour.
        local fields, gone = redis.call('HGETALL', buckets), {}
        for f = 1, #fields, 2 do
          local name = fields[f]
          if tonumber(string.sub(name, 1, -2)) <= minute - HOUR then
            local n, which = tonumber(fields[f + 1]), string.sub(name, -1)
            if which == 'i' then hi = hi - n elseif which == 'c' then hc = hc - n else hv = hv - n end
            gone[#gone + 1] = name
          end
        end
        if #gone > 0 then redis.call('HDEL', buckets, unpack(gone)) end
      end
    end
  end
  for g = 1, groups do
    local m, gi = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    local gc, gv = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    a = a + 4
    n = n + gi
    local counted = false
    if math.floor(m / MINUTES_PER_DAY) == day then di, dc, dv, counted = di + gi, dc + gc, dv + gv, true end
    if m > minute - HOUR then
      redis.call('HINCRBY', buckets, m .. 'i', gi)
      if gc > 0 then redis.call('HINCRBY', buckets, m .. 'c', gc) end
      if gv > 0 then redis.call('HINCRBY', buckets, m .. 'v', gv) end
      hi, hc, hv, counted = hi + gi, hc + gc, hv + gv, true
    end
    if not counted then
      local kind = string.match(key, '}:e:(%a+):')
      late[kind] = (late[kind] or 0) + gi
    end
  end
  redis.call('HSET', key, 't', string.format('%d', latest), 'n', n, 'di', di, 'dc', dc, 'dv', dv,
             'hi', hi, 'hc', hc, 'hv', hv)
  redis.call('PEXPIRE', key, ttl)
  redis.call('PEXPIRE', buckets, ttl)
  dirty[#dirty + 1] = key
  dirty[#dirty + 1] = n
  if #dirty >= 4000 then
    redis.call('HSET', KEYS[3], unpack(dirty))
    dirty = {}
  end
end
if #dirty > 0 then redis.call('HSET', KEYS[3], unpack(dirty)) end
local late_counts = {}
for kind, count in pairs(late) do
  redis.call('HINCRBY', KEYS[2], 'late.' .. kind, count)
  late_counts[#late_counts + 1] = kind
  late_counts[#late_counts + 1] = count
end
advance_offsets(KEYS[1], 1, moves)
return {1, stored, late_counts}
"""

#: Flat integers, 8 per key (-1 for a missing field): cheaper to send and parse than nested strings.
_READ_STATES = """
local out = {}
for _, key in ipairs(KEYS) do
  local s = redis.call('HMGET', key, 't', 'n', 'di', 'dc', 'dv', 'hi', 'hc', 'hv')
  for j = 1, 8 do out[#out + 1] = tonumber(s[j]) or -1 end
end
return out
"""

#: KEYS: dirty, then entity keys found expired. ARGV: (entity key, n written) pairs; unmark only
#: what was not touched since, and the expired keys that are still gone.
_CLEAR_DIRTY = """
local cleared = 0
for j = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[j]) == ARGV[j + 1] then
    redis.call('HDEL', KEYS[1], ARGV[j])
    cleared = cleared + 1
  end
end
for k = 2, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 0 then cleared = cleared + redis.call('HDEL', KEYS[1], KEYS[k]) end
end
return cleared
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class OffsetMove:
    """Advance ``partition`` from ``expected`` (what must be stored) to ``new``."""

    partition: int
    expected: int
    new: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Outcome of an apply script: ``stored`` holds the offsets found (what to resume from on conflict)."""

    applied: bool
    stored: dict[int, int]
    #: ``late.<kind>``: impressions the commit counted in neither span of their entity (module docstring).
    late: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EntityState:
    """Committed counters of one entity (see the module docstring for the fields)."""

    key: str
    latest_ms: int
    version: int
    today: tuple[int, int, int]
    hour: tuple[int, int, int]


class LeaseLost(RuntimeError):
    """Another applier took over the stream (this one stalled longer than the lease)."""


class TopicRecreated(RuntimeError):
    """The applied offsets of a topic are beyond its end: it was deleted and re-created (or lost data)."""


def refuse_offsets_beyond(topic: str, applied: Mapping[int, int], ends: Mapping[int, int]) -> None:
    """Raise :class:`TopicRecreated` if an applied offset is beyond the end of its partition.

    Continuing would skip the new topic's records up to the old offsets (or, behind them, read
    nothing and wait): the state belongs to a topic that no longer exists, and only the user can
    say whether to start over, so the stream stops and says how.
    """
    ahead = {p: o for p, o in applied.items() if o > ends.get(p, 0)}
    if ahead:
        raise TopicRecreated(
            f"the streaming state of {topic} has applied offsets {ahead} beyond the topic's end offsets "
            f"{dict(ends)}: the topic was deleted and re-created (or lost records). To apply the new topic "
            f"from its start, reset the stream: `python -m taobao_assets.streaming reset --online --yes`")


class StreamState:
    """The Redis keys of one stream (named after its samples topic) and the scripts that change them.

    ``ttl_seconds`` maps each entity kind (``u``, ``i``, ``uc``: the part of the key after ``e:``)
    to the lifetime of its state; the contexts live as long as the longest (module docstring).
    """

    def __init__(self, client: redis.Redis, stream: str, ttl_seconds: Mapping[str, int]) -> None:
        if not ttl_seconds or min(ttl_seconds.values()) < MIN_TTL_SECONDS:
            raise ValueError(
                f"streaming state TTLs {dict(ttl_seconds)}: every entity kind needs one of at least "
                f"{MIN_TTL_SECONDS} s (a day), or an expiry would drop impressions still counted today; "
                f"raise ttl_seconds of the real-time tables in taobao_assets/realtime_tables.py")
        self.client = client
        self.stream = stream
        self.entity_ttl_ms = {kind: ttl * 1000 for kind, ttl in ttl_seconds.items()}
        self.context_ttl_ms = max(self.entity_ttl_ms.values())
        self.prefix = f"tfp:stream:{{{stream}}}:"
        self.sample_offsets_key = self.prefix + "offsets:samples"
        self.context_offsets_key = self.prefix + "offsets:common_features"
        self.context_prefix = self.prefix + "ctx:"
        self.totals_key = self.prefix + "totals"
        self.dirty_key = self.prefix + "dirty"
        self.lease_key = self.prefix + "lease"
        self.progress_key = self.prefix + "progress"
        self.entity_prefix = self.prefix + "e:"
        self._apply_contexts = client.register_script(_APPLY_CONTEXTS)
        self._apply_samples = client.register_script(_APPLY_SAMPLES)
        self._read_states = client.register_script(_READ_STATES)
        self._clear_dirty = client.register_script(_CLEAR_DIRTY)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    # --- offsets and totals -------------------------------------------------------------
    def _offsets(self, key: str) -> dict[int, int]:
        return {int(p): int(o) for p, o in cast(dict[bytes, bytes], self.client.hgetall(key)).items()}

    def sample_offsets(self) -> dict[int, int]:
        """Next offset to apply, per samples partition (absent: nothing applied yet)."""
        return self._offsets(self.sample_offsets_key)

    def context_offsets(self) -> dict[int, int]:
        return self._offsets(self.context_offsets_key)

    def totals(self) -> dict[str, int]:
        """Stream-wide counts: impressions, clicks, conversions, dead letters, unresolved contexts."""
        totals = cast(dict[bytes, bytes], self.client.hgetall(self.totals_key))
        return {k.decode(): int(v) for k, v in totals.items()}

    # --- applying batches ---------------------------------------------------------------
    @staticmethod
    def _moves_args(moves: Sequence[OffsetMove]) -> list[int | str]:
        args: list[int | str] = [len(moves)]
        for move in moves:
            args += [str(move.partition), str(move.expected), str(move.new)]
        return args

    @staticmethod
    def _totals_args(totals: Mapping[str, int]) -> list[int | str]:
        args: list[int | str] = [len(totals)]
        for name, count in totals.items():
            args += [name, count]
        return args

    @staticmethod
    def _commit(reply: list[Any], moves: Sequence[OffsetMove]) -> Commit:
        late = reply[2] if len(reply) > 2 else []
        return Commit(bool(reply[0]), {m.partition: int(o) for m, o in zip(moves, reply[1], strict=True)},
                      {f"late.{late[i].decode()}": int(late[i + 1]) for i in range(0, len(late), 2)})

    def apply_contexts(self, moves: Sequence[OffsetMove], users: Mapping[str, int | None],
                       totals: Mapping[str, int], deleted: Iterable[str] = ()) -> Commit:
        """Record the user of each common_feature_index (``None``: the row has no user id), forget the
        ``deleted`` ones (tombstones), and advance."""
        args = [*self._moves_args(moves), *self._totals_args(totals), self.context_ttl_ms, len(users)]
        keys = [self.context_offsets_key, self.totals_key]
        for index, user in users.items():
            keys.append(self.context_prefix + index)
            args.append("" if user is None else str(user))
        keys += [self.context_prefix + index for index in deleted]
        reply = self._apply_contexts(keys=keys, args=args)
        return self._commit(reply, moves)

    def apply_samples(self, moves: Sequence[OffsetMove], deltas: Deltas, totals: Mapping[str, int]) -> Commit:
        """Apply counter increments per entity and advance the sample offsets, all or nothing."""
        start = len(self.entity_prefix)
        ttl_ms = np.empty(len(deltas.keys), np.int64)
        for e, key in enumerate(deltas.keys):
            ttl = self.entity_ttl_ms.get(key[start:key.find(":", start)])
            if ttl is None:
                raise ValueError(f"state key {key!r} is of no entity kind with a TTL ({sorted(self.entity_ttl_ms)})")
            ttl_ms[e] = ttl
        # Per entity: latest, TTL, number of groups, then (minute, i, c, v) per group; laid out by numpy.
        counts = deltas.group_counts
        sizes = 3 + 4 * counts
        firsts = np.cumsum(sizes) - sizes
        flat = np.empty(int(sizes.sum()), np.int64)
        flat[firsts], flat[firsts + 1], flat[firsts + 2] = deltas.latest_ms, ttl_ms, counts
        group_firsts = np.cumsum(counts) - counts
        within = np.arange(len(deltas.groups)) - np.repeat(group_firsts, counts)
        at = np.repeat(firsts + 3, counts) + 4 * within
        flat[at[:, None] + np.arange(4)] = deltas.groups
        args = [*self._moves_args(moves), *self._totals_args(totals), *flat.tolist()]
        keys = [self.sample_offsets_key, self.totals_key, self.dirty_key, *deltas.keys]
        return self._commit(self._apply_samples(keys=keys, args=args), moves)

    def users_of(self, indexes: Sequence[str]) -> dict[str, int | None]:
        """User of each known common_feature_index (``None``: no user id); unknown ones are left out."""
        if not indexes:
            return {}
        found = cast(list[bytes | None], self.client.mget([self.context_prefix + i for i in indexes]))
        return {index: (int(user) if user else None) for index, user in zip(indexes, found, strict=True)
                if user is not None}

    # --- online writes ------------------------------------------------------------------
    def dirty_chunks(self, size: int = 5_000) -> Iterator[list[str]]:
        """The entity keys whose committed state is not yet in the online store, ``size`` at a time."""
        chunk: list[str] = []
        for key, _ in self.client.hscan_iter(self.dirty_key, count=size):
            chunk.append(key.decode())
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def read_states(self, keys: Sequence[str]) -> list[EntityState]:
        """Committed counters of ``keys`` (keys without state are skipped)."""
        values = self._read_states(keys=list(keys))
        states = []
        for i, key in enumerate(keys):
            t, n, di, dc, dv, hi, hc, hv = values[8 * i: 8 * i + 8]
            if t >= 0:
                states.append(EntityState(key, t, n, (di, dc, dv), (hi, hc, hv)))
        return states

    def clear_dirty(self, written: Sequence[EntityState], expired: Sequence[str] = ()) -> int:
        """Unmark entities whose state was written, unless a commit touched them meanwhile, and the
        ``expired`` ones (marked, but their state was gone when read), unless a commit recreated them."""
        if not written and not expired:
            return 0
        args: list[str | int] = []
        for state in written:
            args += [state.key, state.version]
        return int(self._clear_dirty(keys=[self.dirty_key, *expired], args=args))

    # --- the lease: one applier at a time -----------------------------------------------
    def try_lease(self, owner: str, seconds: float) -> bool:
        return bool(self.client.set(self.lease_key, owner, nx=True, px=int(seconds * 1000)))

    def renew_lease(self, owner: str, seconds: float) -> None:
        if not self._renew(keys=[self.lease_key], args=[owner, int(seconds * 1000)]):
            raise LeaseLost(
                f"the streaming lease of {self.stream} is held by {self.lease_holder()!r}, not {owner!r}: "
                f"this applier stalled longer than the lease ({seconds:g} s) and another took over"
            )

    def release_lease(self, owner: str) -> None:
        self._release(keys=[self.lease_key], args=[owner])

    def lease_holder(self) -> str | None:
        holder = cast(bytes | None, self.client.get(self.lease_key))
        return None if holder is None else holder.decode()

    # --- progress of the continuous consumer --------------------------------------------
    def publish_progress(self, progress: Mapping[str, Any], ttl_seconds: float) -> None:
        """What the continuous consumer last reported; expires so a dead one stops being reported."""
        report = {**progress, "reported_at_ms": int(time.time() * 1000)}
        self.client.set(self.progress_key, json.dumps(report), px=int(ttl_seconds * 1000))

    def progress(self) -> dict[str, Any] | None:
        raw = cast(bytes | None, self.client.get(self.progress_key))
        return None if raw is None else dict(json.loads(raw))

    def reset(self) -> int:
        """Delete the whole state of the stream (after its topics were re-created); returns keys deleted."""
        deleted = 0
        # Topic names are [a-zA-Z0-9._-], none of which is special in a SCAN pattern.
        for keys in _chunks(self.client.scan_iter(match=self.prefix + "*", count=10_000), 10_000):
            deleted += cast(int, self.client.unlink(*keys))
        return deleted


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


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
