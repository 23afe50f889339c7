"""The one interface every service module implements, and the process handling they share.

A service is one file in ``deploy/services/`` with a subclass of :class:`Service`. The base class
owns what is the same for all of them: PID files, log files, detached start, waiting for health,
printing the log tail and the retry command when a start fails, and stopping exactly the process
it started. Subclasses say how to install, how to prepare state, which command to run and how to
tell that the server is healthy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taobao_assets.settings import Settings


class ServiceError(RuntimeError):
    """A service could not be installed or started; the message says what to look at."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a short-lived server of a test or benchmark."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process_group(process: subprocess.Popen[Any], first: signal.Signals = signal.SIGTERM,
                       wait: float = 30.0) -> None:
    """Stop ``process`` (started with ``start_new_session=True``) and every process it started.

    ``first`` goes to the whole group; what is still running ``wait`` seconds later gets SIGKILL.
    Servers such as ``dagster dev`` or ``feast serve`` start workers of their own, which a signal
    to the parent alone would leave behind holding their ports.
    """
    for sig in (first, signal.SIGKILL):
        if process.poll() is None:
            os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)


def run(cmd: Sequence[str | Path], *, what: str, cwd: Path | None = None,
        env: dict[str, str] | None = None, log: Path | None = None, secrets: Sequence[str] = ()) -> None:
    """Run an install step; on failure raise with the command and the end of its output.

    ``secrets`` are blanked out of the output before it is logged or raised: a tool that echoes a
    rejected setting (Kafka's ``ConfigCommand`` does) would otherwise put a password in the log.
    """
    printable = " ".join(str(c) for c in cmd)
    print(f"  $ {printable}", flush=True)
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    output = out.stdout + out.stderr
    for secret in filter(None, secrets):
        output = output.replace(secret, "***")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
    if out.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise ServiceError(f"{what} failed (exit {out.returncode}): {printable}\n{tail}")


def start_time(pid: int) -> str | None:
    """Kernel start time of a live (non-zombie) process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after_name = stat.rsplit(")", 1)[1].split()
    state, start = after_name[0], after_name[19]
    return None if state == "Z" else start


class Service:
    """Base class: subclasses set ``name`` and override the hooks below."""

    name: str = ""
    #: Whether ``up`` without arguments starts it (optional services are started by name).
    default: bool = True
    #: Seconds to wait for health after start.
    start_timeout: float = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = settings.cache_dir
        self.state = settings.state_dir / self.name
        self.run_dir = settings.state_dir / "run"
        self.log_path = settings.logs_dir / f"{self.name}.log"

    # ---- hooks ---------------------------------------------------------------------------
    def port(self) -> int | None:
        """The main port, shown by ``status``; None for services without a server."""
        return None

    def version(self) -> str:
        return "?"

    def install(self) -> None:
        """Download or build what the service needs into the cache; must be idempotent."""

    def prepare(self) -> None:
        """Create the service's state (data dir, configs) before a start; must be idempotent."""

    def command(self) -> list[str]:
        """The foreground command that runs the server."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def healthy(self) -> bool:
        port = self.port()
        return port is not None and port_open("127.0.0.1", port)

    def loading(self) -> bool:
        """Whether the server answers but is still reading its data back from disk.

        A start waits for such a server however long it takes: after a 10 M-sample run Redis
        replays gigabytes of append-only file, and killing it at ``start_timeout`` would make the
        stack unstartable with its own data.
        """
        return False

    def after_start(self) -> None:
        """One-off actions once healthy (create a bucket, a database); must be idempotent."""

    # ---- shared behaviour ----------------------------------------------------------------
    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def pid(self) -> int | None:
        """PID of the process this stack started, if it is still alive.

        The PID file also holds the process start time, so a PID reused by an unrelated process
        after a reboot is never mistaken for ours (and never killed by ``down``).
        """
        try:
            pid_text, started = self.pid_path.read_text().split()
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return None
        return pid if start_time(pid) == started else None

    def retry_hint(self) -> str:
        return f"{sys.executable} -m deploy.stack up {self.name}"

    def start(self) -> None:
        if self.pid() is not None and self.healthy():
            print(f"[{self.name}] already running (pid {self.pid()})", flush=True)
            self.after_start()
            return
        if self.pid() is None and self.healthy():
            raise ServiceError(
                f"[{self.name}] port {self.port()} is already taken by a process this stack did not "
                f"start; stop it or set another port (see taobao_assets/settings.py)"
            )
        self.install()
        self.prepare()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.environment(), cwd=self.state, start_new_session=True,
            )
        self.pid_path.write_text(f"{proc.pid} {start_time(proc.pid)}")
        print(f"[{self.name}] started pid {proc.pid}, waiting for health ...", flush=True)
        deadline = time.monotonic() + self.start_timeout
        said_loading = False
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if self.healthy():
                self.after_start()
                print(f"[{self.name}] healthy on port {self.port()}", flush=True)
                return
            if self.loading():
                if not said_loading:
                    print(f"[{self.name}] loading its data from disk; waiting until it is done ...", flush=True)
                    said_loading = True
                deadline = time.monotonic() + self.start_timeout
            time.sleep(0.5)
        self.stop()
        raise ServiceError(
            f"[{self.name}] did not become healthy within {self.start_timeout:.0f}s "
            f"(exit code {proc.poll()}). Last lines of {self.log_path}:\n{self.log_tail()}\n"
            f"Retry with: {self.retry_hint()}"
        )

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.2)
            # Reap it when this very process started it (tests), or it would linger as a zombie.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if self.pid() is not None:
            os.killpg(pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)
        print(f"[{self.name}] stopped (pid {pid})", flush=True)

    def status_line(self) -> str:
        pid = self.pid()
        port = self.port()
        health = "healthy" if pid is not None and self.healthy() else (
            "UNHEALTHY" if pid is not None else "stopped")
        where = f"127.0.0.1:{port}" if port else "-"
        return f"{self.name:<14} {health:<10} {where:<18} pid={pid or '-':<8} version={self.version()}"

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


_apt_updated = False


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages (as root), with one ``apt-get update`` per process.

    Debian's post-install scripts would create and start a system-wide cluster/server on the
    default ports; the stack runs its own instances in the state folder, so those are not wanted.
    """
    global _apt_updated
    if os.geteuid() != 0:
        raise ServiceError(
            f"Debian packages {list(packages)} are missing and installing them needs root: "
            f"sudo apt-get install -y {' '.join(packages)}"
        )
    createcluster = Path("/etc/postgresql-common/createcluster.conf")
    if any(p.startswith("postgresql") for p in packages) and not createcluster.exists():
        createcluster.parent.mkdir(parents=True, exist_ok=True)
        createcluster.write_text("create_main_cluster = false\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        run(["apt-get", "update", "-q"], what="apt-get update", env=env)
        _apt_updated = True
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        what=f"installing {' '.join(packages)}", env=env)
