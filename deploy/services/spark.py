"""Spark: the connector jars every Spark session needs, and an optional local standalone cluster.

Two roles, one module:

- **Connector jars.** :func:`connector_jars` resolves the Iceberg runtime, the Iceberg AWS bundle
  (``S3FileIO`` for MinIO), the PostgreSQL driver (Iceberg's JDBC catalog) and the Kafka source
  from Maven Central into the cache, once. The Spark resource puts exactly these files on the
  classpath; nothing is downloaded when a session starts (no Ivy, no ``spark.jars.packages``).
  Every artifact is taken without its transitive dependencies: the Kafka source's poms would
  otherwise add a second ``hadoop-client-runtime``, ``scala-library`` and older ``zstd-jni`` /
  ``snappy-java`` / ``slf4j`` beside the ones pyspark ships, and two versions of a class on one
  classpath fail at run time, not at start. The few jars pyspark lacks are listed explicitly.
- **Standalone cluster** (optional, ``python -m deploy.stack up spark``): one master and
  ``spark_standalone_workers`` workers from pyspark's own ``spark-class``, so the scale-out path
  (``TFP_SPARK_MASTER=spark://...``) is exercised on one machine. The stack manager tracks one
  process per service, so the command is a small supervisor (``python -m deploy.services.spark``)
  that starts the master, then the workers, in its own process group: ``down`` signals the group
  and stops all of them, and if any daemon dies the supervisor stops the rest and exits, so
  ``status`` never shows a half cluster as running.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from deploy.maven import Artifact, resolve
from deploy.service import Service, port_open

#: The Kafka source is compiled against Spark internals, so it must be the exact running version.
SPARK_VERSION = version("pyspark")
SCALA_BINARY = "2.13"
SPARK_MINOR = ".".join(SPARK_VERSION.split(".")[:2])
ICEBERG_VERSION = "1.12.0"
POSTGRES_JDBC_VERSION = "42.7.14"
# Runtime dependencies that spark-sql-kafka-0-10 4.1's pom declares and pyspark does not ship.
KAFKA_CLIENTS_VERSION = "3.9.1"
COMMONS_POOL2_VERSION = "2.12.1"

ARTIFACTS = [
    Artifact("org.apache.iceberg", f"iceberg-spark-runtime-{SPARK_MINOR}_{SCALA_BINARY}", ICEBERG_VERSION,
             transitive=False),
    Artifact("org.apache.iceberg", "iceberg-aws-bundle", ICEBERG_VERSION, transitive=False),
    Artifact("org.postgresql", "postgresql", POSTGRES_JDBC_VERSION, transitive=False),
    Artifact("org.apache.spark", f"spark-sql-kafka-0-10_{SCALA_BINARY}", SPARK_VERSION, transitive=False),
    Artifact("org.apache.spark", f"spark-token-provider-kafka-0-10_{SCALA_BINARY}", SPARK_VERSION,
             transitive=False),
    Artifact("org.apache.kafka", "kafka-clients", KAFKA_CLIENTS_VERSION, transitive=False),
    Artifact("org.apache.commons", "commons-pool2", COMMONS_POOL2_VERSION, transitive=False),
]

WORKER_MEMORY = "2g"
WORKER_CORES = 1
#: Heap of the master and worker daemons themselves (executors get WORKER_MEMORY); Spark's 1g
#: default is far more than bookkeeping for two workers needs.
DAEMON_MEMORY = "256m"


def spark_home() -> Path:
    """pyspark's installation doubles as SPARK_HOME: it has ``bin/spark-class`` and ``jars/``."""
    # Imported here: the stack manager and the tests' fixtures load this module without needing Spark.
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def jars_dir(cache_dir: Path) -> Path:
    return cache_dir / "spark" / "jars" / f"spark-{SPARK_VERSION}_iceberg-{ICEBERG_VERSION}"


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise resolution: on a fresh machine several Dagster steps may start sessions at once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connector_jars(cache_dir: Path) -> list[Path]:
    """Paths of the connector jars for a Spark session, resolving them into ``cache_dir`` if not there yet."""
    dest = jars_dir(cache_dir)
    with _exclusive(dest.parent / ".lock"):
        resolve(ARTIFACTS, dest, what=f"Spark {SPARK_VERSION} connector jars")
    return sorted(dest.glob("*.jar"))


class Spark(Service):
    name = "spark"
    default = False
    start_timeout = 90.0

    def port(self) -> int:
        return self.settings.spark_standalone_port

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port()}"

    def version(self) -> str:
        return SPARK_VERSION

    def install(self) -> None:
        connector_jars(self.settings.cache_dir)

    def prepare(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        s = self.settings
        return [
            sys.executable, "-m", "deploy.services.spark",
            "--port", str(s.spark_standalone_port), "--web-port", str(s.spark_standalone_web_port),
            "--workers", str(s.spark_standalone_workers), "--work-dir", str(self.state / "work"),
        ]

    def environment(self) -> dict[str, str]:
        return dict(
            os.environ,
            SPARK_HOME=str(spark_home()),
            SPARK_LOCAL_IP="127.0.0.1",
            # Executors' shuffle and spill files; the default is /tmp, which may be a small tmpfs.
            SPARK_LOCAL_DIRS=str(self.state / "local"),
            SPARK_DAEMON_MEMORY=DAEMON_MEMORY,
            # Executors start Python workers; they must use this venv, which has pyspark and the
            # project's dependencies, not whatever ``python3`` is first on PATH.
            PYSPARK_PYTHON=sys.executable,
            # The REST submission server would take the fixed port 6066; jobs come through the driver.
            SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false",
            # Each application leaves its executors' logs (and any files it ships) in the work dir;
            # drop them a day after it ends.
            SPARK_WORKER_OPTS="-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.appDataTtl=86400",
        )

    def master_state(self) -> dict[str, Any] | None:
        """The master's ``/json`` status page (workers, applications), or None if it does not answer."""
        url = f"http://127.0.0.1:{self.settings.spark_standalone_web_port}/json/"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                state: dict[str, Any] = json.load(reply)
                return state
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> list[dict[str, Any]]:
        state = self.master_state() or {}
        return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]

    def healthy(self) -> bool:
        return len(self.alive_workers()) >= self.settings.spark_standalone_workers


def _supervise(args: argparse.Namespace) -> int:
    """Run master and workers as children; stop all of them when one exits or on SIGTERM."""
    spark_class = str(spark_home() / "bin" / "spark-class")
    daemons: dict[str, subprocess.Popen[bytes]] = {}

    def stop_all() -> None:
        for proc in daemons.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in daemons.values():
            proc.wait()

    def on_signal(signum: int, _frame: object) -> None:
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    master = daemons["master"] = subprocess.Popen([
        spark_class, "org.apache.spark.deploy.master.Master",
        "--host", "127.0.0.1", "--port", str(args.port), "--webui-port", str(args.web_port),
    ])
    # Workers started before the master listens would retry with back-off and slow the start.
    while not port_open("127.0.0.1", args.port):
        if master.poll() is not None:
            return master.returncode or 1
        time.sleep(0.2)
    for index in range(args.workers):
        work_dir = Path(args.work_dir) / f"worker-{index}"
        work_dir.mkdir(parents=True, exist_ok=True)
        daemons[f"worker-{index}"] = subprocess.Popen([
            spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{args.port}",
            "--host", "127.0.0.1", "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY,
            "--webui-port", "0", "--work-dir", str(work_dir),
        ])
    while all(proc.poll() is None for proc in daemons.values()):
        time.sleep(1)
    name, failed = next((n, p) for n, p in daemons.items() if p.poll() is not None)
    print(f"spark supervisor: {name} exited with {failed.returncode}; stopping the cluster", flush=True)
    stop_all()
    return failed.returncode or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Spark standalone master and its workers.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--web-port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--work-dir", required=True)
    return _supervise(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
