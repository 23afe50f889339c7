"""Serving (``serving/*``): the Feast registry, the Redis online store, training sets and a baseline CTR model.

- ``feast_registry`` applies the repository generated from the table contracts of the assets it
  depends on (:mod:`taobao_assets.feast_repo`), so adding a gold column re-registers the view;
- ``online_store`` (daily) materializes day D's gold rows, stamped with the end of D, into Redis.
  Feast's Redis writes keep the newest timestamp per entity, so re-running an older day never
  replaces newer values; a re-run of the same day (gold recomputed) does replace its own values
  (the engine's ``rewrite_same_time``, :mod:`taobao_assets.online_materialization`);
- ``training_set`` (daily) takes day D's impressions from silver, the user of their context, and
  joins the ``ctr_model_v1`` features point in time: an impression at time t gets the latest gold
  row stamped at or before t within the view's TTL, i.e. the features of D-1. The rows, with labels,
  go to the lake as Parquet;
- ``ctr_baseline`` (daily) trains a logistic regression on the training sets of the days before D
  and scores day D: the AUC is the figure later models have to beat. On a generated data set it
  also records the AUC of the generator's true propensities on D (``oracle_auc``), the ceiling.

The Feast objects come from the contracts of :data:`CONTRACT_KEYS` (the gold tables and the
real-time tables), which ``feast_registry`` depends on; the registry check guarantees the applied
registry is exactly that, so the other assets use the generated objects directly.

The real-time tables are declared here as external assets (``streaming/<table>``): the streaming
run writes them to Redis through Feast pushes; like the gold assets, they carry their contract as
metadata, so the Dagster UI shows the columns Feast serves.
"""

import contextlib
import io
import itertools
import json
import math
import pickle
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    DagsterInstance,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)
from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taobao_assets import failpoints
from taobao_assets.assets.bronze import topic_asset_key
from taobao_assets.assets.gold import GOLD_KEYS, latest_contexts
from taobao_assets.baseline_sample import TEST_ROWS, TRAIN_ROWS, sample_days
from taobao_assets.checks.gold import gold_checks
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.io_managers.postgres import create_table_sql
from taobao_assets.partitions import days_up_to_the_day, end_of_day
from taobao_assets.quality.gate import blocking_keys, require_passed
from taobao_assets.realtime_tables import REALTIME_TABLES
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.server_loss import SERVER_RETRY, on_server_loss
from taobao_assets.source.topics import SAMPLES

# Feast (through feast_repo) and pandas are imported in the assets that use them: every run process
# loads these definitions, and a run of bronze or of the Spark days needs neither.
if TYPE_CHECKING:
    import pandas as pd

    from taobao_assets.feast_repo import FeastRepo

GROUP = "serving"
#: The feature service the training sets are built from (and the online lookup serves by default).
TRAINING_SERVICE = "ctr_model_v1"
LABELS = ("click", "conversion")
TRAINING_PREFIX = f"training/{TRAINING_SERVICE}"
#: Impressions per chunk of a day's training set (:class:`TrainingSetConfig`): about 0.5 GB in pandas.
CHUNK_ROWS = 500_000
MODEL_PREFIX = "models/ctr_baseline"
REFERENCE_FEATURE = "item_features__ctr_7d"

REGISTRY_KEY = AssetKey([GROUP, "feast_registry"])
ONLINE_STORE_KEY = AssetKey([GROUP, "online_store"])
TRAINING_SET_KEY = AssetKey([GROUP, "training_set"])
BASELINE_KEY = AssetKey([GROUP, "ctr_baseline"])

realtime_assets = [
    AssetSpec(t.asset_key, description=t.description, metadata=t.metadata(),
              group_name="streaming", kinds={"redis"})
    for t in REALTIME_TABLES
]
#: The assets whose table contracts make the Feast repository; the registry depends on exactly these.
CONTRACT_KEYS = [*GOLD_KEYS, *(spec.key for spec in realtime_assets)]


def create_push_tables(postgres: PostgresResource, repo: "FeastRepo") -> None:
    """The push sources' batch tables, where the streaming run keeps its rows for point-in-time reads."""
    with postgres.connect() as conn, conn.cursor() as cur:
        for source in repo.tables:
            if source.pushed:
                cur.execute(create_table_sql(source.table), (source.table.description,))


def training_set_key(day: str) -> str:
    return f"{TRAINING_PREFIX}/day={day}/training_set.parquet"


@asset(
    retry_policy=SERVER_RETRY,
    key=REGISTRY_KEY, group_name=GROUP, kinds={"feast", "postgres"},
    deps=CONTRACT_KEYS,
    description="Apply the Feast repository generated from the gold and real-time assets' metadata.",
)
@on_server_loss("postgres")
def feast_registry(feast: FeastResource, postgres: PostgresResource) -> MaterializeResult:
    from taobao_assets.feast_repo import generated_repo

    repo = generated_repo()
    create_push_tables(postgres, repo)
    changes = feast.apply(repo.contents())
    return MaterializeResult(metadata={
        "project": feast.project,
        "changes": MetadataValue.md("\n".join(f"- {c}" for c in changes) or "none"),
        "entities": ", ".join(e.name for e in repo.entities),
        "feature_views": ", ".join(v.name for v in repo.feature_views),
        "feature_services": ", ".join(s.name for s in repo.feature_services),
        "features": sum(len(v.features) for v in repo.feature_views),
    })


def gold_views(repo: "FeastRepo") -> list[str]:
    return [v.name for v in repo.feature_views if v.tags["layer"] == "gold"]


def impression_rows(impressions: DataFrame, user_context: DataFrame, day: date, keys: list[str]) -> DataFrame:
    """Day ``day``'s impressions as Feast entity rows: ``keys``, ``event_timestamp``, labels, sample id.

    The user is the one of the impression's context, from the latest context known by the end of
    the day (as gold resolves it). Impressions whose user or item fields are unknown stay, with a
    null key: Feast then joins no features for that entity, and the counts say how many.
    """
    users = latest_contexts(user_context, end_of_day(day)).select("common_feature_index", "user_id")
    return (impressions.where(F.col("day") == F.lit(day))
            .join(users, on="common_feature_index", how="left")
            .select("sample_id", *keys, F.col("event_time").alias(TIMESTAMP_FIELD), *LABELS))


def join_keys(repo: "FeastRepo", service: str) -> list[str]:
    """The entity columns a feature service's views join on, in first-seen order."""
    entities = {e.name: e.join_key for e in repo.entities}
    keys: dict[str, None] = {}
    for projection in repo.service(service).feature_view_projections:
        for entity in repo.view(projection.name).entities:
            keys.setdefault(entities[entity])
    return list(keys)


def entity_frame(rows: "pd.DataFrame", keys: list[str]) -> "pd.DataFrame":
    """Feast's entity data frame: UTC timestamps, and nullable integer keys (a missing key stays null)."""
    import pandas as pd

    frame = rows.copy()
    frame[TIMESTAMP_FIELD] = pd.to_datetime(frame[TIMESTAMP_FIELD], utc=True)
    for key in keys:
        frame[key] = frame[key].astype("Int64")
    return frame


class TrainingSetConfig(Config):
    """How a day's training set is built."""

    chunk_rows: int = Field(
        default=CHUNK_ROWS, gt=0,
        description="Impressions joined per Feast query and written per Parquet row group: the step's memory "
                    "grows with this, not with the day.")


def sample_id_chunks(rows: DataFrame, chunk_rows: int) -> list[DataFrame]:
    """``rows`` in consecutive ranges of ``sample_id`` of about ``chunk_rows`` rows each (one range when
    the day fits in one). The bounds are approximate quantiles, so a range may hold somewhat more;
    every row is in exactly one range (half-open, the outer ones unbounded)."""
    chunks = max(1, math.ceil(rows.count() / chunk_rows))
    if chunks == 1:
        return [rows]
    quantiles = rows.approxQuantile("sample_id", [i / chunks for i in range(1, chunks)], 1 / (4 * chunks))
    ranges = []
    for low, high in itertools.pairwise([None, *sorted(set(quantiles)), None]):
        condition = F.lit(True)
        if low is not None:
            condition &= F.col("sample_id") >= F.lit(low)
        if high is not None:
            condition &= F.col("sample_id") < F.lit(high)
        ranges.append(rows.where(condition))
    return ranges


def feature_columns(frame: "pd.DataFrame") -> list[str]:
    """The model's inputs: every served feature except the categorical ids (``..._id``)."""
    return [c for c in frame.columns if "__" in c and not c.endswith("_id")]


def model_inputs(frame: "pd.DataFrame", columns: list[str]) -> np.ndarray:
    """Features as a matrix: missing as 0 (no history), ``log1p`` against the Zipf tails of the counts.

    Every feature is a non-negative count or a rate in [0, 1], so ``log1p`` is defined everywhere.
    """
    return np.log1p(frame[columns].astype("float64").fillna(0.0).clip(lower=0.0).to_numpy())


def oracle_auc(instance: DagsterInstance, day: str) -> float | None:
    """The AUC of the generator's true click propensities on ``day``, when the topics hold a generated
    data set (the replay records its folder; the generator's truth file has the figure per day)."""
    from taobao_assets.source.generate import TRUTH_FILE

    event = instance.get_latest_materialization_event(topic_asset_key(SAMPLES))
    materialization = event.asset_materialization if event else None
    source = materialization.metadata.get("source_dir") if materialization else None
    truth = Path(str(source.value)) / TRUTH_FILE if source is not None else None
    if truth is None or not truth.exists():
        return None
    by_day = json.loads(truth.read_text())["signal"].get("oracle_auc_by_day", {})
    return float(by_day[day]) if day in by_day else None


def serving_assets(daily: DailyPartitionsDefinition) -> list[AssetsDefinition | AssetSpec]:
    """The registry, the real-time tables and the daily serving assets over ``daily``."""
    gold_gate = blocking_keys(gold_checks(daily))

    @asset(
        retry_policy=SERVER_RETRY,
        key=ONLINE_STORE_KEY, group_name=GROUP, kinds={"feast", "redis"}, partitions_def=daily,
        deps=[REGISTRY_KEY, *GOLD_KEYS],
        description="Materialize the day's gold rows (stamped with the end of the day) into the Redis online store.",
    )
    @on_server_loss("postgres", "redis")
    def online_store(context: AssetExecutionContext, feast: FeastResource, postgres: PostgresResource
                     ) -> MaterializeResult:
        from taobao_assets.feast_repo import generated_repo

        require_passed(context.instance, gold_gate, context.partition_key)
        repo = generated_repo()
        stamp = end_of_day(context.partition_key)
        views = gold_views(repo)
        rows = {}
        with postgres.connect() as conn, conn.cursor() as cur:
            for name in views:
                cur.execute(f"SELECT count(*) FROM {repo.view(name).tags['table']} WHERE {TIMESTAMP_FIELD} = %s",
                            (stamp,))
                rows[name] = cur.fetchone()[0]
        # A re-run of the day (gold recomputed) must replace what the first run wrote: the engine also
        # writes a row whose stored time is the day's own stamp; a newer day's rows still win.
        # Feast's window is inclusive at both ends: [stamp, stamp] is exactly the day's rows. It prints
        # a report per view to stdout, i.e. to the terminal of an in-process run; the rows are in the
        # metadata below. One view at a time: the same work, with a fail point between views.
        store = feast.store_with(batch_engine={"rewrite_same_time": True})
        for view in views:
            with contextlib.redirect_stdout(io.StringIO()):
                store.materialize(start_date=stamp, end_date=stamp, feature_views=[view])
            failpoints.reached("online.view_written")
        return MaterializeResult(metadata={
            "event_timestamp": MetadataValue.timestamp(stamp),
            "rows_materialized": sum(rows.values()),
            **{f"rows/{name}": count for name, count in rows.items()},
        })

    @asset(
        retry_policy=SERVER_RETRY,
        key=TRAINING_SET_KEY, group_name=GROUP, kinds={"feast", "parquet"}, partitions_def=daily,
        ins={
            "impressions": AssetIn(AssetKey(["silver", "impressions"])),
            "user_context": AssetIn(AssetKey(["silver", "user_context"]), partition_mapping=days_up_to_the_day(daily)),
        },
        deps=[REGISTRY_KEY, *(
            AssetDep(key, partition_mapping=TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True))
            for key in GOLD_KEYS
        )],
        description=f"Day D's impressions with the {TRAINING_SERVICE} features as of each impression "
                    f"(point in time: the gold rows of D-1), labels included, as Parquet in the lake.",
    )
    @on_server_loss("postgres", "minio")
    def training_set(
        context: AssetExecutionContext, config: TrainingSetConfig, feast: FeastResource, s3: S3Resource,
        impressions: DataFrame, user_context: DataFrame,
    ) -> MaterializeResult:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        from taobao_assets.feast_repo import generated_repo

        day = date.fromisoformat(context.partition_key)
        require_passed(context.instance, gold_gate, (day - timedelta(days=1)).isoformat())  # the features' day
        repo = generated_repo()
        keys = join_keys(repo, TRAINING_SERVICE)
        store = feast.store()
        served = repo.served_types(TRAINING_SERVICE)
        first_features = {f"{p.name}__{p.features[0].name}": p.name
                          for p in repo.service(TRAINING_SERVICE).feature_view_projections}
        rows = impression_rows(impressions, user_context, day, keys).persist()
        counts: Counter[str] = Counter()
        try:
            with tempfile.TemporaryDirectory(prefix="tfp-training-set-") as folder:
                path = Path(folder) / "training_set.parquet"
                writer: pq.ParquetWriter | None = None
                chunks = sample_id_chunks(rows, config.chunk_rows)
                started = time.monotonic()
                for done, chunk in enumerate(chunks, start=1):
                    frame = store.get_historical_features(
                        entity_df=entity_frame(chunk.toPandas(), keys),
                        features=store.get_feature_service(TRAINING_SERVICE), full_feature_names=True,
                    ).to_df().sort_values("sample_id", ignore_index=True)
                    # Feast returns the entity times without their zone; they are UTC, and the file should say so.
                    frame[TIMESTAMP_FIELD] = pd.to_datetime(frame[TIMESTAMP_FIELD], utc=True)
                    if writer is None:
                        schema = pa.Schema.from_pandas(frame, preserve_index=False)
                        # One type per column for every chunk: pandas makes a counter int64 in a chunk
                        # where no row misses it and double in one where some do.
                        schema = pa.schema([pa.field(f.name, served.get(f.name, f.type)) for f in schema],
                                           metadata=schema.metadata)
                        writer = pq.ParquetWriter(path, schema)
                    writer.write_table(pa.Table.from_pandas(frame, schema=writer.schema, preserve_index=False))
                    counts.update({"rows": len(frame), "clicks": int(frame["click"].sum()),
                                   "conversions": int(frame["conversion"].sum()),
                                   **{f"rows_without/{k}": int(frame[k].isna().sum()) for k in keys},
                                   **{f"rows_with_features/{view}": int(frame[column].notna().sum())
                                      for column, view in first_features.items()}})
                    elapsed = time.monotonic() - started
                    context.log.info(f"training set {day}: chunk {done} of {len(chunks)}, {counts['rows']:,} rows "
                                     f"joined, {counts['rows'] / elapsed:,.0f} rows/s, about "
                                     f"{elapsed / done * (len(chunks) - done):.0f} s left")
                assert writer is not None  # sample_id_chunks gives at least one chunk
                writer.close()
                key = training_set_key(context.partition_key)
                s3.upload_file(path, key)
        finally:
            rows.unpersist()
        return MaterializeResult(metadata={
            "path": MetadataValue.path(f"s3://{s3.bucket}/{key}"),
            "row_count": counts["rows"],
            "columns": len(writer.schema),
            "click_rate": counts["clicks"] / counts["rows"] if counts["rows"] else 0.0,
            "conversion_rate": counts["conversions"] / counts["rows"] if counts["rows"] else 0.0,
            **{name: counts[name] for name in (*(f"rows_without/{k}" for k in keys),
                                                *(f"rows_with_features/{v}" for v in first_features.values()))},
        })

    @asset(
        retry_policy=SERVER_RETRY,
        key=BASELINE_KEY, group_name=GROUP, kinds={"sklearn"}, partitions_def=daily,
        deps=[AssetDep(TRAINING_SET_KEY, partition_mapping=TimeWindowPartitionMapping(
            start_offset=-(len(daily.get_partition_keys()) - 1), end_offset=0,
            allow_nonexistent_upstream_partitions=True))],
        description=f"Logistic regression on up to {TRAIN_ROWS:,} rows sampled from the training sets of the days "
                    f"before D, scored on up to {TEST_ROWS:,} rows of day D (AUC).",
    )
    @on_server_loss("minio")
    def ctr_baseline(context: AssetExecutionContext, s3: S3Resource) -> MaterializeResult:
        # Imported here: every run process loads these definitions (a sensor's streaming run too) and
        # scikit-learn adds seconds to that start, for the one asset that needs it.
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        day = context.partition_key
        earlier = [d for d in daily.get_partition_keys() if d < day]
        stored = set(s3.list_keys(f"{TRAINING_PREFIX}/"))
        train_days = [d for d in earlier if training_set_key(d) in stored]
        if not train_days:
            context.log.warning(f"no training set before {day}: nothing to train on, no score")
            return MaterializeResult(metadata={"trained_on_days": 0})
        # Fixed-size samples, read batch by batch: the step's memory does not grow with the days.
        seed = date.fromisoformat(day).toordinal()
        train, train_held = sample_days(s3, [training_set_key(d) for d in train_days], TRAIN_ROWS, seed)
        test, test_held = sample_days(s3, [training_set_key(day)], TEST_ROWS, seed + 1)
        columns = feature_columns(train)
        if train["click"].nunique() < 2 or test["click"].nunique() < 2:
            raise ValueError(f"day {day}: training ({train_days}) or test labels have a single class; "
                             "a CTR model needs clicks and non-clicks")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(model_inputs(train, columns), train["click"].to_numpy())
        scores = model.predict_proba(model_inputs(test, columns))[:, 1]
        auc = float(roc_auc_score(test["click"], scores))
        oracle = oracle_auc(context.instance, day)
        key = f"{MODEL_PREFIX}/day={day}/model.pickle"
        s3.put_bytes(key, pickle.dumps({"model": model, "columns": columns, "trained_on": train_days}))
        return MaterializeResult(metadata={
            "auc": auc,
            # One smoothed rate alone: how much the model adds over the most obvious single feature.
            f"auc_{REFERENCE_FEATURE}_alone": float(roc_auc_score(test["click"], test[REFERENCE_FEATURE].fillna(0.0))),
            **({"oracle_auc": oracle} if oracle is not None else {}),
            "trained_on_days": len(train_days),
            "train_rows": len(train),
            "train_rows_available": train_held,
            "test_rows": len(test),
            "test_rows_available": test_held,
            "features": len(columns),
            "model_path": MetadataValue.path(f"s3://{s3.bucket}/{key}"),
        })

    return [feast_registry, online_store, training_set, ctr_baseline, *realtime_assets]
