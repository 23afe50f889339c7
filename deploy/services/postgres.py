"""PostgreSQL from Debian's packages, as a private cluster in the state folder.

It holds the Feast offline store (schema ``gold``), the Feast SQL registry, the Iceberg JDBC
catalog and Dagster-independent bookkeeping. The system cluster is never touched. PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from deploy.service import Service, ServiceError, apt_install, run, start_time
from taobao_assets.atomic_file import write_private


def _bin_dir() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


#: The gold tables' schema (``taobao_assets.gold_tables.SCHEMA``, which imports Dagster: the stack manager
#: does not; a test keeps the two equal).
GOLD_SCHEMA = "gold"


class Postgres(Service):
    name = "postgres"

    @property
    def data(self) -> Path:
        return self.state / "data"

    @property
    def socket_dir(self) -> Path:
        return self.state / "socket"

    def port(self) -> int:
        return self.settings.postgres_port

    def bin(self, tool: str) -> str:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise ServiceError("PostgreSQL binaries not found under /usr/lib/postgresql; run install")
        return str(bin_dir / tool)

    def version(self) -> str:
        bin_dir = _bin_dir()
        if bin_dir is None:
            return "not installed"
        out = subprocess.run([bin_dir / "postgres", "--version"], capture_output=True, text=True)
        return out.stdout.split()[2]  # "postgres (PostgreSQL) 15.18 (Debian ...)"

    def install(self) -> None:
        if _bin_dir() is None or shutil.which("psql") is None:
            apt_install(["postgresql", "postgresql-client"])

    def _as_owner(self) -> list[str]:
        """Prefix that drops root to the postgres user (no-op for a normal user)."""
        if os.geteuid() != 0:
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in [path, *path.rglob("*")]:
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def prepare(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self.socket_dir.chmod(0o700)  # the Unix socket is the server user's alone
        self._chown(self.socket_dir)
        self._remove_stale_lock()
        if (self.data / "PG_VERSION").exists():
            return
        pwfile = self.state / "pwfile"
        write_private(pwfile, self.settings.postgres_password + "\n")
        self._chown(self.state)
        try:
            run(
                [*self._as_owner(), self.bin("initdb"), "-D", self.data, "-U", self.settings.postgres_user,
                 f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                 "--encoding=UTF8", "--locale=C.UTF-8"],
                what="initdb", log=self.settings.logs_dir / "postgres-initdb.log",
            )
        finally:
            pwfile.unlink(missing_ok=True)  # also when initdb failed: the password is in credentials.json
        # Dagster runs, Feast, Spark JDBC, Trino and tests all hold connections at once.
        (self.data / "postgresql.auto.conf").write_text(
            "listen_addresses = '127.0.0.1'\n"
            "max_connections = 300\n"
            "shared_buffers = '512MB'\n"
            "work_mem = '32MB'\n"
            "maintenance_work_mem = '256MB'\n"
            "max_wal_size = '2GB'\n"
            "fsync = on\n"
        )
        self._chown(self.data)

    def command(self) -> list[str]:
        return [*self._as_owner(), self.bin("postgres"), "-D", str(self.data),
                "-p", str(self.port()), "-k", str(self.socket_dir)]

    def healthy(self) -> bool:
        out = subprocess.run(
            [self.bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port())],
            capture_output=True,
        )
        return out.returncode == 0


    def start(self) -> None:
        """Start the server; after a (re)start, restart a running Trino too.

        Trino's Iceberg catalog keeps a pool of JDBC connections to this server and does not replace
        the ones a restart closed: every Iceberg query failed ("Cannot check and eventually update
        SQL schema") until Trino itself was restarted.
        """
        running = self.pid() is not None and self.healthy()
        super().start()
        if not running:
            from deploy.services.trino import Trino  # it imports this module

            trino = Trino(self.settings)
            if trino.pid() is not None:
                print("[postgres] restarting Trino: its Iceberg catalog's connections died with the old server",
                      flush=True)
                trino.stop()
                trino.start()

    def _remove_stale_lock(self) -> None:
        """Delete the data folder's and the socket's lock files when the process they name is gone or
        a zombie.

        After a kill -9 the dead postmaster stays a zombie until its parent reaps it (init does so
        when it gets to it); Postgres takes a zombie for a live server and refuses to start, so a
        restart within seconds of the crash failed.
        """
        for lock in (self.data / "postmaster.pid", self.socket_dir / f".s.PGSQL.{self.port()}.lock"):
            try:
                pid = int(lock.read_text().split()[0])
            except (FileNotFoundError, IndexError, ValueError):
                continue
            if start_time(pid) is None:  # gone, or a zombie
                lock.unlink(missing_ok=True)

    def require_passwords(self) -> bool:
        """Make every ``trust`` line of ``pg_hba.conf`` ask for the password (``scram-sha-256``).

        Earlier installs let any local user in over the Unix socket without one. Returns whether the
        file changed (the server then reloads it).
        """
        hba = self.data / "pg_hba.conf"
        lines = hba.read_text().splitlines(keepends=True)
        fixed = [re.sub(r"\btrust\b", "scram-sha-256", line) if not line.lstrip().startswith("#") else line
                 for line in lines]
        if fixed == lines:
            return False
        hba.write_text("".join(fixed))
        self._chown(hba)
        return True

    def execute(self, statements: Sequence[sql.Composable], database: str = "postgres") -> None:
        """Run ``statements`` one by one, each its own transaction (``CREATE DATABASE`` needs that).

        Names and passwords from the settings enter them as ``psycopg2.sql`` identifiers and
        literals, never by string formatting: a database named ``a"b`` or a password with a quote is
        quoted, not executed.
        """
        with self.connect(database) as conn, conn.cursor() as cur:
            for statement in statements:
                try:
                    cur.execute(statement)
                except psycopg2.Error as error:
                    raise ServiceError(f"[postgres] {statement.as_string(conn)!r} failed: {error}".strip()) from error

    @contextlib.contextmanager
    def connect(self, database: str = "postgres") -> Iterator[psycopg2.extensions.connection]:
        """An autocommit connection as the platform's role."""
        s = self.settings
        with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=self.port(), user=s.postgres_user,
                                                 password=s.postgres_password, dbname=database)) as conn:
            conn.autocommit = True
            yield conn

    def after_start(self) -> None:
        s = self.settings
        self.socket_dir.chmod(0o700)  # an install from before it was created so
        if self.require_passwords():
            self.execute([sql.SQL("SELECT pg_reload_conf()")])
        db, owner, reader = (sql.Identifier(name) for name in (s.postgres_db, s.postgres_user, s.trino_postgres_user))
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (s.postgres_db,))
            missing_db = cur.fetchone() is None
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (s.trino_postgres_user,))
            missing_reader = cur.fetchone() is None
        self.execute([
            *([sql.SQL("CREATE DATABASE {}").format(db)] if missing_db else []),
            *([sql.SQL("CREATE ROLE {} LOGIN").format(reader)] if missing_reader else []),
            # Trino's role: it reads gold and nothing else, and writes nothing (see trino.py).
            sql.SQL("ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                reader, sql.Literal(s.trino_postgres_password)),
            # Earlier versions turned nested loops off for the platform's role, against the plans
            # Postgres picked for Feast's stock point-in-time SQL. The offline store now probes the
            # tables' indexes (taobao_assets/offline_store.py), which needs nested loops: an existing
            # installation gets the default back.
            sql.SQL("ALTER ROLE {} IN DATABASE {} RESET enable_nestloop").format(owner, db),
        ])
        gold = sql.Identifier(GOLD_SCHEMA)
        self.execute([
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(gold),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(gold, reader),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(gold, reader),
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                owner, gold, reader),
        ], database=s.postgres_db)
