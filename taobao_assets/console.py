"""What ``make demo`` shows while it runs: one line per stage, and a log file for everything else.

The demo runs Dagster jobs in its own process. Their event log (a few hundred DEBUG events per
run) still goes to the instance's run storage, so the UI shows every run afterwards; the copy that
Dagster's default console logger would print goes to the demo's log file instead
(:class:`DemoLog`). The terminal gets one line per stage (:class:`StageConsole`): a progress bar,
done/total with rate and ETA where the stage knows its total, the time it took and a short
detail. A failing stage's line ends in a cross; the CLI then prints its cause and the log's path.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from dagster import JobDefinition, LoggerDefinition
from rich.console import Console
from rich.live import Live
from rich.text import Text

#: The demo's logger (its module's): :class:`DemoLog` sends it, and the runs' events below it, to the file.
DEMO_LOGGER = "taobao_assets.demo"
#: The key of Dagster's default console logger. The demo's jobs get the log file's logger under
#: this key, so a demo run's stored config (``loggers: {console: {}}``) stays valid for the jobs of
#: the code location: a demo run re-executed from the UI logs to the usual console.
CONSOLE_LOGGER = "console"
_EVENTS_TO_LOG_FILE = LoggerDefinition(lambda _context: logging.getLogger(f"{DEMO_LOGGER}.dagster"),
                                       description="Dagster's events of a demo run, to the demo's log file")


def to_log_file(job: JobDefinition, run_config: Mapping[str, Any] | None = None
                ) -> tuple[JobDefinition, dict[str, Any]]:
    """``job`` and ``run_config`` with the run's events going to the demo's log instead of the terminal.

    Dagster creates the loggers a run's config names (none named: its console logger, at DEBUG);
    the event log in the run storage is written either way.
    """
    return (job.with_logger_defs({CONSOLE_LOGGER: _EVENTS_TO_LOG_FILE}),
            {**(run_config or {}), "loggers": {CONSOLE_LOGGER: {}}})


class DemoLog:
    """The demo's log file: Dagster's events of every run, each stage's end, failures' tracebacks.

    A new file per demo (``<logs_dir>/demo-<time>.log``), so a failed demo's log is not
    overwritten by the next attempt. While open, the demo's logger writes there only: propagated,
    its warnings would also reach the root logger's last-resort handler, the terminal.
    """

    def __init__(self, logs_dir: Path) -> None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.path = logs_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self._handler = logging.FileHandler(self.path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s - %(message)s"))
        self._logger = logging.getLogger(DEMO_LOGGER)

    def __enter__(self) -> DemoLog:
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False
        self._logger.addHandler(self._handler)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.propagate = True
        self._handler.close()


class State(Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


#: Characters of a stage's name on its line: names line up, a longer one ends in an ellipsis.
NAME_WIDTH = 36
BAR_WIDTH = 12
#: A stage without a known total shows a segment this long sweeping along its bar.
SWEEP = 4
#: Frames of the mark of a running stage, ten a second.
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class StageLine:
    """One stage's line: count its units of work, say what it is doing; rich draws it.

    ``2/3 days  24.5 s/day  0:49 ETA 0:24`` while a stage with a known total runs, its time and a
    full bar once done. The rate is the average since the stage began: its units (days) are few
    and each takes tens of seconds, so a recent window would hold one or two.
    """

    def __init__(self, name: str, total: int | None, unit: str) -> None:
        self.name, self.total, self.unit = name, total, unit
        self.done, self.detail, self.state = 0, "", State.RUNNING
        self._started = time.monotonic()
        self._ended: float | None = None

    def advance(self, units: int = 1) -> None:
        self.done += units

    def note(self, detail: str) -> None:
        """A short detail after the numbers (the last one stays when the stage ends)."""
        self.detail = detail.strip()

    def end(self, state: State) -> None:
        self.state, self._ended = state, time.monotonic()

    @property
    def seconds(self) -> float:
        return (self._ended or time.monotonic()) - self._started

    def _rate(self) -> float | None:
        return self.done / self.seconds if self.done and self.seconds else None

    def _mark(self) -> Text:
        if self.state is State.DONE:
            return Text("✓", style="green")
        if self.state is State.FAILED:
            return Text("✗", style="bold red")
        return Text(SPINNER[int(self.seconds * 10) % len(SPINNER)], style="magenta")

    def _bar(self) -> Text:
        if self.state is State.DONE:
            filled = BAR_WIDTH
        elif self.total:
            filled = BAR_WIDTH * min(self.done, self.total) // self.total
        else:
            start = int(self.seconds * 8) % BAR_WIDTH
            return Text.assemble(("━" * start, "grey23"), ("━" * SWEEP, "magenta"),
                                 ("━" * max(BAR_WIDTH - start - SWEEP, 0), "grey23"))[:BAR_WIDTH]
        return Text.assemble(("━" * filled, "green" if self.state is State.DONE else "magenta"),
                             ("━" * (BAR_WIDTH - filled), "grey23"))

    def _count(self) -> str:
        if not self.unit:
            return ""
        if self.total is None:
            return f"{self.done:,} {self.unit}s"
        rate = self._rate()
        speed = "" if rate is None else f"{rate:,.1f} {self.unit}s/s" if rate >= 1 else f"{1 / rate:,.1f} s/{self.unit}"
        return f"{self.done:,}/{self.total:,} {self.unit}s {speed}"

    def _clock(self) -> str:
        text = _clock(self.seconds)
        rate = self._rate()
        if self.state is State.RUNNING and self.total and rate:
            text += f" ETA {_clock((self.total - self.done) / rate)}"
        return text

    def __rich__(self) -> Text:
        line = Text.assemble(self._mark(), " ", f"{shown_name(self.name):<{NAME_WIDTH}} ", self._bar(),
                             f" {self._count():<20} {self._clock():<13} ", (self.detail, "dim"))
        line.rstrip()
        line.no_wrap, line.overflow = True, "ellipsis"
        return line


def shown_name(name: str) -> str:
    """A stage's name as its line shows it: at most NAME_WIDTH characters."""
    return name if len(name) <= NAME_WIDTH else name[:NAME_WIDTH - 1] + "…"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class StageConsole:
    """The demo's lines on the terminal, one per stage.

    Dagster captures an in-process run's output by pointing file descriptors 1 and 2 at its
    compute-log files and mirroring those back through ``tail``. The console writes to its own
    duplicate of the terminal's descriptor, so its lines reach the terminal at once and stay out
    of the runs' captured logs.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        if stream is None:
            sys.stdout.flush()
            stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding=sys.stdout.encoding, buffering=1)
        # A file or pipe has no width to fit; 80 columns would cut the details off.
        self._console = Console(file=stream, highlight=False, width=None if stream.isatty() else 200)

    def print(self, text: str) -> None:
        self._console.print(text, soft_wrap=True)

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "") -> Iterator[StageLine]:
        """The line of stage ``name`` while the block runs: ``total`` units (e.g. ``unit="day"``) if known."""
        line = StageLine(name, total, unit)
        with self._shown(line):
            try:
                yield line
            except BaseException:
                line.end(State.FAILED)
                raise
            line.end(State.DONE)

    @contextmanager
    def _shown(self, line: StageLine) -> Iterator[None]:
        """Redrawn as it changes on a terminal; printed once, finished, to a file or a pipe."""
        if self._console.is_terminal:
            with Live(line, console=self._console, refresh_per_second=8, redirect_stdout=False,
                      redirect_stderr=False):
                yield
        else:
            try:
                yield
            finally:
                self._console.print(line)
