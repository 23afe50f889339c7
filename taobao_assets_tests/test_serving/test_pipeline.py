"""Silver -> gold -> Feast -> training sets and a baseline model, on the session's shared data set.

Gold of two days is computed by the real Spark asset from the shared silver (deterministic, so
recomputing a day another test computed changes nothing); the serving assets then run on the
tests' database and Feast project (``taobao_test``), with their checks: the registry, the online
store of day 2, the training sets of days 2 and 3, and the baseline model trained on day 2 and
scored on day 3.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    MetadataValue,
    OutputContext,
    materialize,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taobao_assets.assets.bronze import bronze_assets, topic_asset_key
from taobao_assets.assets.gold import GOLD_KEYS, gold_assets
from taobao_assets.assets.serving import (
    BASELINE_KEY,
    ONLINE_STORE_KEY,
    REGISTRY_KEY,
    TRAINING_PREFIX,
    TRAINING_SERVICE,
    TRAINING_SET_KEY,
    feature_columns,
    serving_assets,
    training_set_key,
)
from taobao_assets.assets.silver import silver_assets
from taobao_assets.checks.gold import gold_checks
from taobao_assets.checks.serving import serving_checks
from taobao_assets.feast_repo import generated_repo
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.io_managers.postgres import PostgresPartitionIOManager
from taobao_assets.partitions import end_of_day
from taobao_assets.quality.leakage import ViewToAudit, audit
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.settings import Settings
from taobao_assets.source.generate import TRUTH_FILE
from taobao_assets.source.topics import SAMPLES
from taobao_assets_tests.conftest import DAILY, TOPICS, silver_resources

pytestmark = pytest.mark.slow
#: Gold of days 1-2 gives the training sets of days 2-3 their features (of the day before).
GOLD_DAYS = DAILY.get_partition_keys()[:2]
TRAINING_DAYS = DAILY.get_partition_keys()[1:3]


def _resources(settings: Settings, spark: SparkResource, bronze: S3Resource,
               gold_io_manager: type[PostgresPartitionIOManager] = PostgresPartitionIOManager) -> dict[str, object]:
    postgres = PostgresResource.from_settings(settings)
    return {**silver_resources(settings, spark, bronze), "postgres": postgres,
            "gold_io_manager": gold_io_manager(postgres=postgres), "feast": FeastResource.from_settings(settings)}


ASSETS = [*bronze_assets(DAILY, TOPICS), *silver_assets(DAILY), *gold_assets(DAILY), *serving_assets(DAILY)]


@pytest.fixture(scope="module")
def run(silver: object, bronze: S3Resource, spark: SparkResource, settings: Settings, redis_service: object):
    resources = _resources(settings, spark, bronze)
    assets = [*ASSETS, *serving_checks(DAILY)]

    def run(selection: AssetSelection, day: str | None = None, instance: DagsterInstance | None = None,
            run_config: dict[str, Any] | None = None) -> ExecuteInProcessResult:
        result = materialize(assets, resources=resources, selection=selection, partition_key=day,
                             raise_on_error=False, instance=instance, run_config=run_config)
        failed = [(e.asset_key.to_user_string(), e.check_name, e.metadata) for e in
                  result.get_asset_check_evaluations() if not e.passed]
        assert result.success and not failed, failed
        return result

    for day in GOLD_DAYS:
        run(AssetSelection.assets(*GOLD_KEYS), day)
    run(AssetSelection.assets(REGISTRY_KEY))
    bronze.delete_prefix(f"{TRAINING_PREFIX}/")  # training sets of earlier sessions would train the model too
    return run


#: The first training day is built in this many chunks (the second in one, the default for a small day).
CHUNKS = 3


def _chunk_rows(spark: SparkResource, settings: Settings, day: str) -> int:
    rows = spark.spark_session.table(f"{settings.iceberg_catalog}.silver.impressions").where(F.col("day") == day)
    return rows.count() // CHUNKS + 1


@pytest.fixture(scope="module")
def training_sets(run, spark: SparkResource, settings: Settings) -> dict[str, ExecuteInProcessResult]:
    chunked = {"ops": {"serving__training_set": {"config": {
        "chunk_rows": _chunk_rows(spark, settings, TRAINING_DAYS[0])}}}}
    return {day: run(AssetSelection.assets(TRAINING_SET_KEY), day, run_config=chunked if i == 0 else None)
            for i, day in enumerate(TRAINING_DAYS)}


def test_online_store_of_a_day_passes_its_check(run) -> None:
    result = run(AssetSelection.assets(ONLINE_STORE_KEY), GOLD_DAYS[-1])
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["entities_compared"].value > 0


def test_training_set_has_one_row_per_impression_with_labels_and_point_in_time_features(
    training_sets: dict[str, ExecuteInProcessResult], spark: SparkResource, settings: Settings, bronze: S3Resource
) -> None:
    for day, result in training_sets.items():
        data = bronze.get_bytes(training_set_key(day))
        frame = pd.read_parquet(io.BytesIO(data))
        parquet = pq.ParquetFile(io.BytesIO(data))
        # The first day was joined and written in chunks, each a row group of consecutive sample ids.
        assert parquet.num_row_groups == (CHUNKS if day == TRAINING_DAYS[0] else 1)
        assert frame["sample_id"].is_monotonic_increasing
        # Every counter keeps its declared type, whether or not some chunk misses it.
        assert parquet.schema_arrow.field("user_features__impressions_7d").type == pa.int64()
        assert parquet.schema_arrow.field("user_features__ctr_7d").type == pa.float64()
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(checks) == {"features_point_in_time", "no_feature_copies_the_label"}
        assert all(c.passed for c in checks.values())
        assert checks["features_point_in_time"].metadata["rows"].value == len(frame)
        silver = (spark.spark_session.table(f"{settings.iceberg_catalog}.silver.impressions")
                  .where(F.col("day") == day).select("sample_id", "click", "conversion", "event_time").toPandas())
        merged = frame.merge(silver, on="sample_id", suffixes=("", "_silver"), validate="one_to_one")
        assert len(frame) == len(silver) == len(merged)
        assert (merged["click"] == merged["click_silver"]).all()
        assert (merged["conversion"] == merged["conversion_silver"]).all()
        assert (merged[TIMESTAMP_FIELD] == pd.to_datetime(merged["event_time"], utc=True)).all()
        (materialization,) = result.asset_materializations_for_node("serving__training_set")
        assert materialization.metadata["row_count"].value == len(frame)
        assert materialization.metadata["click_rate"].value == pytest.approx(frame["click"].mean())
        # Most impressions find their user's and item's features of the day before.
        assert frame["user_features__impressions_7d"].notna().mean() > 0.5
        assert frame["item_features__impressions_7d"].notna().mean() > 0.5
        assert TRAINING_SERVICE in materialization.metadata["path"].value


def test_baseline_model_trained_on_earlier_days_scores_the_next_day(
    training_sets: dict[str, ExecuteInProcessResult], run, bronze: S3Resource, dataset: Path
) -> None:
    # What the replay job records: the folder of the data set the topics hold (here, a generated one).
    instance = DagsterInstance.ephemeral()
    instance.report_runless_asset_event(AssetMaterialization(
        topic_asset_key(SAMPLES), metadata={"source_dir": MetadataValue.path(str(dataset))}))
    result = run(AssetSelection.assets(BASELINE_KEY), TRAINING_DAYS[-1], instance)
    (materialization,) = result.asset_materializations_for_node("serving__ctr_baseline")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    test_day = pd.read_parquet(io.BytesIO(bronze.get_bytes(training_set_key(TRAINING_DAYS[-1]))))
    assert metadata["trained_on_days"] == len(TRAINING_DAYS) - 1 and metadata["test_rows"] == len(test_day)
    earlier = [pd.read_parquet(io.BytesIO(bronze.get_bytes(training_set_key(d)))) for d in TRAINING_DAYS[:-1]]
    # Days smaller than the sample are taken whole.
    assert metadata["train_rows"] == metadata["train_rows_available"] == sum(map(len, earlier))
    # The generator's clicks depend on user, item and category effects the gold rates estimate.
    assert 0.5 < metadata["auc"] <= 1.0, metadata
    oracle = json.loads((dataset / TRUTH_FILE).read_text())["signal"]["oracle_auc_by_day"][TRAINING_DAYS[-1]]
    assert metadata["oracle_auc"] == oracle and metadata["auc"] < oracle + 0.02, metadata


CORRUPTED = AssetKey(["gold", "item_features"])


class _CorruptingGold(PostgresPartitionIOManager):
    """Writes item_features with a negative 7-day conversion count: a day no other gold check minds."""

    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        if context.asset_key == CORRUPTED:
            obj = obj.withColumn("conversions_7d", F.lit(-1).cast("long"))
        super().handle_output(context, obj)


def test_a_day_breaking_a_blocking_gold_check_never_reaches_the_online_store(
    run, silver: object, bronze: S3Resource, spark: SparkResource, settings: Settings
) -> None:
    day = GOLD_DAYS[-1]
    instance = DagsterInstance.ephemeral()
    assets = [*ASSETS, *gold_checks(DAILY), *serving_checks(DAILY)]
    corrupting = _resources(settings, spark, bronze, _CorruptingGold)
    try:
        # Gold and the online store in one run: the blocking check stops the online store's step.
        result = materialize(assets, resources=corrupting, partition_key=day, raise_on_error=False,
                             selection=AssetSelection.assets(*GOLD_KEYS, ONLINE_STORE_KEY), instance=instance)
        failed = {(e.asset_key, e.check_name): e.metadata for e in result.get_asset_check_evaluations()
                  if not e.passed}
        assert list(failed) == [(CORRUPTED, "counters_consistent")], failed
        assert failed[CORRUPTED, "counters_consistent"]["rows_breaking/conversions_7d_not_negative"].value > 0
        assert not result.asset_materializations_for_node("serving__online_store")
        # Later runs of their own (the daily serving job) refuse the day too: its online store, and the
        # training set of the next day, whose features are that day's.
        for key, partition in ((ONLINE_STORE_KEY, day), (TRAINING_SET_KEY, TRAINING_DAYS[-1])):
            later = materialize(assets, resources=corrupting, selection=AssetSelection.assets(key),
                                partition_key=partition, raise_on_error=False, instance=instance)
            assert not later.success
            assert "BlockedDay" in str(later.all_events) and "counters_consistent" in str(later.all_events)
    finally:
        run(AssetSelection.assets(*GOLD_KEYS), day)  # the day as the other tests expect it


def _audited_views() -> list[ViewToAudit]:
    repo = generated_repo()
    views = [repo.view(p.name) for p in repo.service(TRAINING_SERVICE).feature_view_projections]
    return [ViewToAudit.of(v, [c.name for c in v.entity_columns]) for v in views]


def test_leakage_audit_finds_a_training_set_joined_with_the_gold_of_its_own_day(
    training_sets: dict[str, ExecuteInProcessResult], bronze: S3Resource, settings: Settings
) -> None:
    """The classic off-by-one-day join: day D's impressions with the gold rows stamped at the end of D."""
    day = TRAINING_DAYS[0]
    postgres = PostgresResource.from_settings(settings)
    honest = pd.read_parquet(io.BytesIO(bronze.get_bytes(training_set_key(day))))
    leaky = honest.copy()
    with postgres.connect() as conn:
        for view in _audited_views():
            same_day = pd.read_sql_query(
                f"SELECT {', '.join([*view.keys, *view.features])} FROM {view.table} WHERE event_timestamp = %(ts)s",
                conn, params={"ts": end_of_day(day)})
            same_day.columns = [*view.keys, *(f"{view.name}__{f}" for f in view.features)]
            joined = leaky[view.keys].astype("Int64").merge(same_day.astype({k: "Int64" for k in view.keys}),
                                                             on=view.keys, how="left")
            for column in same_day.columns[len(view.keys):]:
                leaky[column] = joined[column].to_numpy()
    views = _audited_views()
    assert sum(audit(postgres, honest, views, []).mismatches.values()) == 0
    report = audit(postgres, leaky, views, [])
    # Every view's values come from the future for most rows (the rest: entities without a row that day
    # and the day before alike).
    for view in views:
        assert report.mismatches[view.name] > 0.5 * len(leaky) * len(view.features), report.mismatches
    assert report.examples


def test_leakage_audit_finds_a_feature_that_copies_the_label(
    training_sets: dict[str, ExecuteInProcessResult], bronze: S3Resource, settings: Settings
) -> None:
    frame = pd.read_parquet(io.BytesIO(bronze.get_bytes(training_set_key(TRAINING_DAYS[0]))))
    honest = audit(PostgresResource.from_settings(settings), frame, [], feature_columns(frame))
    assert honest.auc and not honest.label_copies, honest.auc
    noise = np.random.default_rng(0).random(len(frame))
    frame["item_features__ctr_7d"] = frame["click"] * 0.5 + noise * 0.6  # a click, blurred
    report = audit(PostgresResource.from_settings(settings), frame, [], feature_columns(frame))
    assert report.label_copies == ["item_features__ctr_7d"], report.auc
