"""The streaming path end to end on the real Kafka, Redis and Feast: sensor, runs, crashes, follower."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, RunRequest, SensorResult, build_sensor_context

from taobao_assets.failpoints import FAILPOINT_ENV
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.features import smoothed_ctr
from taobao_assets.jobs import streaming_job
from taobao_assets.realtime_tables import REALTIME_TABLES, RealtimeTable
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.sensors.streaming import SensorCursor, streaming_sensor
from taobao_assets.settings import Settings
from taobao_assets.source.replay import PRODUCED_AT_HEADER, ReplayRecord
from taobao_assets.source.topics import LINE_HEADER, SOURCE_HEADER
from taobao_assets.streaming.applier import Applier
from taobao_assets.streaming.dead_letter import (
    MESSAGE_HEADER,
    REASON_HEADER,
    RecordFault,
    read_dead_letters,
    replay_dead_letters,
)
from taobao_assets.streaming.join import KINDS
from taobao_assets.streaming.online import drop_project
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets.streaming.run import OffsetRange, RangeRun, apply_ranges
from taobao_assets.streaming.state import LeaseLost, StreamState, TopicRecreated
from taobao_assets_tests.conftest import TOPICS
from taobao_assets_tests.test_streaming.conftest import Expected, produce, recompute

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Pinned in every run so the expected CTRs do not depend on which gold days exist.
PRIOR = 0.04


def tick(stream: StreamingResource, instance: DagsterInstance, cursor: str | None) -> SensorResult:
    with build_sensor_context(instance=instance, cursor=cursor, resources={"streaming": stream}) as context:
        result = streaming_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def execute_request(stream: StreamingResource, instance: DagsterInstance, request: RunRequest
                    ) -> ExecuteInProcessResult:
    """Execute a requested run the way the daemon would, with its config and tags (and the pinned prior)."""
    config = request.run_config
    config["ops"]["apply_sample_ranges"]["config"]["ctr_prior"] = PRIOR
    return streaming_job.execute_in_process(run_config=config, instance=instance, tags=request.tags,
                                            resources={"streaming": stream}, raise_on_error=False)


def execute(stream: StreamingResource, instance: DagsterInstance, result: SensorResult
            ) -> list[ExecuteInProcessResult]:
    return [execute_request(stream, instance, request) for request in result.run_requests or []]


def catch_up(stream: StreamingResource, instance: DagsterInstance, cursor: str | None
             ) -> tuple[int, str | None]:
    """Tick and execute until the sensor requests nothing; returns the runs executed and the cursor."""
    executed = 0
    for _ in range(20):
        result = tick(stream, instance, cursor)
        cursor = result.cursor
        if not result.run_requests:
            return executed, cursor
        runs = execute(stream, instance, result)
        assert all(run.success for run in runs)
        executed += len(runs)
    raise AssertionError("the sensor kept requesting runs")


def run_metadata(run: ExecuteInProcessResult) -> dict[str, Any]:
    (event, *_) = run.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def samples_in(records: list[ReplayRecord]) -> int:
    return sum(r.topic == TOPICS.samples.name for r in records)


def dirty_entities(stream: StreamingResource) -> int:
    """Entities committed but not yet written to the online store."""
    return sum(len(chunk) for chunk in stream.state().dirty_chunks())


def assert_state_matches(stream: StreamingResource, expected: Expected, poison: int = 0) -> None:
    """Every entity's committed counters equal the recomputation, and no other entity exists; every
    entity and context key expires within its declared TTL; the dead letters are the rejected lines
    and ``poison`` records more."""
    state = stream.state()
    keys = {k.decode() for k in state.client.scan_iter(match=state.entity_prefix + "*", count=10_000)}
    assert keys == set(expected.counters), (
        f"entities missing {sorted(set(expected.counters) - keys)[:5]}, unexpected "
        f"{sorted(keys - set(expected.counters))[:5]}; stream totals {state.totals()}")
    assert_state_expires(state, has_contexts=expected.contexts > 0)
    found = {s.key: (s.latest_ms, s.today, s.hour) for s in state.read_states(sorted(keys))}
    wrong = {k: (found.get(k), v) for k, v in expected.counters.items() if found.get(k) != v}
    assert not wrong, f"{len(wrong)} entities differ, e.g. {list(wrong.items())[:3]}"
    totals = state.totals()
    assert (totals["impressions"], totals.get("clicks", 0), totals.get("conversions", 0)) == (
        expected.impressions, expected.clicks, expected.conversions)
    assert sum(v for k, v in totals.items() if k.startswith("dead_letter.")) == len(expected.rejected) + poison
    assert totals.get("unresolved_context", 0) == expected.unresolved
    assert dirty_entities(stream) == 0, "every committed entity should have been written online"


def assert_state_expires(state: StreamState, has_contexts: bool = True) -> None:
    """Entity keys live at most their real-time table's declared TTL, contexts (there are some if
    ``has_contexts``) the longest of them."""
    declared = {f"{state.entity_prefix}{KINDS[tuple(t.key_names)]}:": t.ttl_seconds * 1000
                for t in REALTIME_TABLES}
    contexts = [k.decode() for k in state.client.scan_iter(match=state.context_prefix + "*", count=10_000)]
    entities = [k.decode() for k in state.client.scan_iter(match=state.entity_prefix + "*", count=10_000)]
    assert entities and bool(contexts) == has_contexts
    limits = {k: max(declared.values()) for k in contexts}
    limits.update({k: next(ms for prefix, ms in declared.items() if k.startswith(prefix)) for k in entities})
    with state.client.pipeline(transaction=False) as pipe:
        for key in limits:
            pipe.pttl(key)
        ttls = dict(zip(limits, pipe.execute(), strict=True))
    wrong = {k: (ttl, limits[k]) for k, ttl in ttls.items() if not 0 < ttl <= limits[k]}
    assert not wrong, f"{len(wrong)} keys without a TTL within the declared one, e.g. {list(wrong.items())[:3]}"


def sampled_entities(stream: StreamingResource, expected: Expected, table: RealtimeTable, per_view: int,
                     rng: random.Random) -> tuple[list[str], list[dict[str, int]]]:
    """Up to ``per_view`` of ``table``'s entities in the recomputation: state keys and entity rows."""
    kind_prefix = f"{stream.state().entity_prefix}{KINDS[tuple(table.key_names)]}:"
    keys = sorted(k for k in expected.counters if k.startswith(kind_prefix))
    assert keys, f"no {table.name} entity in the events"
    keys = rng.sample(keys, min(per_view, len(keys)))
    return keys, [dict(zip(table.key_names, map(int, k[len(kind_prefix):].split(":")), strict=True)) for k in keys]


def assert_online_matches(stream: StreamingResource, expected: Expected, per_view: int = 200) -> None:
    """A sample of each real-time view read back through Feast equals the recomputation."""
    store = stream.feast.store()
    rng = random.Random(1)
    for table in REALTIME_TABLES:
        keys, rows = sampled_entities(stream, expected, table, per_view, rng)
        online = store.get_online_features(features=[f"{table.name}:{c.name}" for c in table.features],
                                           entity_rows=rows).to_dict()
        for i, key in enumerate(keys):
            _, today, hour = expected.counters[key]
            for span, (impressions, clicks, conversions) in (("today", today), ("1h", hour)):
                assert online[f"impressions_{span}"][i] == impressions, (table.name, key, span)
                assert online[f"clicks_{span}"][i] == clicks, (table.name, key, span)
                assert online[f"conversions_{span}"][i] == conversions, (table.name, key, span)
                assert online[f"ctr_{span}"][i] == pytest.approx(smoothed_ctr(clicks, impressions, PRIOR))


def assert_offline_matches(stream: StreamingResource, expected: Expected, per_view: int = 200) -> None:
    """A point-in-time retrieval at each sampled entity's latest event gets the recomputed counters:
    the streaming run's rows reached the offline store too."""
    store = stream.feast.store()
    rng = random.Random(2)
    for table in REALTIME_TABLES:
        keys, entities = sampled_entities(stream, expected, table, per_view, rng)
        rows = pd.DataFrame(entities)
        rows[TIMESTAMP_FIELD] = pd.to_datetime([expected.counters[k][0] for k in keys], unit="ms", utc=True)
        found = store.get_historical_features(
            entity_df=rows, features=[f"{table.name}:{c.name}" for c in table.features]).to_df()
        for i, key in enumerate(keys):
            _, today, hour = expected.counters[key]
            for span, counters in (("today", today), ("1h", hour)):
                assert tuple(found[f"{what}_{span}"][i] for what in ("impressions", "clicks", "conversions")) == (
                    counters), (table.name, key, span)


def dead_letters(stream: StreamingResource) -> list[Any]:
    kafka, topic = stream.kafka, stream.topics.dead_letter.name

    async def read() -> list[Any]:
        end = (await kafka.end_offsets(topic))[0]
        return [record async for record in kafka.read_range(topic, 0, 0, end)]

    return asyncio.run(read())


def test_sensor_runs_apply_every_event_once_and_match_a_recomputation(
        stream: StreamingResource, events: list[ReplayRecord]) -> None:
    produce(stream, events)
    instance = DagsterInstance.ephemeral()
    first = tick(stream, instance, None)
    requests = first.run_requests or []
    # A backlog becomes several bounded runs whose exact ranges tile each partition from offset 0.
    assert len(requests) >= samples_in(events) // stream.max_records_per_run
    assert len({r.run_key for r in requests}) == len(requests)
    tiles: dict[int, list[tuple[int, int]]] = {}
    for request in requests:
        ranges = request.run_config["ops"]["apply_sample_ranges"]["config"]["ranges"]
        assert sum(r["end"] - r["start"] for r in ranges) <= stream.max_records_per_run
        for r in ranges:
            tiles.setdefault(r["partition"], []).append((r["start"], r["end"]))
    ends = asyncio.run(stream.kafka.end_offsets(stream.topics.samples.name))
    for partition, spans in tiles.items():
        starts, stops = zip(*sorted(spans), strict=True)
        assert starts[0] == 0 and stops[-1] == ends[partition] and list(starts[1:]) == list(stops[:-1])

    runs = execute(stream, instance, first)
    assert all(run.success for run in runs)
    again = tick(stream, instance, first.cursor)
    assert not again.run_requests and again.skip_reason is not None

    expected = recompute(events, stream.state().entity_prefix)
    assert_state_matches(stream, expected)
    assert_online_matches(stream, expected)
    assert_offline_matches(stream, expected)
    metadata = [run_metadata(run) for run in runs]
    assert sum(m["records_committed"] for m in metadata) == samples_in(events)
    assert all(m["freshness_p99_ms"] is not None and m["ctr_prior_source"] == "pinned" for m in metadata)

    letters = dead_letters(stream)
    headers = [dict(m.headers) for m in letters]
    found = {(h["source"].decode(), int(h["line"]), h[REASON_HEADER].decode()) for h in headers}
    assert found == expected.rejected
    assert len(letters) == len(expected.rejected)
    assert all(h[MESSAGE_HEADER] for h in headers)

    # Re-executing a range that is already applied changes nothing.
    before = {s.key: s for s in stream.state().read_states(sorted(expected.counters))}
    replayed = execute_request(stream, instance, requests[0])
    assert replayed.success
    assert run_metadata(replayed)["records_committed"] == 0
    assert run_metadata(replayed)["records_already_applied"] > 0
    assert {s.key: s for s in stream.state().read_states(sorted(expected.counters))} == before


def send_poison(stream: StreamingResource, sample: ReplayRecord) -> dict[tuple[str, int, int], str]:
    """Records no replay writes, after the stream's own: (topic, partition, offset) -> the reason
    each must be dead-lettered with. A tombstone of an unknown context deletes nothing and is no
    dead letter."""
    samples, contexts = stream.topics.samples.name, stream.topics.common_features.name
    good = dict(sample.headers())
    at = sample.timestamp_ms
    tomorrow = int((time.time() + 86_400) * 1000)
    # (topic, key, value, headers, event time, reason)
    poison = [
        (samples, b"poison", None, good, at, RecordFault.NULL_VALUE),
        (samples, b"poison", sample.value, good, tomorrow, RecordFault.FUTURE_TIMESTAMP),
        (samples, b"poison", sample.value, {**good, SOURCE_HEADER: b"\xff\xfe"}, at, RecordFault.BAD_HEADER),
        (samples, b"poison", sample.value, {**good, LINE_HEADER: b"three"}, at, RecordFault.BAD_HEADER),
        (samples, b"poison", sample.value, {**good, PRODUCED_AT_HEADER: b"soon"}, at, RecordFault.BAD_HEADER),
        # The topic is compacted, so every record has a key; one that names no context is a dead letter.
        (contexts, b"\xff\xfe", None, good, at, RecordFault.NULL_VALUE),
        (contexts, b"poison-context", None, good, at, None),
    ]

    async def send() -> dict[tuple[str, int, int], str]:
        sent = {}
        async with stream.kafka.producer() as producer:
            for topic, key, value, headers, timestamp_ms, reason in poison:
                meta = await (await producer.send(topic, value, key=key, headers=list(headers.items()),
                                                  timestamp_ms=timestamp_ms))
                if reason is not None:
                    sent[(topic, meta.partition, meta.offset)] = reason.value
        return sent

    return asyncio.run(send())


def test_poison_records_are_dead_lettered_and_the_stream_goes_on(
        stream: StreamingResource, events: list[ReplayRecord]) -> None:
    produce(stream, events)
    poison = send_poison(stream, next(r for r in events if r.topic == TOPICS.samples.name))
    instance = DagsterInstance.ephemeral()
    _, cursor = catch_up(stream, instance, None)
    again = tick(stream, instance, cursor)
    assert not again.run_requests, "every range is applied once: nothing is requested again"
    expected = recompute(events, stream.state().entity_prefix)
    assert_state_matches(stream, expected, poison=len(poison))
    # Counted where the stream is driven too: the sensor's cursor.
    assert SensorCursor.parse(again.cursor).dead_letters == len(expected.rejected) + len(poison)
    assert stream.state().users_of(["poison-context"]) == {}
    found = {(h["topic"].decode(), int(h["partition"]), int(h["offset"])): h[REASON_HEADER].decode()
             for h in (dict(m.headers) for m in dead_letters(stream))}
    assert {origin: found.get(origin) for origin in poison} == poison

    # Replayed once its cause is gone (here: a skew that allows tomorrow), a letter is applied as a
    # new record and leaves the dead-letter topic.
    lenient = StreamingResource(kafka=stream.kafka, redis=stream.redis, feast=stream.feast,
                                topic_prefix=stream.topic_prefix, max_future_skew_seconds=3 * 86_400)
    topic = stream.topics.dead_letter.name
    assert asyncio.run(replay_dead_letters(stream.kafka, topic, RecordFault.FUTURE_TIMESTAMP)) == 1
    ends = asyncio.run(stream.kafka.end_offsets(stream.topics.samples.name))
    apply_ranges(lenient, [OffsetRange(p, 0, end) for p, end in ends.items()], owner="test", ctr_prior=PRIOR)
    assert stream.state().totals()["impressions"] == expected.impressions + 1
    left = Counter(letter.reason for letter in asyncio.run(read_dead_letters(stream.kafka, topic)))
    assert RecordFault.FUTURE_TIMESTAMP not in left and left[RecordFault.BAD_HEADER] == 3


def _apply_all_samples(stream: StreamingResource) -> RangeRun:
    ends = asyncio.run(stream.kafka.end_offsets(stream.topics.samples.name))
    return apply_ranges(stream, [OffsetRange(p, 0, end) for p, end in ends.items()], owner="test", ctr_prior=PRIOR)


def test_samples_appended_before_their_contexts_wait_for_them(
        stream: StreamingResource, events: list[ReplayRecord]) -> None:
    """Two topics: a producer may append a sample before the context it needs reaches the other
    topic. A recent sample's applier catches the contexts up again until they come."""
    patient = stream.model_copy(update={"context_wait_seconds": 120.0})
    produce(stream, [r for r in events if r.topic == TOPICS.samples.name])
    contexts = threading.Timer(3.0, produce, args=(stream, [r for r in events if r.topic != TOPICS.samples.name]))
    contexts.start()
    try:
        run = _apply_all_samples(patient)
    finally:
        contexts.join()
    assert run.report.context_catch_ups > 2, "the contexts came before the samples were read"
    expected = recompute(events, stream.state().entity_prefix)
    assert expected.unresolved == 0
    assert_state_matches(stream, expected)


def test_a_sample_whose_context_never_comes_counts_for_its_item_and_as_unresolved(
        stream: StreamingResource, events: list[ReplayRecord]) -> None:
    samples = [r for r in events if r.topic == TOPICS.samples.name]
    produce(stream, samples)
    _apply_all_samples(stream.model_copy(update={"context_wait_seconds": 0.0}))
    expected = recompute(samples, stream.state().entity_prefix)
    assert expected.unresolved == len(samples) - len(expected.rejected)
    assert not any(":u:" in key or ":uc:" in key for key in expected.counters)
    assert_state_matches(stream, expected)


def test_runs_over_what_the_replay_wrote_report_the_freshness_of_every_record(
        replayed_stream: StreamingResource, events: list[ReplayRecord], dataset: Path) -> None:
    instance = DagsterInstance.ephemeral()
    first = tick(replayed_stream, instance, None)
    runs = execute(replayed_stream, instance, first)
    assert runs and all(run.success for run in runs)
    assert not tick(replayed_stream, instance, first.cursor).run_requests
    metadata = [run_metadata(run) for run in runs]
    assert sum(m["records_committed"] for m in metadata) == samples_in(events)
    # The replay stamps every record with its send time, so every record is measured: from its send,
    # after the data set was written, to its counters readable online, before now.
    assert sum(m["freshness_records"] for m in metadata) == samples_in(events)
    oldest_ms = (time.time() - dataset.stat().st_mtime) * 1000
    assert all(0 < m["freshness_p50_ms"] <= m["freshness_p99_ms"] < oldest_ms for m in metadata)
    expected = recompute(events, replayed_stream.state().entity_prefix)
    assert_state_matches(replayed_stream, expected)
    assert_online_matches(replayed_stream, expected)


@pytest.mark.parametrize("failpoint", ["streaming.before_commit:3", "streaming.after_commit:3"])
def test_a_run_that_crashes_at_either_side_of_a_commit_is_replayed_without_double_counting(
        stream: StreamingResource, events: list[ReplayRecord], failpoint: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    part = events[: len(events) // 3]
    produce(stream, part)
    instance = DagsterInstance.ephemeral()
    first = tick(stream, instance, None)
    first_request, *other_requests = first.run_requests or []
    monkeypatch.setenv(FAILPOINT_ENV, failpoint)
    assert not execute_request(stream, instance, first_request).success
    monkeypatch.delenv(FAILPOINT_ENV)
    state = stream.state()
    applied = sum(state.sample_offsets().values())
    assert 0 < applied < samples_in(part)
    if failpoint.startswith("streaming.after_commit"):
        assert dirty_entities(stream) > 0, "the crash should leave committed rows unwritten"
    # The next run starts from what the crashed one committed, not from its own range's start.
    assert all(execute_request(stream, instance, request).success for request in other_requests)
    catch_up(stream, instance, first.cursor)
    expected = recompute(part, state.entity_prefix)
    assert_state_matches(stream, expected)
    assert_online_matches(stream, expected)


def start_follower(stream: StreamingResource, until_leased: bool = True, **env: str) -> subprocess.Popen[bytes]:
    """``python -m taobao_assets.streaming follow`` on ``stream`` (a 5 s lease), returned once it holds
    the lease (or at once)."""
    env = dict(os.environ, TFP_TOPIC_PREFIX=stream.topic_prefix, TFP_FEAST_PROJECT=stream.feast.project, **env)
    follower = subprocess.Popen(
        [sys.executable, "-m", "taobao_assets.streaming", "follow", "--lease-seconds", "5",
         "--ctr-prior", str(PRIOR)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = stream.state()
    deadline = time.monotonic() + 90
    while until_leased and not (state.lease_holder() or "").startswith("follow:"):
        if follower.poll() is not None:
            raise AssertionError(follower.stderr.read().decode() if follower.stderr else "the follower exited")
        assert time.monotonic() < deadline, "the follower did not start"
        time.sleep(0.2)
    return follower


def wait_for_lease_expiry(state: StreamState, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while state.lease_holder() is not None:
        assert time.monotonic() < deadline, f"the lease of {state.lease_holder()!r} did not expire"
        time.sleep(0.2)


def test_a_killed_continuous_consumer_is_observed_then_caught_up_by_the_sensor(
        stream: StreamingResource, events: list[ReplayRecord], settings: Settings) -> None:
    follower = start_follower(stream)
    state = stream.state()
    try:
        half = len(events) // 2
        producer = threading.Thread(target=produce, args=(stream, events[:half]), kwargs={"rate": 3_000})
        producer.start()
        # Killed once its published progress shows records applied (with their freshness), while
        # records are still being produced.
        deadline = time.monotonic() + 60
        while (progress := state.progress()) is None or progress["freshness_p99_ms"] is None:
            assert time.monotonic() < deadline, "the follower published no progress"
            time.sleep(0.05)
    finally:
        follower.send_signal(signal.SIGKILL)
        follower.wait()
    producer.join()
    assert 0 < progress["samples_committed"] < samples_in(events[:half])

    instance = DagsterInstance.ephemeral()
    # Until its lease expires (renewed every 5/3 s) the dead follower owns the stream: the sensor
    # requests no run and reports the follower's progress instead.
    observed = tick(stream, instance, None)
    assert not observed.run_requests
    assert {e.asset_key.path[-1] for e in observed.asset_events} == {t.name for t in REALTIME_TABLES}
    wait_for_lease_expiry(state)
    produce(stream, events[half:])
    executed, _ = catch_up(stream, instance, observed.cursor)
    assert executed >= 1
    expected = recompute(events, state.entity_prefix)
    assert_state_matches(stream, expected)
    assert_online_matches(stream, expected)


def test_two_appliers_at_once_after_a_lost_lease_never_double_count(
        stream: StreamingResource, events: list[ReplayRecord]) -> None:
    part = events[: len(events) // 2]
    produce(stream, part)
    ends = asyncio.run(stream.kafka.end_offsets(stream.topics.samples.name))
    state = stream.state()
    # The first applier commits small batches, and neither renews its lease nor flushes during the
    # test: it goes on committing after the second took the lease over, until its final flush
    # finds the lease gone.
    stalled = stream.model_copy(update={"lease_seconds": 600.0, "run_flush_seconds": 600.0,
                                        "batch_records": 50})
    first = Applier(stalled, "first", flush_seconds=stalled.run_flush_seconds, ctr_prior=PRIOR)
    # Each of its commits takes 20 ms more, so that it is still committing (300 batches: 6 s) when
    # the second has connected and taken the lease over, however fast the machine.
    commit = first.state.apply_samples

    def slow_commit(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)
        return commit(*args, **kwargs)

    first.state.apply_samples = slow_commit  # type: ignore[method-assign]
    everything = [OffsetRange(p, 0, end) for p, end in ends.items()]
    outcomes: dict[str, BaseException | RangeRun | None] = {}

    def apply_first() -> None:
        async def apply() -> None:
            async with first:
                await first.catch_up_contexts()
                await first.apply_samples(ends)

        try:
            outcomes["first"] = asyncio.run(apply())
        except BaseException as error:
            outcomes["first"] = error

    def apply_second() -> None:  # connects, then waits for the lease
        outcomes["second"] = apply_ranges(stream, everything, owner="second", ctr_prior=PRIOR)

    threads = [threading.Thread(target=apply_first), threading.Thread(target=apply_second)]
    threads[0].start()
    deadline = time.monotonic() + 60
    while sum(state.sample_offsets().values()) == 0:
        assert time.monotonic() < deadline, "the first applier committed nothing"
        time.sleep(0.01)
    threads[1].start()
    time.sleep(0.5)
    assert sum(state.sample_offsets().values()) < samples_in(part), "the first applier should still be going"
    state.client.delete(state.lease_key)  # as if the first had stalled past its lease
    for thread in threads:
        thread.join()
    second = outcomes["second"]
    assert isinstance(outcomes["first"], LeaseLost) and isinstance(second, RangeRun)
    # They raced (a commit lost its compare-and-set and its applier moved on), and still each
    # record was committed by exactly one of them.
    assert first.report.conflicts + second.report.conflicts >= 1
    assert first.report.samples_committed + second.report.samples_committed == samples_in(part)
    # The next applier writes online what the fenced-off one committed but could not write.
    apply_ranges(stream, everything, owner="third", ctr_prior=PRIOR)
    expected = recompute(part, state.entity_prefix)
    assert_state_matches(stream, expected)
    assert_online_matches(stream, expected)


def test_the_sensor_waits_until_the_feast_registry_has_the_real_time_views(
        stream: StreamingResource, settings: Settings) -> None:
    empty = FeastResource(postgres=PostgresResource.from_settings(settings), redis=stream.redis,
                          project=f"empty_{uuid.uuid4().hex[:8]}")
    unregistered = StreamingResource(kafka=stream.kafka, redis=stream.redis, topic_prefix=stream.topic_prefix,
                                     feast=empty)
    try:
        result = tick(unregistered, DagsterInstance.ephemeral(), None)
    finally:
        drop_project(empty)
    assert not result.run_requests
    assert result.skip_reason is not None and "feast_registry" in (result.skip_reason.skip_message or "")


def test_a_recreated_topic_is_refused_until_the_stream_is_reset(
        stream: StreamingResource, events: list[ReplayRecord]) -> None:
    produce(stream, events)
    _apply_all_samples(stream)
    topics = stream.topics
    asyncio.run(stream.kafka.delete_topics([topics.samples.name, topics.common_features.name]))
    asyncio.run(stream.kafka.create_topics([topics.samples, topics.common_features]))
    fewer = events[: len(events) // 3]
    produce(stream, fewer)
    new_ends = asyncio.run(stream.kafka.end_offsets(topics.samples.name))
    ranges = [OffsetRange(p, 0, end) for p, end in new_ends.items()]
    with pytest.raises(TopicRecreated, match=r"re-created.*streaming reset"):
        apply_ranges(stream, ranges, owner="test", ctr_prior=PRIOR)
    with pytest.raises(Exception, match="re-created"):
        tick(stream, DagsterInstance.ephemeral(), None)
    env = dict(os.environ, TFP_TOPIC_PREFIX=stream.topic_prefix, TFP_FEAST_PROJECT=stream.feast.project)
    subprocess.run([sys.executable, "-m", "taobao_assets.streaming", "reset", "--online", "--yes"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    apply_ranges(stream, ranges, owner="test", ctr_prior=PRIOR)
    expected = recompute(fewer, stream.state().entity_prefix)
    assert_state_matches(stream, expected)
    assert_online_matches(stream, expected)


class _Cycle:
    """Garbage only the cycle collector frees: it refers to itself."""

    def __init__(self) -> None:
        self.itself = self


def test_garbage_left_before_a_run_does_not_outlive_it(stream: StreamingResource,
                                                      events: list[ReplayRecord]) -> None:
    # A process that runs many streaming runs (the demo, a code server) must not keep what each
    # run leaves behind; the applier freezes the objects alive at its start, and a frozen object is
    # never collected. With automatic collection off, only the run can have collected the cycle.
    produce(stream, events[:200])
    ends = asyncio.run(stream.kafka.end_offsets(stream.topics.samples.name))
    cycle = _Cycle()
    left = weakref.ref(cycle)
    gc.disable()
    try:
        del cycle
        assert left() is not None
        apply_ranges(stream, [OffsetRange(p, 0, end) for p, end in ends.items()], owner="test", ctr_prior=PRIOR)
        assert left() is None, "garbage alive when the run started is still there after it"
    finally:
        gc.enable()
