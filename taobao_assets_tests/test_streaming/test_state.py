"""The Redis state store: one atomic script per batch, whose result does not depend on event order,
and whose keys expire unless something keeps them current."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import cast

import pytest

from deploy.service import Service
from taobao_assets.resources.redis import RedisResource
from taobao_assets.settings import Settings
from taobao_assets.streaming.counters import Deltas, EntityDelta
from taobao_assets.streaming.resource import STATE_TTL_SECONDS
from taobao_assets.streaming.state import OffsetMove, StreamState, unpack

DAY_MS, MINUTE_MS = 86_400_000, 60_000
#: 23:10 UTC: the events below cross midnight, and the hour window crosses the day.
START = 20_400 * DAY_MS + 23 * 3_600_000 + 10 * MINUTE_MS


@pytest.fixture
def state(settings: Settings, redis_service: Service) -> Iterator[StreamState]:
    state = StreamState(RedisResource.from_settings(settings).client(), f"test.state.{uuid.uuid4().hex[:8]}",
                        STATE_TTL_SECONDS)
    yield state
    state.reset()


def apply_one_by_one(state: StreamState, key: str, events: list[tuple[int, int, int]]) -> None:
    for i, (ms, click, conversion) in enumerate(events):
        delta = EntityDelta(ms, {ms // MINUTE_MS: [1, click, conversion]})
        commit = state.apply_samples([OffsetMove(0, i, i + 1)], Deltas.of({key: delta}), {"impressions": 1})
        assert commit.applied


def test_counters_depend_on_the_events_not_on_their_order(state: StreamState) -> None:
    rng = random.Random(3)
    events = []
    for _ in range(300):
        click = int(rng.random() < 0.3)
        events.append((START + rng.randrange(0, 3 * 3_600_000), click, click * int(rng.random() < 0.3)))
    key_in_order, key_shuffled = state.entity_prefix + "i:1", state.entity_prefix + "i:2"
    apply_one_by_one(state, key_in_order, sorted(events))
    shuffled = events[:]
    rng.shuffle(shuffled)
    state.client.delete(state.sample_offsets_key)
    apply_one_by_one(state, key_shuffled, shuffled)

    in_order, out_of_order = state.read_states([key_in_order, key_shuffled])
    latest = max(ms for ms, _, _ in events)
    today = [e for e in events if e[0] // DAY_MS == latest // DAY_MS]
    hour = [e for e in events if e[0] // MINUTE_MS > latest // MINUTE_MS - 60]
    expected = (latest, len(events), *(tuple(map(sum, zip(*[(1, c, v) for _, c, v in span], strict=True)))
                                       for span in (today, hour)))
    assert (in_order.latest_ms, in_order.version, in_order.today, in_order.hour) == expected
    assert (out_of_order.latest_ms, out_of_order.version, out_of_order.today, out_of_order.hour) == expected
    # Buckets older than the hour are dropped as the hour moves on.
    (stored,) = unpack([cast(bytes, state.client.get(key_in_order))]).buckets[:, 1:2].T
    assert len(stored) and all(minute > latest // MINUTE_MS - 60 for minute in stored)


def test_a_batch_whose_start_offset_is_not_the_stored_one_changes_nothing(state: StreamState) -> None:
    key = state.entity_prefix + "u:7"
    delta = Deltas.of({key: EntityDelta(START, {START // MINUTE_MS: [2, 1, 0]})})
    assert state.apply_samples([OffsetMove(0, 0, 10), OffsetMove(1, 0, 5)], delta, {"impressions": 2}).applied
    before = state.read_states([key]), state.totals(), state.sample_offsets()
    replayed = state.apply_samples([OffsetMove(0, 0, 10)], delta, {"impressions": 2})
    skipped_ahead = state.apply_samples([OffsetMove(0, 10, 20), OffsetMove(1, 7, 9)], delta, {})
    assert not replayed.applied and replayed.stored == {0: 10}
    assert not skipped_ahead.applied and skipped_ahead.stored == {0: 10, 1: 5}
    assert (state.read_states([key]), state.totals(), state.sample_offsets()) == before


def test_an_entity_is_unmarked_only_if_no_commit_touched_it_since_it_was_read(state: StreamState) -> None:
    key = state.entity_prefix + "i:9"
    one = Deltas.of({key: EntityDelta(START, {START // MINUTE_MS: [1, 0, 0]})})
    state.apply_samples([OffsetMove(0, 0, 1)], one, {})
    (read,) = state.read_states([key])
    state.apply_samples([OffsetMove(0, 1, 2)], one, {})
    assert state.clear_dirty([read]) == 0
    assert list(state.dirty_chunks()) == [[key]]
    (fresh,) = state.read_states([key])
    assert state.clear_dirty([fresh]) == 1
    assert list(state.dirty_chunks()) == []


def test_state_expires_its_ttl_after_the_last_batch_and_restarts_from_nothing(state: StreamState) -> None:
    key = state.entity_prefix + "uc:3:4"
    one = Deltas.of({key: EntityDelta(START, {START // MINUTE_MS: [1, 1, 0]})})
    assert state.apply_contexts([OffsetMove(0, 0, 2)], {"a": 3, "b": None}, {}).applied
    assert state.apply_samples([OffsetMove(0, 0, 1)], one, {"impressions": 1}).applied
    client, day_ms = state.client, STATE_TTL_SECONDS["uc"] * 1000
    for ttl_key, declared in ((key, day_ms),
                              (state.context_prefix + "a", max(STATE_TTL_SECONDS.values()) * 1000),
                              (state.context_prefix + "b", max(STATE_TTL_SECONDS.values()) * 1000)):
        assert 0 < cast(int, client.pttl(ttl_key)) <= declared, ttl_key
    for kept in (state.sample_offsets_key, state.context_offsets_key, state.totals_key):
        assert client.pttl(kept) == -1, f"{kept} must never expire"
    assert state.users_of(["a", "b", "c"]) == {"a": 3, "b": None}

    # The entity expires (for real, its TTL cut short) while still marked for the online writer.
    client.pexpire(key, 1)
    time.sleep(0.01)
    assert not client.exists(key)
    assert state.read_states([key]) == []
    assert state.clear_dirty([], expired=[key]) == 1
    assert list(state.dirty_chunks()) == []
    # Its next impression starts it afresh, TTL included.
    assert state.apply_samples([OffsetMove(0, 1, 2)], one, {"impressions": 1}).applied
    (fresh,) = state.read_states([key])
    assert (fresh.version, fresh.today, fresh.hour) == (1, (1, 1, 0), (1, 1, 0))
    assert 0 < cast(int, client.pttl(key)) <= day_ms


def test_state_refuses_a_ttl_shorter_than_the_today_span(settings: Settings, redis_service: Service) -> None:
    client = RedisResource.from_settings(settings).client()
    with pytest.raises(ValueError, match="at least 86400 s"):
        StreamState(client, "test.state.short", {**STATE_TTL_SECONDS, "i": 3_600})


def test_a_tombstone_deletes_a_context_in_the_same_commit(state: StreamState) -> None:
    assert state.apply_contexts([OffsetMove(0, 0, 2)], {"a": 3, "b": None}, {}).applied
    assert state.apply_contexts([OffsetMove(0, 2, 4)], {"c": 5}, {}, deleted={"a", "never-set"}).applied
    assert state.users_of(["a", "b", "c", "never-set"]) == {"b": None, "c": 5}
    # A replay of the batch changes nothing, the deletion included.
    assert not state.apply_contexts([OffsetMove(0, 2, 4)], {"c": 5}, {}, deleted={"a"}).applied
    assert state.users_of(["a", "b", "c"]) == {"b": None, "c": 5}


def test_impressions_older_than_both_spans_of_their_entity_are_counted_late(state: StreamState) -> None:
    user, item = state.entity_prefix + "u:1", state.entity_prefix + "i:1"
    two_days_later = START + 2 * DAY_MS
    first = state.apply_samples([OffsetMove(0, 0, 1)], Deltas.of(
        {user: EntityDelta(two_days_later, {two_days_later // MINUTE_MS: [1, 0, 0]})}), {"impressions": 1})
    assert first.applied and first.late == {}
    # Two days older than the user's latest: late for the user; the item has seen nothing, so on time.
    old = EntityDelta(START, {START // MINUTE_MS: [3, 1, 0]})
    second = state.apply_samples([OffsetMove(0, 1, 2)], Deltas.of({user: old, item: old}), {"impressions": 3})
    assert second.late == {"late.u": 3}
    assert state.totals()["late.u"] == 3 and "late.i" not in state.totals()
    (counted,) = state.read_states([user])
    assert (counted.version, counted.today, counted.hour) == (4, (1, 0, 0), (1, 0, 0))


def test_a_state_of_another_layout_is_refused(state: StreamState) -> None:
    one = Deltas.of({state.entity_prefix + "i:5": EntityDelta(START, {START // MINUTE_MS: [1, 0, 0]})})
    assert state.apply_samples([OffsetMove(0, 0, 1)], one, {}).applied
    state.check_layout()
    state.client.delete(state.layout_key)  # as an older version left it
    with pytest.raises(ValueError, match="reset the stream"):
        state.check_layout()


def test_a_batch_of_dead_letters_only_advances_the_offsets(state: StreamState) -> None:
    empty = Deltas.of({})
    commit = state.apply_samples([OffsetMove(0, 0, 3)], empty, {"dead_letter.sample_skeleton.null_value": 3})
    assert commit.applied and state.sample_offsets() == {0: 3}
    assert state.totals() == {"dead_letter.sample_skeleton.null_value": 3}
