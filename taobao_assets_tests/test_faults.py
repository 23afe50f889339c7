"""The fault matrix: kill -9 of a server (restarted by the stack manager) or of the run itself, inside the
stage it can hit, on one day of the session's data; every layer must then equal the uninterrupted run's.

Each cell arms a fail point (:mod:`taobao_assets.failpoints`) in the stage's code, so the fault lands at
the same place every time: between a bronze day's objects and its manifest, between two silver or gold
tables, between two feature views of the online store. A killed server is restarted a second later by
the stack manager, as an operator or a supervisor would; the step's retry policy
(:mod:`taobao_assets.server_loss`) must carry the run through it, so the run itself succeeds. A killed
run process cannot carry on: the stage is run again, as a user would. Either way the layer is then
compared with what the uninterrupted run left (row counts and order-independent hashes, or the stored
objects byte for byte): nothing lost, nothing doubled, nothing half written.

The matrix is kept in ``fault_matrix.FAULT_MATRIX`` (the stream's cells are injected in
``test_streaming/test_kills.py``) and printed at the end of the run (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import signal
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, AssetSelection, RetryPolicy, materialize

from taobao_assets import jobs
from taobao_assets.assets import bronze as bronze_module
from taobao_assets.assets.bronze import bronze_asset_key, bronze_assets
from taobao_assets.assets.serving import ONLINE_STORE_KEY, REGISTRY_KEY, gold_views, serving_assets
from taobao_assets.bronze_objects import day_prefix
from taobao_assets.failpoints import FAILPOINT_ENV
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.io_managers.bronze import BronzeIOManager
from taobao_assets.jobs import replay_job
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import Settings, get_settings
from taobao_assets.source.replay import checkpoint_prefix, default_checkpoint_dir
from taobao_assets.source.topics import LINE_HEADER, SOURCE_HEADER, RawTopics
from taobao_assets_tests.conftest import (
    DAILY,
    TOPICS,
    gold_resources,
    materialize_gold,
    materialize_silver,
    silver_digest,
    silver_resources,
)
from taobao_assets_tests.fault_matrix import Cell, record, server_killed_at, stack_service

pytestmark = pytest.mark.slow
DAY = DAILY.get_partition_keys()[1]


# --- the layers, as digests an uninterrupted run and a faulted one must share ----------------------------
def bronze_digest(s3: S3Resource, day: str) -> dict[str, str]:
    """Every object of the day's bronze prefixes (both topics), by key: its SHA-256."""
    return {key: hashlib.sha256(s3.get_bytes(key)).hexdigest()
            for topic in TOPICS.all for key in s3.list_keys(day_prefix(topic.name, day))}


def gold_digest(postgres: PostgresResource, day: str) -> dict[str, tuple[int, str]]:
    """Per gold table: the day's rows and an MD5 of all of them in a fixed order."""
    digest = {}
    with postgres.connect() as conn, conn.cursor() as cur:
        for table in GOLD_TABLES:
            cur.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                        f"FROM {table.qualified_name} t WHERE event_timestamp = %s", (end_of_day(day),))
            count, md5 = cur.fetchone() or (0, "")
            digest[table.name] = (int(count), str(md5))
    return digest


def online_digest(feast: FeastResource, postgres: PostgresResource, day: str) -> dict[str, str]:
    """Per gold feature view: a hash of what Feast serves for every entity of the day's gold."""
    import pandas as pd

    from taobao_assets.feast_repo import generated_repo

    repo, store, digest = generated_repo(), feast.store(), {}
    for name in gold_views(repo):
        view = repo.view(name)
        keys = [c.name for c in view.entity_columns]
        with postgres.connect() as conn:
            entities = pd.read_sql_query(f"SELECT {', '.join(keys)} FROM {view.tags['table']} WHERE event_timestamp "
                                         f"= %(t)s ORDER BY {', '.join(keys)}", conn, params={"t": end_of_day(day)})
        served = store.get_online_features(features=[f"{name}:{f.name}" for f in view.features],
                                           entity_rows=entities.to_dict("records")).to_df()
        digest[name] = hashlib.sha256(served.to_csv(index=False).encode()).hexdigest()
    return digest


def topics_digest(kafka: KafkaResource, topics: RawTopics) -> dict[str, tuple[int, str]]:
    """Per raw topic (by its short name): the records, and a hash of their partitions, keys, values,
    event times and source lines in any order (``produced_at`` is when they were sent: it differs)."""
    async def read() -> dict[str, tuple[int, str]]:
        digest = {}
        for topic in topics.all:
            rows = []
            for partition, end in (await kafka.end_offsets(topic.name)).items():
                async for r in kafka.read_range(topic.name, partition, 0, end):
                    origin = sorted((k, v) for k, v in r.headers if k in (SOURCE_HEADER, LINE_HEADER))
                    rows.append(repr((partition, r.key, r.value, r.timestamp, origin)))
            rows.sort()
            digest[RawTopics.short_name(topic)] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
        return digest
    return asyncio.run(read())


# --- the stages, as a run of one day -------------------------------------------------------------------
def run_bronze(settings: Settings, s3: S3Resource) -> bool:
    resources = {"kafka": KafkaResource.from_settings(settings), "s3": s3, "bronze_io_manager": BronzeIOManager(s3=s3)}
    return materialize(bronze_assets(DAILY, TOPICS), partition_key=DAY, resources=resources,
                       raise_on_error=False).success


def run_online(settings: Settings, spark: Any, day: str = DAY, selection: AssetKey = ONLINE_STORE_KEY) -> bool:
    from taobao_assets.assets.gold import gold_assets
    from taobao_assets.assets.silver import silver_assets

    resources = {**gold_resources(settings, spark, S3Resource.from_settings(settings)),
                 "feast": FeastResource.from_settings(settings)}
    assets = [*bronze_assets(DAILY, TOPICS), *silver_assets(DAILY), *gold_assets(DAILY), *serving_assets(DAILY)]
    return materialize(assets, partition_key=day if selection == ONLINE_STORE_KEY else None,
                       resources=resources, selection=[selection], raise_on_error=False).success


def run_in_child(stage: str) -> None:
    """A stage's run in a spawned interpreter whose ``TFP_FAILPOINT`` kills it (SIGKILL) mid-stage."""
    from taobao_assets.resources.spark import SparkResource

    settings = get_settings()
    s3 = S3Resource.from_settings(settings)
    spark = SparkResource.from_settings(settings)
    runs: dict[str, Callable[[], object]] = {
        "bronze": lambda: run_bronze(settings, s3),
        "silver": lambda: materialize_silver(DAY, silver_resources(settings, spark, s3)),
        "gold": lambda: materialize_gold(DAY, gold_resources(settings, spark, s3)),
        "online store": lambda: run_online(settings, spark),
    }
    runs[stage]()


def killed_run(stage: str, point: str) -> None:
    """Run ``stage`` in a child process that SIGKILLs itself at the first pass through ``point``."""
    import multiprocessing

    os.environ[FAILPOINT_ENV] = f"{point}:1:kill"
    try:
        with (ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool,
              pytest.raises(BrokenProcessPool)):
            pool.submit(run_in_child, stage).result(timeout=600)
    finally:
        del os.environ[FAILPOINT_ENV]


def run_through(cell: Cell, run: Callable[[], bool], settings: Settings) -> None:
    """Run a stage with ``cell``'s fault: under a server's restart the run must succeed by itself; a
    killed run is run again, as a user would."""
    if cell.fault == "run process":
        killed_run(cell.stage, cell.point)
        assert run(), "the stage, run again, failed"
    else:
        with server_killed_at(cell.point, cell.fault, settings):
            assert run(), "the run did not survive the restart"


def test_the_replay_converges_after_a_kafka_restart(replayed: object, dataset: Path, settings: Settings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay job, into topics of its own, with Kafka killed after its first checkpoint: the topics
    then hold what the session's replay wrote, no record lost or doubled."""
    cell = Cell("replay", "kafka", "replay.checkpoint_saved")
    kafka = KafkaResource.from_settings(settings)
    other = dataclasses.replace(settings, topic_prefix=f"test.faults.{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(jobs, "get_settings", lambda: other)  # the job's topics are the settings' ones

    def check() -> None:
        with server_killed_at(cell.point, cell.fault, settings):
            result = replay_job.execute_in_process(
                run_config={"ops": {"replay_raw_files": {"config": {"source_dir": str(dataset)}}}},
                resources={"kafka": kafka}, raise_on_error=False)
        assert result.success, "the replay did not survive the restart"
        assert topics_digest(kafka, RawTopics.of(other.topic_prefix)) == topics_digest(kafka, TOPICS)
    try:
        record(cell, check)
    finally:
        asyncio.run(kafka.delete_topics([t.name for t in RawTopics.of(other.topic_prefix).all]))
        for path in default_checkpoint_dir(other).glob(f"{checkpoint_prefix(RawTopics.of(other.topic_prefix))}*"):
            path.unlink()


BRONZE = [Cell("bronze", "kafka", "bronze.partition_read"), Cell("bronze", "minio", "bronze.objects_stored"),
          Cell("bronze", "run process", "bronze.objects_stored")]
SILVER = [Cell("silver", "minio", "silver.table_written"), Cell("silver", "postgres", "silver.table_written"),
          Cell("silver", "run process", "silver.table_written")]
#: A lost Postgres or run process with a table's rows staged: the day is replaced from a new staging table.
GOLD = [Cell("gold", "postgres", "gold.rows_staged"), Cell("gold", "minio", "gold.table_written"),
        Cell("gold", "run process", "gold.rows_staged")]


@pytest.mark.parametrize("cell", BRONZE, ids=lambda c: f"{c.stage}-{c.fault}")
def test_bronze_converges_after_a_fault(cell: Cell, bronze: S3Resource, settings: Settings) -> None:
    before = bronze_digest(bronze, DAY)

    def check() -> None:
        run_through(cell, lambda: run_bronze(settings, bronze), settings)
        assert bronze_digest(bronze, DAY) == before
    record(cell, check)


@pytest.mark.parametrize("cell", SILVER, ids=lambda c: f"{c.stage}-{c.fault}")
def test_silver_converges_after_a_fault(cell: Cell, silver: object, bronze: S3Resource, spark: Any,
                                        settings: Settings) -> None:
    before = silver_digest(spark, settings, DAY)

    def check() -> None:
        run_through(cell, lambda: materialize_silver(DAY, silver_resources(settings, spark, bronze)).success, settings)
        assert silver_digest(spark, settings, DAY) == before
    record(cell, check)


@pytest.mark.parametrize("cell", GOLD, ids=lambda c: f"{c.stage}-{c.fault}")
def test_gold_converges_after_a_fault(cell: Cell, gold: PostgresResource, bronze: S3Resource, spark: Any,
                                      settings: Settings) -> None:
    before = gold_digest(gold, DAY)

    def check() -> None:
        run_through(cell, lambda: materialize_gold(DAY, gold_resources(settings, spark, bronze)).success, settings)
        assert gold_digest(gold, DAY) == before
    record(cell, check)


ONLINE = [Cell("online store", "redis", "online.view_written"),
          Cell("online store", "postgres", "online.view_written"),
          Cell("online store", "run process", "online.view_written")]


@pytest.fixture(scope="module")
def online(gold: PostgresResource, redis_service: object, spark: Any, settings: Settings) -> dict[str, str]:
    """The registry applied and the day in the online store, uninterrupted; what Feast serves then."""
    assert run_online(settings, spark, selection=REGISTRY_KEY)
    assert run_online(settings, spark)
    return online_digest(FeastResource.from_settings(settings), gold, DAY)


@pytest.mark.parametrize("cell", ONLINE, ids=lambda c: f"online-{c.fault}")
def test_the_online_store_converges_after_a_fault(cell: Cell, online: dict[str, str], gold: PostgresResource,
                                                  spark: Any, settings: Settings) -> None:
    def check() -> None:
        run_through(cell, lambda: run_online(settings, spark), settings)
        assert online_digest(FeastResource.from_settings(settings), gold, DAY) == online
    record(cell, check)


ANALYTICS = [Cell("analytics", "trino", "analytics.statement_run"),
             Cell("analytics", "minio", "analytics.statement_run"),
             Cell("analytics", "postgres", "analytics.statement_run")]


def analytics_digest(spark: Any, settings: Settings, day: str) -> dict[str, tuple[int, int]]:
    """Per report table (Iceberg, written by Trino, read here by Spark): the day's rows and an
    order-independent hash of all their columns."""
    from pyspark.sql import functions as F

    from taobao_assets.assets.analytics import REPORTS

    digest = {}
    for report in REPORTS:
        frame = spark.spark_session.table(f"{settings.iceberg_catalog}.analytics.{report.name}").where(
            F.col("day") == F.lit(day))
        row = frame.agg(F.count(F.lit(1)), F.sum(F.pmod(F.xxhash64(*frame.columns), F.lit(2**31)))).first()
        assert row is not None
        digest[report.name] = (row[0], row[1] or 0)
    return digest


def run_analytics(settings: Settings, spark: Any) -> bool:
    from taobao_assets.assets.analytics import analytics_assets
    from taobao_assets.resources.trino import TrinoResource

    resources = {"trino": TrinoResource.from_settings(settings), "spark": spark,
                 "postgres": PostgresResource.from_settings(settings)}
    return materialize(analytics_assets(DAILY), partition_key=DAY, resources=resources, raise_on_error=False).success


@pytest.fixture(scope="module")
def analyzed(gold: PostgresResource, trino_service: object, spark: Any, settings: Settings
             ) -> dict[str, tuple[int, int]]:
    """The day's reports, uninterrupted."""
    assert run_analytics(settings, spark)
    return analytics_digest(spark, settings, DAY)


@pytest.mark.parametrize("cell", ANALYTICS, ids=lambda c: f"analytics-{c.fault}")
def test_analytics_converges_after_a_fault(cell: Cell, analyzed: dict[str, tuple[int, int]], spark: Any,
                                           settings: Settings) -> None:
    def check() -> None:
        run_through(cell, lambda: run_analytics(settings, spark), settings)
        assert analytics_digest(spark, settings, DAY) == analyzed
    record(cell, check)


def test_a_server_that_stays_down_fails_the_run_in_one_line_naming_it(
        bronze: S3Resource, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MinIO gone for good, the bronze run fails, and its error names MinIO and the command."""
    monkeypatch.setattr(bronze_module, "SERVER_RETRY", RetryPolicy(max_retries=1, delay=1))
    service = stack_service("minio", settings)
    pid = service.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    try:
        resources = {"kafka": KafkaResource.from_settings(settings), "s3": bronze,
                     "bronze_io_manager": BronzeIOManager(s3=bronze)}
        samples = bronze_asset_key(RawTopics.short_name(TOPICS.samples))
        result = materialize(bronze_assets(DAILY, TOPICS), partition_key=DAY, resources=resources,
                             selection=AssetSelection.assets(samples), raise_on_error=False)
    finally:
        service.start()
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    messages = []
    error = failure.step_failure_data.error
    while error is not None:  # Dagster's wrapper of an IO manager's error, then what it was raised from
        messages.append(error.message.strip())
        error = error.cause or error.context
    (down,) = [m for m in messages if "ServerDown" in m]
    assert down.startswith("taobao_assets.server_loss.ServerDown: minio at 127.0.0.1:"), messages
    assert "`python -m deploy.stack up minio`" in down and "\n" not in down
