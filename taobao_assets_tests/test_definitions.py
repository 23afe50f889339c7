"""The whole Definitions: nothing happens at import, the graph is the committed one, Dagster validates it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from taobao_assets.definitions import build_definitions
from taobao_assets.settings import Settings
from taobao_assets_tests.graph_snapshot import SNAPSHOT, reference_definitions, snapshot

REPO = Path(__file__).resolve().parent.parent

#: Run in a fresh interpreter: every file opened for writing, directory made, socket connected and
#: subprocess started while ``taobao_assets.definitions`` is imported (Python's audit hooks), with
#: the innermost frame outside the standard library that caused it.
AUDIT = """
import os, sys, sysconfig, traceback
stdlib = sysconfig.get_paths()["stdlib"]
events = []
def owner():
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.startswith(stdlib) and not frame.filename.startswith("<frozen"):
            return frame.filename
    return "stdlib"
def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        mode, flags = args[1], args[2] or 0
        writing = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing or args[0].startswith(os.environ["HOME"]):
            events.append((event, args[0], owner()))
    elif event in ("socket.connect", "subprocess.Popen", "os.mkdir", "os.system", "os.posix_spawn"):
        events.append((event, repr(args[:2]), owner()))
sys.addaudithook(hook)
import taobao_assets.definitions
print(repr(events))
"""


def test_importing_the_definitions_touches_no_file_network_or_subprocess(tmp_path: Path) -> None:
    """The project's modules do nothing at import: no settings read, no file, socket or process.

    Two dependencies do something when imported, and they are left to themselves: Feast makes a
    temporary folder for its Prometheus metrics (and dill a temporary file), and Dagster's vendored
    croniter runs ``file`` on the interpreter (``platform.architecture``).
    """
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TFP_STATE_DIR": str(home / "state"),
           "XDG_CACHE_HOME": str(home / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", AUDIT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    events = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    project = [e for e in events if e[2].startswith(str(REPO)) and "/.venv/" not in e[2]]
    assert project == []
    assert [e for e in events if e[0] == "socket.connect" or e[1].startswith(str(home))] == []
    assert not home.exists(), "importing the definitions created files in HOME or the state folder"


def test_definitions_resolve(settings: Settings) -> None:
    defs = build_definitions(settings)
    defs.resolve_all_job_defs()
    assert defs.resolve_asset_graph() is not None


def test_the_asset_graph_is_the_committed_snapshot(settings: Settings) -> None:
    """A wiring change shows up as a diff of graph_snapshot.json; regenerate it with
    ``python -m taobao_assets_tests.graph_snapshot`` and review the diff."""
    assert snapshot(reference_definitions(settings)) == json.loads(SNAPSHOT.read_text())


@pytest.mark.slow
def test_dagster_validates_the_workspace() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_tests_root_conftest_loads_without_spark() -> None:
    """The fast tier (``make test-fast``) never starts or imports Spark."""
    code = "import sys, taobao_assets_tests.conftest; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
