"""The streaming state in Redis: applied offsets, the counters they produced, the context map, the lease.

Exactly once. A batch of sample records is applied by one transaction: ``WATCH`` the applied
offsets, read them and the state of the batch's entities, compute the new counters in the client
(:mod:`taobao_assets.streaming.counters`, numpy over the whole batch), and only if every
partition's stored offset is the one the batch starts from, write the counters and the advanced
offsets between ``MULTI`` and ``EXEC``. Every commit writes the offsets, so a commit by anyone
else after the ``WATCH`` makes Redis refuse the ``EXEC``: nothing of the batch is written.
Redis applies ``EXEC`` atomically and its append-only file logs it as one transaction (a torn one
at the end of the file is dropped on load), so counters and offsets are never seen (or restored
after a crash) one without the other: a replayed batch finds its offsets already advanced and
changes nothing, a lost one finds them behind and applies. The commands are built here and cannot
fail on their arguments, so an error never leaves half a batch behind (Redis does not roll a
transaction back). Working the counters out in a Lua script, entity by entity, cost Redis about
30 us per entity; plain commands cost it a few. The common-features commits stay one small script.

Counters. One string per entity (``e:u:<user>``, ``e:i:<item>``, ``e:uc:<user>:<category>``):
little-endian int64s (:func:`pack`), read with one ``MGET`` per batch and written with one ``SET``
per entity, so a batch costs Redis a few microseconds per entity:

- ``t``: the event time (epoch ms) of the latest impression counted; ``n``: impressions counted
  ever (a version: it grows with every batch that touches the entity);
- ``di dc dv``: impressions, clicks, conversions of the UTC day of ``t``;
- ``hi hc hv``: the same over the 60 one-minute buckets of event time up to and including the
  minute of ``t``;
- then one (epoch minute, impressions, clicks, conversions) per bucket of that hour, so that
  buckets leaving the hour can be subtracted and dropped.

The ``layout`` key names this layout (:data:`LAYOUT`); an applier refuses a stream whose state
another layout wrote.

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

Lifetime. An entity's state expires ``ttl`` after the batch that last touched it, set by the
same transaction that applies the batch (a replayed batch changes nothing, its TTL included): ``ttl``
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
cluster and the scripts and transactions stay valid there.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import redis

from taobao_assets.online_encoding import Cells, command, decimal, single, wire
from taobao_assets.online_writes import raw_pipeline
from taobao_assets.resources.redis import unlink_matching
from taobao_assets.streaming.counters import Deltas, Stored, Updated, advance

#: The shortest TTL of entity state: the ``today`` span (see the module docstring).
MIN_TTL_SECONDS = 86_400

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
    """Outcome of a commit: ``stored`` holds the offsets found (what to resume from on conflict)."""

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
        self.layout_key = self.prefix + "layout"
        self._apply_contexts = client.register_script(_APPLY_CONTEXTS)
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
        return Commit(bool(reply[0]), {m.partition: int(o) for m, o in zip(moves, reply[1], strict=True)})

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
        """Apply counter increments per entity and advance the sample offsets, all or nothing.

        One transaction on one connection: ``WATCH`` the offsets, read them and the entities' state,
        compute the new state (:mod:`taobao_assets.streaming.counters`), and write it with the
        offsets between ``MULTI`` and ``EXEC``. Every commit writes the offsets, so if another
        applier commits after the ``WATCH``, Redis refuses the ``EXEC`` and nothing is written;
        if the stored offsets are not the batch's start, nothing is sent at all.
        """
        kinds = self._kinds(deltas.keys)
        rows = len(deltas.keys)
        keys = [key.encode() for key in deltas.keys]
        offsets_key = self.sample_offsets_key.encode()
        with raw_pipeline(self.client) as pipe:
            read = single(b"WATCH", offsets_key) + single(b"HMGET", offsets_key,
                                                     *(str(m.partition).encode() for m in moves))
            _, offsets, *found = pipe.receive(pipe.send(read + (single(b"MGET", *keys) if keys else b""),
                                                        3 if keys else 2))
            values = found[0] if keys else []
            stored = {m.partition: int(o or 0) for m, o in zip(moves, offsets, strict=True)}
            if any(stored[m.partition] != m.expected for m in moves):
                pipe.receive(pipe.send(single(b"UNWATCH"), 1))
                return Commit(False, stored)
            updated = advance(unpack(values), deltas)
            late = {f"late.{kind}": count for kind, count in _sum(kinds, updated.late).items()}
            commands = [
                wire(command(rows, b"SET", Cells.of(keys, np.arange(rows)), pack(updated), b"PX",
                             decimal(np.array([self.entity_ttl_ms[kind] for kind in kinds], np.int64))), rows),
                *([single(b"HSET", self.dirty_key.encode(), *(
                    part for key, n in zip(keys, updated.n.tolist(), strict=True) for part in (key, b"%d" % n)))]
                  if keys else []),
                *(single(b"HINCRBY", self.totals_key.encode(), name.encode(), b"%d" % value)
                  for name, value in {**totals, **late}.items()),
                single(b"HSET", offsets_key, *(part for m in moves for part in (b"%d" % m.partition, b"%d" % m.new))),
                single(b"SET", self.layout_key.encode(), LAYOUT.encode()),
            ]
            done = pipe.transaction(b"".join(commands), rows + len(commands) - 1)
        if done is None:  # another applier committed after the WATCH
            return Commit(False, self._offsets(self.sample_offsets_key))
        return Commit(True, stored, late)

    def check_layout(self) -> None:
        """Refuse a stream whose state another layout of the counters wrote (an older version)."""
        found = cast(bytes | None, self.client.get(self.layout_key))
        if self.client.exists(self.sample_offsets_key) and (found or b"").decode() != LAYOUT:
            raise ValueError(
                f"the streaming state of {self.stream} was written in counter layout {found!r}, this version "
                f"reads layout {LAYOUT!r}: reset the stream (`python -m taobao_assets.streaming reset --online "
                f"--yes`) and apply it again")

    def _kinds(self, keys: Sequence[str]) -> list[str]:
        """The entity kind of each state key (``u``, ``i``, ``uc``), checked to have a TTL."""
        start = len(self.entity_prefix)
        kinds = [key[start:key.find(":", start)] for key in keys]
        unknown = set(kinds) - set(self.entity_ttl_ms)
        if unknown:
            raise ValueError(f"state keys of kinds {sorted(unknown)} have no TTL ({sorted(self.entity_ttl_ms)})")
        return kinds

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
        values = cast(list[bytes | None], self.client.mget(list(keys))) if keys else []
        states = []
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                t, n, di, dc, dv, hi, hc, hv = np.frombuffer(value, "<i8", 8).tolist()
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
        # Topic names are [a-zA-Z0-9._-], none of which is special in a SCAN pattern.
        return unlink_matching(self.client, self.prefix + "*")


#: The layout of the counters this module reads and writes (see the module docstring).
LAYOUT = "packed-int64-v1"
#: Fixed fields of an entity's state before its buckets: t, n, di, dc, dv, hi, hc, hv.
_FIXED = 8


def pack(updated: Updated) -> Cells:
    """Each entity's state as the string the store keeps (the module docstring's layout)."""
    entities = len(updated.t)
    owner = updated.buckets[:, 0]
    counts = np.bincount(owner, minlength=entities)
    sizes = _FIXED + 4 * counts
    firsts = np.cumsum(sizes) - sizes
    flat = np.empty(int(sizes.sum()), "<i8")
    for k, column in enumerate((updated.t, updated.n, *updated.today.T, *updated.hour.T)):
        flat[firsts + k] = column
    within = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    flat[(firsts[owner] + _FIXED + 4 * within)[:, None] + np.arange(4)] = updated.buckets[:, 1:]
    return Cells.packed(flat.view(np.uint8), sizes * 8)


def unpack(values: Sequence[bytes | None]) -> Stored:
    """The states ``MGET`` returned (``None``: no state) as :class:`Stored`."""
    lengths = np.fromiter((0 if v is None else len(v) for v in values), np.int64, len(values)) // 8
    flat = np.frombuffer(b"".join(v for v in values if v is not None), "<i8")
    firsts = np.cumsum(lengths) - lengths
    found = lengths > 0
    header = np.zeros((len(values), _FIXED), np.int64)
    header[:, 0] = -1
    header[found] = flat[firsts[found][:, None] + np.arange(_FIXED)]
    counts = np.maximum(lengths - _FIXED, 0) // 4
    owner = np.repeat(np.arange(len(values)), counts)
    within = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    buckets = flat[(firsts[owner] + _FIXED + 4 * within)[:, None] + np.arange(4)].reshape(-1, 4)
    return Stored(header[:, 0], header[:, 1], header[:, 2:5], np.column_stack([owner, buckets]).astype(np.int64))


def _sum(kinds: Sequence[str], late: np.ndarray) -> dict[str, int]:
    """Late impressions per entity kind (kinds with none left out)."""
    totals: Counter[str] = Counter()
    for kind, count in zip(kinds, late.tolist(), strict=True):
        if count:
            totals[kind] += count
    return dict(totals)
