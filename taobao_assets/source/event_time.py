"""The one simulated event time of Ali-CCP samples (docs/architecture.md, "Event time and daily partitions").

The raw files carry no timestamps, so every consumer (generator truth, replay, bronze, silver,
streaming) derives them here and they all agree on the day of an impression.

Mapping. Sample lines are numbered in one global order: the lines of ``sample_skeleton_train``
in file order, then those of ``sample_skeleton_test``. The ordinal of a line is
``line_number - 1`` in train and ``train_lines + line_number - 1`` in test; *every* line counts,
quarantined ones included, so a line's time never depends on whether its neighbours parse.
With ``total`` lines spread evenly over ``days`` days from ``start_date`` 00:00 UTC::

    timestamp_ms(i) = start_ms + floor(i * days * 86_400_000 / total)
    day(i)          = start_date + floor(i * days / total) days

which is monotonic in ``i`` (strictly while ``total`` is below the number of milliseconds in the
span: 604.8 M for 7 days against 84 M real samples), and ``day(i)`` is exactly the UTC day of
``timestamp_ms(i)``. Train therefore fills the first ~90 % of the days and test the rest.

Common features. A common-features row takes the event time of the *first* sample line (lowest
ordinal) of its split that references it: the same millisecond and therefore the same day. A
replay emits a common-features row before any sample of the same timestamp (ties are broken by
kind, common features first), so a consumer always has the user context before the impressions
that use it. A row that no sample references gets the time of its split's first sample line.

Default start date 2026-11-01: a fixed date keeps runs reproducible, and one in the past keeps
every partition "complete" for Feast materialisation windows that end at "now".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np

from taobao_assets.settings import Settings
from taobao_assets.source.format import SPLITS, FileKind

DAY_MS = 86_400_000
#: One ordinal or an array of them: the time line's formulas serve both.
Ordinals = TypeVar("Ordinals", int, np.ndarray)


@dataclass(frozen=True)
class EventTimeConfig:
    """Where the simulated time line starts and how many daily partitions it spans."""

    start_date: date = date(2026, 11, 1)
    days: int = 7

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")

    @cached_property
    def start_ms(self) -> int:
        """Cached: every replayed and parsed sample's timestamp starts from it."""
        return day_window_ms(self.start_date)[0]

    @property
    def end_date(self) -> date:
        """The first day *after* the time line (exclusive end)."""
        return self.start_date + timedelta(days=self.days)

    def dates(self) -> list[date]:
        return [self.start_date + timedelta(days=d) for d in range(self.days)]

    def partition_keys(self) -> list[str]:
        """Daily partition keys (``YYYY-MM-DD``) as Dagster's DailyPartitionsDefinition writes them."""
        return [d.isoformat() for d in self.dates()]


def event_time_config(settings: Settings) -> EventTimeConfig:
    """The time line the settings ask for (``TFP_EVENT_START_DATE``, ``TFP_EVENT_DAYS``)."""
    return EventTimeConfig(date.fromisoformat(settings.event_start_date), settings.event_days)


@dataclass(frozen=True)
class EventTime:
    timestamp_ms: int
    day: date


def day_window_ms(day: date) -> tuple[int, int]:
    """``[start, end)`` of a UTC day in epoch milliseconds."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000
    return start, start + DAY_MS


def day_of_ms(timestamp_ms: int) -> date:
    """The UTC day of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(timestamp_ms // 1000, tz=UTC).date()


def count_lines(path: str | Path) -> int:
    """Lines of a file, a final line without newline included (what the parser will yield)."""
    lines = 0
    last = b"\n"
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 22):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


@dataclass(frozen=True)
class Timeline:
    """The mapping for one data set: the config plus the sample line count of each split."""

    config: EventTimeConfig
    train_lines: int
    test_lines: int

    @classmethod
    def from_folder(cls, folder: str | Path, config: EventTimeConfig | None = None) -> Timeline:
        """Count the sample lines of ``sample_skeleton_{train,test}.csv`` (a missing split has none)."""
        counts = []
        for split in SPLITS:
            path = Path(folder) / FileKind.SAMPLE_SKELETON.file_name(split)
            counts.append(count_lines(path) if path.exists() else 0)
        return cls(config or EventTimeConfig(), *counts)

    @property
    def total(self) -> int:
        return self.train_lines + self.test_lines

    def ordinal(self, split: str, line_number: int) -> int:
        """Global ordinal of a 1-based sample line of ``split`` (train lines first)."""
        lines = {"train": self.train_lines, "test": self.test_lines}
        if split not in lines:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 1 <= line_number <= lines[split]:
            raise ValueError(f"line {line_number} is outside sample_skeleton_{split} (1..{lines[split]})")
        return (self.train_lines if split == "test" else 0) + line_number - 1

    def _check(self, low: int, high: int) -> None:
        if not 0 <= low <= high < self.total:
            raise ValueError(f"ordinal {low if low < 0 else high} is outside 0..{self.total - 1}")

    # The two formulas, written once for an int and for an array of ordinals.
    def _ms_after_start(self, ordinal: Ordinals) -> Ordinals:
        return ordinal * (self.config.days * DAY_MS) // self.total

    def _days_after_start(self, ordinal: Ordinals) -> Ordinals:
        return ordinal * self.config.days // self.total

    def timestamp_ms(self, ordinal: int) -> int:
        self._check(ordinal, ordinal)
        return self.config.start_ms + self._ms_after_start(ordinal)

    def day(self, ordinal: int) -> date:
        self._check(ordinal, ordinal)
        return self.config.start_date + timedelta(days=self._days_after_start(ordinal))

    def event_times(self, ordinals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``timestamp_ms`` and the day (as days since 1970-01-01) of many ordinals at once."""
        if len(ordinals):
            self._check(int(ordinals.min()), int(ordinals.max()))
        ordinals = ordinals.astype(np.int64)
        epoch_days = (self.config.start_date - date(1970, 1, 1)).days
        return self.config.start_ms + self._ms_after_start(ordinals), epoch_days + self._days_after_start(ordinals)

    def at(self, ordinal: int) -> EventTime:
        return EventTime(self.timestamp_ms(ordinal), self.day(ordinal))

    def sample_time(self, split: str, line_number: int) -> EventTime:
        return self.at(self.ordinal(split, line_number))

    def first_ordinal_of_day(self, day: date) -> int:
        """The lowest ordinal whose day is ``day`` (``total`` if the day is after the time line)."""
        offset = (day - self.config.start_date).days
        if offset <= 0:
            return 0
        if offset >= self.config.days:
            return self.total
        # Smallest i with i * days // total >= offset, i.e. i >= offset * total / days.
        return -(-offset * self.total // self.config.days)

    def ordinals_of_day(self, day: date) -> range:
        """The sample ordinals whose event time falls on ``day`` (a partition's lines)."""
        return range(self.first_ordinal_of_day(day), self.first_ordinal_of_day(day + timedelta(days=1)))

    def common_feature_ordinals(self, split: str, references: Iterable[tuple[int, str]]) -> dict[str, int]:
        """Ordinal of the first sample line of ``split`` that references each common_feature_index.

        ``references`` are ``(line_number, common_feature_index)`` of the split's sample lines in
        any order; the event time of a common-features row is ``timestamp_ms`` of its ordinal (see
        the module docstring). Rows absent from the result get :meth:`split_start_ordinal`.
        """
        first: dict[str, int] = {}
        for line_number, key in references:
            ordinal = self.ordinal(split, line_number)
            if ordinal < first.get(key, self.total):
                first[key] = ordinal
        return first

    def split_start_ordinal(self, split: str) -> int:
        """The ordinal of a split's first sample line: the time of unreferenced common features."""
        return self.ordinal(split, 1)
