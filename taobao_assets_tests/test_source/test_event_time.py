from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from taobao_assets.source.event_time import (
    DAY_MS,
    EventTimeConfig,
    Timeline,
    count_lines,
    day_of_ms,
    day_window_ms,
)

CONFIG = EventTimeConfig(date(2026, 11, 1), 7)


def test_defaults_are_documented_and_fixed():
    assert EventTimeConfig() == CONFIG
    assert CONFIG.partition_keys() == [f"2026-11-0{d}" for d in range(1, 8)]
    assert CONFIG.end_date == date(2026, 11, 8)
    assert CONFIG.start_ms == 1_793_491_200_000  # 2026-11-01T00:00:00Z


@pytest.mark.parametrize(("train", "test"), [(900, 100), (7, 0), (1, 1), (1_000_003, 99_991)])
def test_samples_are_spread_evenly_and_monotonically_over_the_days(train: int, test: int):
    timeline = Timeline(CONFIG, train, test)
    ordinals = range(timeline.total)
    if timeline.total > 50_000:
        ordinals = range(0, timeline.total, 97)
    times = [timeline.timestamp_ms(i) for i in ordinals]
    assert times == sorted(times)
    assert len(set(times)) == len(times)  # strictly increasing while total < ms in the span
    assert times[0] == CONFIG.start_ms
    assert timeline.timestamp_ms(timeline.total - 1) < CONFIG.start_ms + 7 * DAY_MS
    for i in ordinals:
        assert timeline.day(i) == day_of_ms(timeline.timestamp_ms(i))


def test_train_lines_come_before_test_lines():
    timeline = Timeline(CONFIG, 900, 100)
    assert timeline.ordinal("train", 1) == 0 and timeline.ordinal("train", 900) == 899
    assert timeline.ordinal("test", 1) == 900 == timeline.split_start_ordinal("test")
    assert timeline.sample_time("train", 900).timestamp_ms < timeline.sample_time("test", 1).timestamp_ms
    assert timeline.sample_time("test", 100).day == date(2026, 11, 7)


def test_days_partition_the_ordinals_exactly():
    timeline = Timeline(CONFIG, 1000, 1)
    ranges = [timeline.ordinals_of_day(day) for day in CONFIG.dates()]
    assert [len(r) for r in ranges] == [143, 143, 143, 143, 143, 143, 143]
    assert ranges[0].start == 0 and ranges[-1].stop == timeline.total
    for day, ordinals in zip(CONFIG.dates(), ranges, strict=True):
        assert all(timeline.day(i) == day for i in (ordinals.start, ordinals.stop - 1))
        assert ordinals.stop == timeline.total or timeline.day(ordinals.stop) == day + timedelta(days=1)
    assert len(timeline.ordinals_of_day(date(2026, 10, 31))) == 0
    assert len(timeline.ordinals_of_day(date(2026, 11, 8))) == 0


def test_day_window_is_the_utc_day():
    start, end = day_window_ms(date(2026, 11, 3))
    assert end - start == DAY_MS
    assert day_of_ms(start) == date(2026, 11, 3) and day_of_ms(end - 1) == date(2026, 11, 3)
    assert day_of_ms(end) == date(2026, 11, 4)


def test_common_features_take_the_time_of_their_first_sample():
    timeline = Timeline(CONFIG, 6, 0)
    references = [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "b"), (6, "a")]
    first = timeline.common_feature_ordinals("train", reversed(references))
    assert first == {"a": 0, "b": 1, "c": 3}
    assert timeline.split_start_ordinal("train") == 0


def test_out_of_range_positions_are_rejected_with_a_clear_error():
    timeline = Timeline(CONFIG, 10, 0)
    with pytest.raises(ValueError, match="outside sample_skeleton_train"):
        timeline.ordinal("train", 11)
    with pytest.raises(ValueError, match="split"):
        timeline.ordinal("valid", 1)
    with pytest.raises(ValueError, match="ordinal 10"):
        timeline.timestamp_ms(10)
    with pytest.raises(ValueError, match="days"):
        EventTimeConfig(days=0)


def test_timeline_from_folder_counts_lines_like_the_parser(tmp_path: Path):
    (tmp_path / "sample_skeleton_train.csv").write_bytes(b"a\nb\nc")
    (tmp_path / "sample_skeleton_test.csv").write_bytes(b"d\n")
    (tmp_path / "empty.csv").write_bytes(b"")
    assert count_lines(tmp_path / "empty.csv") == 0
    timeline = Timeline.from_folder(tmp_path, CONFIG)
    assert (timeline.train_lines, timeline.test_lines) == (3, 1)
