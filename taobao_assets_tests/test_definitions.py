"""Load the whole Definitions so a wiring mistake fails fast, the way `dagster dev` would see it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from taobao_assets.definitions import defs

REPO = Path(__file__).resolve().parent.parent


def test_definitions_resolve() -> None:
    defs.resolve_all_job_defs()
    assert defs.resolve_asset_graph() is not None


def test_dagster_validates_the_workspace() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
