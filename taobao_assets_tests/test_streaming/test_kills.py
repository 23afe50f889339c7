"""SIGKILL of the continuous consumer at each step of a batch, of Redis under it, and of Kafka inside a
sensor's run: what comes after (the sensor's runs, or the run's retry) applies every event exactly
once, as the plain-Python recomputation says. These are the fault matrix's "streaming apply" cells."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from dagster import DagsterInstance

from deploy.service import Service
from taobao_assets.failpoints import FAILPOINT_ENV
from taobao_assets.settings import Settings
from taobao_assets.source.replay import ReplayRecord
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets_tests.conftest import ensure_running
from taobao_assets_tests.fault_matrix import Cell, record, server_killed_at
from taobao_assets_tests.test_streaming.conftest import produce, recompute
from taobao_assets_tests.test_streaming.test_streaming import (
    assert_online_matches,
    assert_state_matches,
    catch_up,
    dirty_entities,
    samples_in,
    start_follower,
    wait_for_lease_expiry,
)

STAGE = "streaming apply"


@pytest.mark.parametrize("failpoint", ["streaming.before_commit:2:kill", "streaming.after_commit:2:kill",
                                       "streaming.after_write:2:kill"])
def test_a_consumer_killed_at_any_step_of_a_batch_loses_and_repeats_nothing(
        stream: StreamingResource, events: list[ReplayRecord], failpoint: str) -> None:
    record(Cell(STAGE, "run process", failpoint), lambda: _killed_consumer(stream, events, failpoint))


def _killed_consumer(stream: StreamingResource, events: list[ReplayRecord], failpoint: str) -> None:
    # Everything is in Kafka first: a sample produced at the same time as its context may be
    # appended before it (two topics), which would make its user unresolved.
    produce(stream, events)
    follower = start_follower(stream, until_leased=False, **{FAILPOINT_ENV: failpoint})
    assert follower.wait(timeout=120) == -signal.SIGKILL
    state = stream.state()
    applied = sum(state.sample_offsets().values())
    assert 0 < applied < samples_in(events)
    if failpoint.startswith(("streaming.after_commit", "streaming.after_write")):
        # Committed (and, after the write, in Feast) but still marked: the next applier writes it again.
        assert dirty_entities(stream) > 0
    wait_for_lease_expiry(state)
    catch_up(stream, DagsterInstance.ephemeral(), None)
    expected = recompute(events, state.entity_prefix)
    assert_state_matches(stream, expected)
    assert_online_matches(stream, expected)


def test_redis_killed_under_a_consumer_loses_and_repeats_nothing(
        stream: StreamingResource, events: list[ReplayRecord], settings: Settings, redis_service: Service) -> None:
    record(Cell(STAGE, "redis", "a quarter of the samples applied"),
           lambda: _redis_killed(stream, events, settings, redis_service))


def _redis_killed(stream: StreamingResource, events: list[ReplayRecord], settings: Settings,
                  redis_service: Service) -> None:
    follower = start_follower(stream)
    producer = threading.Thread(target=produce, args=(stream, events), kwargs={"rate": 4_000})
    producer.start()
    state = stream.state()
    try:
        deadline = time.monotonic() + 60
        while sum(state.sample_offsets().values()) < samples_in(events) // 4:
            assert time.monotonic() < deadline, "the follower applied nothing"
            time.sleep(0.05)
        pid = redis_service.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # The follower cannot commit without Redis: it fails (or, restarted in time, goes on).
        ensure_running("redis", settings)
    finally:
        producer.join()
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=60)
    wait_for_lease_expiry(state, seconds=30)
    catch_up(stream, DagsterInstance.ephemeral(), None)
    expected = recompute(events, state.entity_prefix)
    assert_state_matches(stream, expected)
    assert_online_matches(stream, expected)


def test_kafka_killed_inside_a_sensor_run_is_retried_and_loses_and_repeats_nothing(
        stream: StreamingResource, events: list[ReplayRecord], settings: Settings, kafka_service: Service) -> None:
    """Kafka dies after a batch's dead letters were sent, before its commit; the stack manager starts it
    again a second later, and the run's retry (not a new run) finishes the ranges."""
    cell = Cell(STAGE, "kafka", "streaming.before_commit")

    def check() -> None:
        produce(stream, events)
        with server_killed_at(cell.point, cell.fault, settings):
            catch_up(stream, DagsterInstance.ephemeral(), None)
        expected = recompute(events, stream.state().entity_prefix)
        assert_state_matches(stream, expected)
        assert_online_matches(stream, expected)
    record(cell, check)
