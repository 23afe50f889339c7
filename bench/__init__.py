"""Benchmarks (docs/architecture.md, "Benchmarks"): each compares a stage with a reference in the same run.

Every benchmark module writes ``bench/results/<name>.json`` (the figures, machine context) and
``bench/results/<name>.md`` (a table for the docs) through :func:`write_results`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taobao_assets.atomic_file import write_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def peak_rss_mb() -> float:
    """Peak resident set size of this program so far, in MB.

    Linux's ``ru_maxrss`` survives ``exec`` (a child started by a big parent reports at least
    the parent's size), so the high-water mark of the current image (VmHWM) is read instead.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class Spread:
    """Median, min and max of repeated measurements: the figure and how far the runs strayed."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def text(self, form: str) -> str:
        """``median (min-max)`` in ``form`` (a format spec such as ``.2f``)."""
        return f"{self.median:{form}} ({self.min:{form}}-{self.max:{form}})"


def machine() -> dict[str, Any]:
    """What the figures were measured on; the load average matters on a shared machine."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under bench/results atomically; return both paths."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    paths = (RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md")
    for path, text in zip(paths, (json.dumps(payload, indent=2) + "\n", markdown), strict=True):
        write_atomic(path, text)
    return paths
