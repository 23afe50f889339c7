"""How the sensor cuts the records beyond the applied offsets into runs (pure functions, no services)."""

from __future__ import annotations

from taobao_assets.sensors.streaming import SensorCursor, plan_runs, split
from taobao_assets.streaming.run import OffsetRange, run_key


def test_a_backlog_becomes_bounded_contiguous_runs() -> None:
    runs, cursor = plan_runs({0: 25, 1: 7, 2: 0}, {}, SensorCursor(), in_flight=False, max_records=10)
    assert runs == [
        [OffsetRange(0, 0, 5), OffsetRange(1, 0, 5)],
        [OffsetRange(0, 5, 13), OffsetRange(1, 5, 7)],
        [OffsetRange(0, 13, 23)],
        [OffsetRange(0, 23, 25)],
    ]
    assert cursor.requested == {0: 25, 1: 7}


def test_requested_ranges_are_not_requested_again_while_their_runs_are_in_flight() -> None:
    _, cursor = plan_runs({0: 10}, {}, SensorCursor(), in_flight=False, max_records=100)
    runs, same = plan_runs({0: 10}, {0: 4}, cursor, in_flight=True, max_records=100)
    assert runs == [] and same == cursor
    more, _ = plan_runs({0: 15}, {0: 4}, cursor, in_flight=True, max_records=100)
    assert more == [[OffsetRange(0, 10, 15)]]


def test_a_failed_range_is_requested_again_from_the_applied_offset_under_a_new_run_key() -> None:
    first, cursor = plan_runs({0: 10}, {}, SensorCursor(), in_flight=False, max_records=100)
    again, retry = plan_runs({0: 10}, {0: 4}, cursor, in_flight=False, max_records=100)
    assert again == [[OffsetRange(0, 4, 10)]]
    assert retry.generation == 1
    assert run_key("t", again[0], retry.generation) != run_key("t", first[0], cursor.generation)
    assert run_key("t", again[0], retry.generation) == "t:0:4-10#1"


def test_the_budget_is_shared_fairly_between_partitions() -> None:
    assert split({0: 100, 1: 3, 2: 100}, 50) == {1: 3, 0: 23, 2: 24}
    assert sum(split({0: 7, 1: 9}, 100).values()) == 16


def test_the_cursor_survives_a_round_trip() -> None:
    cursor = SensorCursor({0: 12, 2: 3}, 4)
    assert SensorCursor.parse(cursor.dumps()) == cursor
    assert SensorCursor.parse(None) == SensorCursor()
