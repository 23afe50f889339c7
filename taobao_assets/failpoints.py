"""Fail points: named places in the pipeline where a test makes a run fail, die, or lose a server.

The crash tests need a fault *inside* a stage, at a known place: between a bronze day's objects
and its manifest, between two gold tables, between a stream's commit and its online write. Each
such place calls :func:`reached` with its name (:data:`POINTS`); nothing happens unless a test
asked for it, in one of two ways:

- ``TFP_FAILPOINT=<point>:<n>[:kill]`` in the environment: the n-th pass through ``point``
  raises :class:`InjectedFailure`, or with ``kill`` ends the process with SIGKILL (no ``finally``
  runs, no lease is released, as when the machine loses power). For runs in a child process.
- :func:`armed` in the test's own process: the n-th pass runs the test's action there (the fault
  matrix kills a server from it, so the fault lands mid-stage, every time at the same place).

Passes are counted from the moment the setting changed, so one process can run several tests.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

FAILPOINT_ENV = "TFP_FAILPOINT"

#: Every fail point, with where it is.
POINTS = {
    "replay.checkpoint_saved": "the replay saved a checkpoint; later records are still on their way",
    "bronze.partition_read": "one Kafka partition of a bronze day is read, the next one not yet",
    "bronze.objects_stored": "a bronze day's first object is stored, its manifest not yet written",
    "silver.table_written": "one silver table of the day is committed, the next one not yet",
    "gold.rows_staged": "a gold table's rows of the day are in its staging table, the day not yet replaced",
    "gold.table_written": "one gold table of the day is written, the next one not yet",
    "online.view_written": "one feature view of the day is in the online store, the next one not yet",
    "analytics.statement_run": "a statement of an analytics report ran, the next one not yet",
    "streaming.before_commit": "a stream's batch has its dead letters sent, nothing committed",
    "streaming.after_commit": "a stream's batch is committed, not yet written online",
    "streaming.after_write": "a stream's batch is written online, its entities not yet unmarked",
}


class InjectedFailure(RuntimeError):
    """Raised at a fail point that ``TFP_FAILPOINT`` names (tests only)."""


@dataclass
class _State:
    setting: str | None = None
    passes: Counter[str] = field(default_factory=Counter)
    actions: dict[str, tuple[int, Callable[[], None]]] = field(default_factory=dict)


_state = _State()


def _parse(raw: str) -> tuple[str, int, bool]:
    point, _, rest = raw.partition(":")
    nth, _, action = rest.partition(":")
    try:
        if point not in POINTS or action not in ("", "kill") or int(nth or 1) < 1:
            raise ValueError(raw)
        return point, int(nth or 1), action == "kill"
    except ValueError:
        raise ValueError(f"{FAILPOINT_ENV}={raw!r}: expected <point>[:<n>[:kill]] with a point among "
                         f"{', '.join(POINTS)}") from None


def reached(point: str) -> None:
    """Called at fail point ``point``: does what a test asked for there, or nothing."""
    raw = os.environ.get(FAILPOINT_ENV) or None
    if raw != _state.setting:
        _state.setting, _state.passes = raw, Counter()
    if raw is None and not _state.actions:
        return
    _state.passes[point] += 1
    if point in _state.actions and _state.passes[point] == _state.actions[point][0]:
        _state.actions[point][1]()
    if raw is not None:
        wanted, nth, kill = _parse(raw)
        if wanted == point and _state.passes[point] == nth:
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFailure(f"{FAILPOINT_ENV}: failing at pass {nth} of {point}")


@contextmanager
def armed(point: str, action: Callable[[], None], nth: int = 1) -> Iterator[None]:
    """Run ``action`` at the ``nth`` pass through ``point`` while the block runs (this process only)."""
    if point not in POINTS:
        raise ValueError(f"unknown fail point {point!r}: known are {', '.join(POINTS)}")
    _state.passes[point] = 0
    _state.actions[point] = (nth, action)
    try:
        yield
    finally:
        _state.actions.pop(point, None)
