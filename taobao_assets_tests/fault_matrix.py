"""The fault matrix's bookkeeping, shared by the test modules that inject its faults.

A cell is a stage and a fault (a stack service killed with SIGKILL and restarted, or the run process
killed); :func:`record` keeps whether the stage's layers converged, and ``conftest.py`` prints
:data:`FAULT_MATRIX` at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from deploy.service import Service, port_open
from deploy.services import SERVICES
from taobao_assets import failpoints
from taobao_assets.resources.spark import reconnect_catalogs
from taobao_assets.settings import Settings

#: (stage, fault) -> "converged" or what went wrong; printed at the end of the session.
FAULT_MATRIX: dict[tuple[str, str], str] = {}
#: The matrix's rows and columns, in the pipeline's order.
STAGES = ("replay", "bronze", "silver", "gold", "online store", "streaming apply", "analytics")
FAULTS = ("kafka", "minio", "postgres", "redis", "trino", "run process")


@dataclass(frozen=True)
class Cell:
    stage: str
    fault: str  # a stack service's name, or "run process"
    point: str  # the fail point where the fault is injected


def stack_service(name: str, settings: Settings) -> Service:
    (cls,) = [c for c in SERVICES if c.name == name]
    return cls(settings)


@contextlib.contextmanager
def server_killed_at(point: str, name: str, settings: Settings, down_seconds: float = 1.0) -> Iterator[None]:
    """At the first pass through ``point``, SIGKILL the server ``name`` (its whole process group, as an
    OOM kill or a crash would) and have the stack manager start it again ``down_seconds`` later."""
    service = stack_service(name, settings)
    restarts: list[threading.Thread] = []

    def kill() -> None:
        pid = service.pid()
        assert pid is not None, f"{name} is not running under the stack manager"
        os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # started by this process (a fixture): reap it
            os.waitpid(pid, 0)
        host_port = _address(service)
        deadline = time.monotonic() + 10
        while port_open(*host_port) and time.monotonic() < deadline:
            time.sleep(0.05)
        def restart_later() -> None:
            time.sleep(down_seconds)
            service.start()
        restart = threading.Thread(target=restart_later, daemon=True)
        restart.start()
        restarts.append(restart)

    try:
        with failpoints.armed(point, kill):
            yield
    finally:
        # Also when the stage failed: the next cell must not find the server still starting.
        for restart in restarts:
            restart.join(timeout=120)
    assert restarts, f"the stage never reached {point}: no fault was injected"
    assert service.healthy(), f"{name} did not come back"
    # The session's Spark outlives this test: its catalog's Postgres connections died with the server
    # (a retried step renews them; the next test's direct reads would not).
    reconnect_catalogs()


def _address(service: Service) -> tuple[str, int]:
    port = service.port()
    assert port is not None
    return "127.0.0.1", port


def record(cell: Cell, check: Callable[[], None]) -> None:
    try:
        check()
    except BaseException as failure:
        FAULT_MATRIX[cell.stage, cell.fault] = f"FAILED: {type(failure).__name__}: {str(failure)[:200]}"
        raise
    # A cell several tests inject (the stream's kills at each step) shows its first failure.
    FAULT_MATRIX.setdefault((cell.stage, cell.fault), "converged")


