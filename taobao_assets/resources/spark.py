"""The Spark session of the silver and gold assets: Iceberg on MinIO through a JDBC catalog in Postgres.

It is dagster-pyspark's lazy resource (the JVM starts only when an asset first touches
``spark_session``, so a run that never uses Spark pays nothing) with the whole configuration built
from :mod:`taobao_assets.settings`:

- the connector jars come from ``deploy/services/spark.py`` (resolved into the cache once, when
  the first session starts, never when the definitions load), so a session never downloads
  anything from a registry;
- the two secrets of the catalog (Postgres password, MinIO secret key) are fields of their own,
  not entries of ``spark_config``, so the definitions can pass them as ``EnvVar`` and the Dagster
  UI never shows them;
- the Iceberg catalog ``settings.iceberg_catalog`` is the JDBC catalog Trino reads: the same
  Postgres tables, the same catalog name (Iceberg files its tables under the Spark catalog's name)
  and the same warehouse, so either engine sees the other's tables. Its table cache is off: a
  long-lived session must see commits Trino made meanwhile;
- dynamic partition overwrite: ``insertInto(..., overwrite=True)`` replaces only the days present
  in the new rows, not the whole table (the silver IO manager overwrites by an explicit day filter
  instead, so that a day whose re-run has no rows is emptied too);
- tuning for the 2-core machine: few shuffle partitions (adaptive execution merges them further),
  no UI, scratch space in the state folder, session time zone UTC so the ``day`` of an event time
  does not depend on the machine's zone;
- the driver's log4j2 configuration (``spark-log4j2.properties`` beside this module): warnings
  and errors on stderr, without the notes every session's start printed that say nothing here.

The master is ``settings.spark_master``: ``local[*]`` by default, ``spark://host:port`` for a
standalone cluster (``python -m deploy.stack up spark`` runs one locally).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster_pyspark import LazyPySparkResource
from dagster_pyspark.resources import spark_session_from_config
from pydantic import Field

from taobao_assets.settings import Settings

ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
SHUFFLE_PARTITIONS = 4
LOOPBACK = "127.0.0.1"
#: The driver's log4j2 configuration, given to its JVM at start (``spark.log.level`` would act
#: after the start's notes, and print a note of its own).
LOG4J2_FILE = Path(__file__).with_name("spark-log4j2.properties")


def iceberg_catalog_config(settings: Settings) -> dict[str, str]:
    """``spark.sql.catalog.<name>.*`` keys of the shared Iceberg catalog."""
    prefix = f"spark.sql.catalog.{settings.iceberg_catalog}"
    return {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": settings.postgres_jdbc_url,
        f"{prefix}.jdbc.user": settings.postgres_user,
        # The layout with the iceberg_type column (needed for views), as Trino's catalog set-up creates it.
        f"{prefix}.jdbc.schema-version": "V1",
        f"{prefix}.warehouse": settings.iceberg_warehouse,
        f"{prefix}.cache-enabled": "false",
        f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        f"{prefix}.s3.endpoint": settings.s3_endpoint_url,
        f"{prefix}.s3.path-style-access": "true",
        f"{prefix}.s3.access-key-id": settings.minio_access_key,
        f"{prefix}.client.region": settings.minio_region,
    }


def _catalog_secrets(catalog: str, postgres_password: str, minio_secret_key: str) -> dict[str, str]:
    prefix = f"spark.sql.catalog.{catalog}"
    return {f"{prefix}.jdbc.password": postgres_password, f"{prefix}.s3.secret-access-key": minio_secret_key}


def spark_config(settings: Settings) -> dict[str, str]:
    """The Spark configuration of the platform's sessions, but for the jars and the two secrets."""
    return {
        "spark.master": settings.spark_master,
        "spark.app.name": "taobao-feature-platform",
        "spark.driver.memory": settings.spark_driver_memory,
        # Executors' Python workers must run this interpreter (it has the project's dependencies).
        "spark.pyspark.python": sys.executable,
        "spark.sql.extensions": ICEBERG_EXTENSIONS,
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.shuffle.partitions": str(SHUFFLE_PARTITIONS),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        # Progress bars redrawn with carriage returns turn into noise in Dagster's captured logs.
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(settings.state_dir / "spark" / "local"),
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J2_FILE.as_uri()}",
        **_loopback_driver(settings.spark_master),
        **iceberg_catalog_config(settings),
    }


def _on_this_machine(master: str) -> bool:
    return master.startswith("local") or "//127.0.0.1:" in master or "//localhost:" in master


def _jar_config(jars: list[Path], master: str) -> dict[str, str]:
    """Put the connector jars on the classpath, copying nothing when the executors share this disk.

    ``spark.jars`` makes every executor (also the one inside ``local[*]``) copy the 120 MB of jars
    into its scratch folder on each session; the extra class paths load the cached files in place.
    A remote cluster does not have them, so there the driver distributes them.
    """
    paths = [str(path) for path in jars]
    if _on_this_machine(master):
        classpath = os.pathsep.join(paths)
        return {"spark.driver.extraClassPath": classpath, "spark.executor.extraClassPath": classpath}
    return {"spark.jars": ",".join(paths)}


def _loopback_driver(master: str) -> dict[str, str]:
    """Keep the driver on 127.0.0.1 when the cluster is on this machine; a remote one must reach it."""
    if _on_this_machine(master):
        return {"spark.driver.host": LOOPBACK, "spark.driver.bindAddress": LOOPBACK}
    return {}


class SparkResource(LazyPySparkResource):
    """A lazily started SparkSession configured for the platform's Iceberg lakehouse."""

    #: Download cache holding the connector jars (``settings.cache_dir``).
    cache_dir: str
    catalog: str
    postgres_password: str = Field(repr=False)
    minio_secret_key: str = Field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> SparkResource:
        return cls(spark_config=spark_config(settings), cache_dir=str(settings.cache_dir),
                   catalog=settings.iceberg_catalog, postgres_password=settings.postgres_password,
                   minio_secret_key=settings.minio_secret_key)

    def session_config(self) -> dict[str, str]:
        """Everything a session starts with: ``spark_config``, the connector jars and the secrets.

        Resolving the jars may take the cache's lock and, on a fresh machine, run Maven: it
        happens here, when a step first needs Spark, not when the definitions load.
        """
        # Imported here: deploy.services imports every service of the stack, which no run needs
        # until its first Spark session.
        from deploy.services.spark import connector_jars

        master = self.spark_config.get("spark.master", "local[*]")
        return {**self.spark_config, **_jar_config(connector_jars(Path(self.cache_dir)), master),
                **_catalog_secrets(self.catalog, self.postgres_password, self.minio_secret_key)}

    def _init_session(self) -> None:
        if self._spark_session is not None:
            return
        # A session started from Python takes its workers' interpreter from PYSPARK_PYTHON only
        # (spark-submit is what reads spark.pyspark.python); without it they run the system
        # python3, which lacks pyarrow and the project, and every Python UDF fails to import.
        os.environ.setdefault("PYSPARK_PYTHON", self.spark_config.get("spark.pyspark.python", sys.executable))
        # The address Spark finds for itself when the driver binds to loopback: without it, it
        # looks the host name up, warns that it resolves to 127.0.0.1 and picks another interface.
        if self.spark_config.get("spark.driver.bindAddress") == LOOPBACK:
            os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
        self._spark_session = spark_session_from_config(self.session_config())


def reconnect_catalogs() -> None:
    """Make the running SparkSession open new connections for its catalogs at their next use.

    Iceberg's JDBC catalog keeps a pool of Postgres connections and only replaces one on the JDBC
    driver's "connection" exception classes; pgjdbc reports a connection the restarted server
    closed as a plain ``PSQLException``, so without this every retry of a step would reuse the dead
    connection. Spark's catalog manager forgets its catalog instances (``reset``), and the next
    statement builds the catalog again from the session's configuration.
    """
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session._jsparkSession.sessionState().catalogManager().reset()
