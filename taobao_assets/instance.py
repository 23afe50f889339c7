"""The project's Dagster instance: one home folder, so every run shows up in the one UI.

``make demo`` (in process), ``python -m taobao_assets.cli ui`` (``dagster dev``) and the runs the
UI's daemon launches all use ``settings.dagster_home`` (``.state/dagster``). Its ``dagster.yaml`` is written from the
settings: a bounded run queue (see ``Settings.dagster_max_concurrent_runs``) and no telemetry,
since the stack runs offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dagster import DagsterInstance

from taobao_assets.settings import Settings


def instance_config(settings: Settings) -> dict[str, object]:
    return {
        # Dequeue every second, not every 5: a sensor's streaming run should not wait for the queue.
        "run_queue": {"max_concurrent_runs": settings.dagster_max_concurrent_runs, "dequeue_interval_seconds": 1},
        "telemetry": {"enabled": False},
    }


def prepare_home(settings: Settings, home: Path | None = None) -> Path:
    """Create the instance folder (default ``settings.dagster_home``) with its ``dagster.yaml``; return it."""
    home = home or settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    text = json.dumps(instance_config(settings), indent=2) + "\n"  # JSON is YAML
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return home


def project_instance(settings: Settings) -> DagsterInstance:
    """The project's instance; its folder is also exported as DAGSTER_HOME for child processes."""
    os.environ["DAGSTER_HOME"] = str(prepare_home(settings))
    return DagsterInstance.get()
