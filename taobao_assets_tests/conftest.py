"""Fixtures that start (or reuse) the real local stack, and the one data set the layer tests share.

``make test`` brings the whole stack up before pytest; these fixtures make a single test file
runnable on its own too, by starting just the services it needs through the stack manager.
Nothing here fakes a server.

The layer tests (bronze, silver, gold) share one generated data set per session: 5 days, with a
small fraction of malformed lines (listed in its ``malformed.json``), replayed into Kafka once
(killed halfway and resumed), copied to bronze once and parsed into silver once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from dagster import AssetSelection, ExecuteInProcessResult, materialize

from deploy.service import Service
from deploy.services import SERVICES
from taobao_assets.assets.bronze import bronze_assets
from taobao_assets.checks.bronze import bronze_checks
from taobao_assets.io_managers.bronze import BronzeIOManager
from taobao_assets.known_warnings import accept_known_warnings
from taobao_assets.partitions import daily_partitions, event_time_config
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import Settings, get_settings
from taobao_assets.source.generate import GeneratorConfig, generate
from taobao_assets.source.replay import (
    ReplayResult,
    checkpoint_prefix,
    default_checkpoint_dir,
    run_replay,
    total_records,
)
from taobao_assets.source.topics import RawTopics

if TYPE_CHECKING:  # Spark is imported by the fixtures that use it: the fast tier never loads pyspark.
    from deploy.services.spark import Spark
    from taobao_assets.resources.spark import SparkResource

# Tests get their own topics, bucket and database on the shared servers, so running them never
# touches a demo's data. In the environment, because child processes (a replay, the demo, the
# Dagster daemon) and the steps of a run read the settings from it.
os.environ.setdefault("TFP_TOPIC_PREFIX", "test.aliccp")
os.environ.setdefault("TFP_LAKE_BUCKET", "lake-test")
os.environ.setdefault("TFP_POSTGRES_DB", "tfp_test")
os.environ.setdefault("TFP_EVENT_DAYS", "5")
os.environ.setdefault("TFP_FEAST_PROJECT", "taobao_test")

#: Fixtures that start a server: a test that uses one (directly or through another fixture) is
#: marked ``stack``, and ``make test-fast`` (``-m "not stack"``) leaves it out.
SERVICE_FIXTURES = {"postgres_service", "redis_service", "kafka_service", "minio_service", "trino_service", "cluster"}

#: The tests' days and topics, as the definitions built from their settings have them.
DAILY = daily_partitions(get_settings())
#: Small files in the raw Ali-CCP format (see the folder's README).
EXAMPLES = Path(__file__).resolve().parent / "data" / "aliccp"
TOPICS = RawTopics.of(get_settings().topic_prefix)

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")
#: Good sample lines of the shared data set (both splits).
ROWS = 30_000
#: About 60 malformed sample lines and at least one of each reason in every file.
MALFORMED_FRACTION = 0.002


@pytest.fixture(autouse=True)
def known_warnings_accepted() -> None:
    """As the definitions do when built: pytest resets the warning filters around every test."""
    accept_known_warnings()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault matrix, when faults were injected: every fault and whether the layers converged."""
    faults = sys.modules.get("taobao_assets_tests.fault_matrix")
    matrix = getattr(faults, "FAULT_MATRIX", None)
    if faults is None or not matrix:
        return
    stages = [stage for stage in faults.STAGES if any(s == stage for s, _ in matrix)]
    kinds = [kind for kind in faults.FAULTS if any(k == kind for _, k in matrix)]
    terminalreporter.section("fault matrix (kill -9 inside the stage; '-': the stage does not use it)")
    terminalreporter.write_line("| stage | " + " | ".join(kinds) + " |")
    terminalreporter.write_line("|---|" + "---|" * len(kinds))
    for stage in stages:
        terminalreporter.write_line(f"| {stage} | " + " | ".join(matrix.get((stage, k), "-") for k in kinds) + " |")
    converged = sum(v == "converged" for v in matrix.values())
    terminalreporter.write_line(f"{len(matrix)} faults injected, {converged} converged")


def ensure_running(name: str, settings: Settings) -> Service:
    """Start ``name`` through the stack manager (a no-op health check when it already runs).

    ``start`` also runs the service's idempotent set-up, which creates the tests' own bucket and
    database on a stack that ``make up`` started with the default settings.
    """
    (cls,) = [c for c in SERVICES if c.name == name]
    service = cls(settings)
    service.start()
    return service


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def postgres_service(settings: Settings) -> Service:
    return ensure_running("postgres", settings)


@pytest.fixture(scope="session")
def redis_service(settings: Settings) -> Service:
    return ensure_running("redis", settings)


@pytest.fixture(scope="session")
def kafka_service(settings: Settings) -> Service:
    return ensure_running("kafka", settings)


@pytest.fixture(scope="session")
def minio_service(settings: Settings) -> Service:
    return ensure_running("minio", settings)


@pytest.fixture(scope="session")
def trino_service(settings: Settings, postgres_service: Service, minio_service: Service) -> Service:
    return ensure_running("trino", settings)


def kafka_end_total(kafka: KafkaResource) -> int:
    """Records in both raw topics (sum of end offsets)."""
    async def ends() -> int:
        return sum([sum((await kafka.end_offsets(t.name)).values()) for t in TOPICS.all])
    return asyncio.run(ends())


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    folder = tmp_path_factory.mktemp("aliccp")
    generate(GeneratorConfig(rows=ROWS, seed=7, out=folder, progress=False,
                             malformed_fraction=MALFORMED_FRACTION, event_time=event_time_config(settings)))
    return folder


@pytest.fixture(scope="session")
def replayed(dataset: Path, settings: Settings, kafka_service: Service, minio_service: Service
             ) -> tuple[ReplayResult, int]:
    """Replay killed (SIGKILL) at about 40 %, then resumed; returns the resume's result and where it died."""
    kafka = KafkaResource.from_settings(settings)
    asyncio.run(kafka.delete_topics([t.name for t in TOPICS.all]))
    for old in default_checkpoint_dir(settings).glob(f"{checkpoint_prefix(TOPICS)}*.json"):
        old.unlink()
    total = total_records(dataset)
    child = subprocess.Popen(
        [sys.executable, "-m", "taobao_assets.source.replay", "--data", str(dataset), "--rate", "4000"],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                if kafka_end_total(kafka) >= 0.4 * total:
                    break
            except ValueError:  # topics not created yet
                pass
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = kafka_end_total(kafka)
    assert 0 < killed_at < total, "the replay should have died halfway"
    return run_replay(settings, kafka, dataset), killed_at


@pytest.fixture(scope="session")
def bronze(replayed: tuple[ReplayResult, int], settings: Settings) -> S3Resource:
    s3 = S3Resource.from_settings(settings)
    resources = {"kafka": KafkaResource.from_settings(settings), "s3": s3,
                 "bronze_io_manager": BronzeIOManager(s3=s3)}
    for day in DAILY.get_partition_keys():
        result = materialize([*bronze_assets(DAILY, TOPICS), *bronze_checks(DAILY, TOPICS)], partition_key=day,
                             resources=resources)
        assert result.success
        failed = [e.asset_check_key for e in result.get_asset_check_evaluations() if not e.passed]
        assert not failed, f"bronze checks failed on {day}: {failed}"
        assert len(result.get_asset_check_evaluations()) == len(bronze_checks(DAILY, TOPICS))
    return s3


@pytest.fixture(scope="session")
def spark(settings: Settings, postgres_service: Service, minio_service: Service) -> SparkResource:
    """The session's Spark resource; its session is the process's one SparkSession (getOrCreate)."""
    from taobao_assets.resources.spark import SparkResource

    return SparkResource.from_settings(settings)


@pytest.fixture(scope="session")
def cluster(settings: Settings, postgres_service: Service, minio_service: Service) -> Iterator[Spark]:
    """The stack's standalone cluster; stopped afterwards (it holds 5 JVMs) unless it was running."""
    from deploy.services.spark import Spark

    service = Spark(settings)
    was_running = service.pid() is not None and service.healthy()
    if not was_running:
        service.start()
    yield service
    if not was_running:
        service.stop()


def busy_workers(cluster: Spark, timeout: float = 60) -> int:
    """Workers running an executor of the current application, once all have one (or at ``timeout``).

    Called from a driver on the cluster: executors register a moment after the session starts.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = [w for w in cluster.alive_workers() if w["coresused"] > 0]
        if len(busy) == cluster.settings.spark_standalone_workers or time.monotonic() > deadline:
            return len(busy)
        time.sleep(0.5)


def in_fresh_interpreter(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a spawned interpreter, e.g. a Spark driver for the standalone cluster
    (this process already holds the suite's local SparkContext).

    The worker is ended by a sentinel, not by a signal: a ``multiprocessing.Pool`` terminates its
    workers with SIGTERM, and Dagster and PySpark install handlers for it that can leave a worker
    alive, so the pool's exit waited forever (it hung a test run).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def silver_resources(settings: Settings, spark: SparkResource, s3: S3Resource) -> dict[str, object]:
    """What a silver run needs; ``kafka`` only because the (unselected) bronze assets declare it."""
    from taobao_assets.io_managers.iceberg import IcebergIOManager

    return {"spark": spark, "s3": s3, "bronze_io_manager": BronzeIOManager(s3=s3),
            "kafka": KafkaResource.from_settings(settings),
            "silver_io_manager": IcebergIOManager.from_settings(settings, spark)}


def materialize_silver(day: str, resources: dict[str, object]) -> ExecuteInProcessResult:
    """Silver (tables and checks) of one day, reading the stored bronze day."""
    from taobao_assets.assets.silver import silver_assets
    from taobao_assets.checks.silver import silver_checks

    silver = silver_assets(DAILY)
    return materialize([*bronze_assets(DAILY, TOPICS), *silver, *silver_checks(DAILY, TOPICS)], partition_key=day,
                       resources=resources, selection=AssetSelection.assets(*silver))


@pytest.fixture(scope="session")
def silver(bronze: S3Resource, spark: SparkResource, settings: Settings) -> dict[str, ExecuteInProcessResult]:
    """Silver of every day, on fresh tables; returns each day's run result."""
    from taobao_assets.assets.silver import SCHEMAS
    from taobao_assets.io_managers.iceberg import table_name

    for key in SCHEMAS:
        spark.spark_session.sql(f"DROP TABLE IF EXISTS {table_name(settings.iceberg_catalog, key)} PURGE")
    resources = silver_resources(settings, spark, bronze)
    return {day: materialize_silver(day, resources) for day in DAILY.get_partition_keys()}


def silver_digest(spark: SparkResource, settings: Settings, day: str) -> dict[str, tuple[int, int]]:
    """Per silver table: rows of ``day`` and an order-independent hash of all their columns."""
    from pyspark.sql import functions as F

    from taobao_assets.assets.silver import SCHEMAS
    from taobao_assets.io_managers.iceberg import table_name

    digest = {}
    for key in SCHEMAS:
        name = table_name(settings.iceberg_catalog, key)
        frame = spark.spark_session.table(name).where(F.col("day") == F.lit(day))
        # a sum of hashes reduced below 2**31, so it cannot overflow
        row = frame.agg(F.count(F.lit(1)), F.sum(F.pmod(F.xxhash64(*frame.columns), F.lit(2**31)))).first()
        assert row is not None
        digest[name] = (row[0], row[1] or 0)
    return digest


def gold_resources(settings: Settings, spark: SparkResource, s3: S3Resource) -> dict[str, object]:
    from taobao_assets.io_managers.postgres import PostgresPartitionIOManager

    postgres = PostgresResource.from_settings(settings)
    return {**silver_resources(settings, spark, s3), "postgres": postgres,
            "gold_io_manager": PostgresPartitionIOManager(postgres=postgres)}


def materialize_gold(day: str, resources: dict[str, object]) -> ExecuteInProcessResult:
    """Gold (tables and checks) of one day, reading the stored silver tables."""
    from taobao_assets.assets.gold import GOLD_KEYS, gold_assets
    from taobao_assets.assets.silver import silver_assets
    from taobao_assets.checks.gold import gold_checks

    return materialize([*bronze_assets(DAILY, TOPICS), *silver_assets(DAILY), *gold_assets(DAILY), *gold_checks(DAILY)],
                       partition_key=day, resources=resources, selection=AssetSelection.assets(*GOLD_KEYS))


@pytest.fixture(scope="session")
def gold(silver: dict[str, ExecuteInProcessResult], bronze: S3Resource, spark: SparkResource,
         settings: Settings) -> PostgresResource:
    """Gold of every day, from an empty gold schema, every check passing; returns the Postgres resource."""
    from taobao_assets.checks.gold import gold_checks

    resources = gold_resources(settings, spark, bronze)
    postgres = PostgresResource.from_settings(settings)
    with postgres.connect() as conn, conn.cursor() as cur:
        # The tables, not the schema: its grants to Trino's read-only role stay (deploy/services/postgres.py).
        cur.execute("SELECT format('DROP TABLE %I.%I CASCADE', schemaname, tablename) FROM pg_tables "
                    "WHERE schemaname = 'gold'")
        for (drop,) in cur.fetchall():
            cur.execute(drop)
    for day in DAILY.get_partition_keys():
        result = materialize_gold(day, resources)
        assert result.success
        failed = [(e.asset_key.path[-1], e.check_name, e.metadata) for e in result.get_asset_check_evaluations()
                  if not e.passed]
        assert not failed, f"gold checks failed on {day}: {failed}"
        assert len(result.get_asset_check_evaluations()) == sum(len(c.check_keys) for c in gold_checks(DAILY))
    return postgres
