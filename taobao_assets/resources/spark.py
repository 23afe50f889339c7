"""The Spark session of the silver and gold assets: Iceberg on MinIO through a JDBC catalog in Postgres.

It is dagster-pyspark's lazy resource (the JVM starts only when an asset first touches
``spark_session``, so a run that never uses Spark pays nothing) with the whole configuration built
from :mod:`taobao_assets.settings`:

- the connector jars come from ``deploy/services/spark.py`` (resolved into the cache once), so a
  session never downloads anything from a registry;
- the Iceberg catalog ``settings.iceberg_catalog`` is the JDBC catalog Trino reads: the same
  Postgres tables, the same catalog name (Iceberg files its tables under the Spark catalog's name)
  and the same warehouse, so either engine sees the other's tables. Its table cache is off: a
  long-lived session must see commits Trino made meanwhile;
- dynamic partition overwrite, so rewriting one day replaces exactly that day;
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

from deploy.services.spark import connector_jars
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
        f"{prefix}.jdbc.password": settings.postgres_password,
        # The layout with the iceberg_type column (needed for views), as Trino's catalog set-up creates it.
        f"{prefix}.jdbc.schema-version": "V1",
        f"{prefix}.warehouse": settings.iceberg_warehouse,
        f"{prefix}.cache-enabled": "false",
        f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        f"{prefix}.s3.endpoint": settings.s3_endpoint_url,
        f"{prefix}.s3.path-style-access": "true",
        f"{prefix}.s3.access-key-id": settings.minio_access_key,
        f"{prefix}.s3.secret-access-key": settings.minio_secret_key,
        f"{prefix}.client.region": settings.minio_region,
    }


def spark_config(settings: Settings) -> dict[str, str]:
    """The complete Spark configuration of the platform's sessions."""
    return {
        "spark.master": settings.spark_master,
        "spark.app.name": "taobao-feature-platform",
        "spark.driver.memory": settings.spark_driver_memory,
        **_jar_config(settings),
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


def _jar_config(settings: Settings) -> dict[str, str]:
    """Put the connector jars on the classpath, copying nothing when the executors share this disk.

    ``spark.jars`` makes every executor (also the one inside ``local[*]``) copy the 120 MB of jars
    into its scratch folder on each session; the extra class paths load the cached files in place.
    A remote cluster does not have them, so there the driver distributes them.
    """
    jars = [str(path) for path in connector_jars(settings)]
    if _on_this_machine(settings.spark_master):
        classpath = os.pathsep.join(jars)
        return {"spark.driver.extraClassPath": classpath, "spark.executor.extraClassPath": classpath}
    return {"spark.jars": ",".join(jars)}


def _loopback_driver(master: str) -> dict[str, str]:
    """Keep the driver on 127.0.0.1 when the cluster is on this machine; a remote one must reach it."""
    if _on_this_machine(master):
        return {"spark.driver.host": LOOPBACK, "spark.driver.bindAddress": LOOPBACK}
    return {}


class SparkResource(LazyPySparkResource):
    """A lazily started SparkSession configured for the platform's Iceberg lakehouse."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SparkResource:
        return cls(spark_config=spark_config(settings))

    def _init_session(self) -> None:
        # A session started from Python takes its workers' interpreter from PYSPARK_PYTHON only
        # (spark-submit is what reads spark.pyspark.python); without it they run the system
        # python3, which lacks pyarrow and the project, and every Python UDF fails to import.
        os.environ.setdefault("PYSPARK_PYTHON", self.spark_config.get("spark.pyspark.python", sys.executable))
        # The address Spark finds for itself when the driver binds to loopback: without it, it
        # looks the host name up, warns that it resolves to 127.0.0.1 and picks another interface.
        if self.spark_config.get("spark.driver.bindAddress") == LOOPBACK:
            os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
        super()._init_session()
