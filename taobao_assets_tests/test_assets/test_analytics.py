"""Analytics through the real Trino over the session's silver (Iceberg) and gold (Postgres) tables.

The expected reports are computed here with pandas from the silver rows as Spark reads them and
the gold rows as psycopg2 reads them, restating every rule (grouping with NULL keys, tie-breaks
of the ranking, the context version of an impression) rather than calling the SQL, and they must
equal the Iceberg tables Trino wrote exactly, read back through Spark.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetSelection, ExecuteInProcessResult, MetadataValue, materialize

from deploy.service import Service
from taobao_assets.assets.analytics import REPORTS, SQL_DIR, analytics_assets, render, sql_literal
from taobao_assets.checks.analytics import CHECKED_REPORT, analytics_checks
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.resources.trino import TrinoResource
from taobao_assets.settings import Settings
from taobao_assets_tests.conftest import DAILY

KEYS = {
    "ctr_cvr_by_category_position": ["day", "category_id", "position"],
    "top_shops_by_conversions": ["day", "rank"],
    "funnel_by_segment": ["day", "gender_id", "age_id"],
}
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _values(metadata: Mapping[str, MetadataValue]) -> dict[str, Any]:
    return {key: value.value for key, value in metadata.items()}


def _resources(settings: Settings, spark: SparkResource) -> dict[str, object]:
    return {"trino": TrinoResource.from_settings(settings), "spark": spark,
            "postgres": PostgresResource.from_settings(settings)}


def _run(settings: Settings, spark: SparkResource, first: str, last: str,
         selection: AssetSelection | None = None) -> ExecuteInProcessResult:
    """The analytics group and its check over the days ``first`` .. ``last`` in one run."""
    return materialize([*analytics_assets(DAILY), *analytics_checks(DAILY)], resources=_resources(settings, spark),
                       tags=dict(zip(RANGE_TAGS, (first, last), strict=True)), selection=selection)


@pytest.fixture(scope="module")
def trino(settings: Settings, trino_service: Service) -> TrinoResource:
    return TrinoResource.from_settings(settings)


@pytest.fixture(scope="module")
def analytics(gold: PostgresResource, spark: SparkResource, trino: TrinoResource,
              settings: Settings) -> ExecuteInProcessResult:
    """Every report over every day from fresh tables, as one single-run backfill."""
    for report in REPORTS:
        trino.query(f"DROP TABLE IF EXISTS {report.trino_table}")
    days = DAILY.get_partition_keys()
    result = _run(settings, spark, days[0], days[-1])
    assert result.success
    return result


def _table(spark: SparkResource, settings: Settings, name: str) -> pd.DataFrame:
    """A report as Spark reads it (Trino wrote it), in key order."""
    frame = spark.spark_session.table(f"{settings.iceberg_catalog}.analytics.{name}").toPandas()
    return frame.sort_values(KEYS[name], na_position="first").reset_index(drop=True)


def _silver(spark: SparkResource, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    session = spark.spark_session
    impressions = session.table(f"{settings.iceberg_catalog}.silver.impressions").select(
        "day", "click", "conversion", "common_feature_index", "category_id", "position", "shop_id").toPandas()
    contexts = session.table(f"{settings.iceberg_catalog}.silver.user_context").select(
        "common_feature_index", "user_id", "gender_id", "age_id", "event_time", "source_file", "source_line",
    ).toPandas()
    contexts["event_time"] = pd.to_datetime(contexts["event_time"], utc=True)  # the session's zone is UTC
    return impressions, contexts


def _counts(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(keys, dropna=False)
    counts = pd.DataFrame({"impressions": grouped.size(), "clicks": grouped["click"].sum(),
                           "conversions": grouped["conversion"].sum()}).reset_index()
    counts["ctr"] = counts["clicks"] / counts["impressions"]
    counts["cvr"] = (counts["conversions"] / counts["clicks"]).where(counts["clicks"] > 0)
    return counts


def _expected_rates(impressions: pd.DataFrame) -> pd.DataFrame:
    return _counts(impressions, KEYS["ctr_cvr_by_category_position"])


def _expected_top_shops(impressions: pd.DataFrame, postgres: PostgresResource) -> pd.DataFrame:
    shops = _counts(impressions.dropna(subset=["shop_id"]), ["day", "shop_id"])
    shops = shops.sort_values(["day", "conversions", "clicks", "impressions", "shop_id"],
                              ascending=[True, False, False, False, True])
    shops["rank"] = shops.groupby("day").cumcount() + 1
    top = shops[shops["rank"] <= 10].copy()
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT shop_id, event_timestamp, impressions_7d, conversions_7d, ctr_7d, cvr_7d "
                    "FROM gold.shop_features")
        gold = pd.DataFrame.from_records(cur.fetchall(), columns=[c.name for c in cur.description or []])
    gold["day"] = [(stamp.astimezone(UTC) - pd.Timedelta(days=1)).date() for stamp in gold.pop("event_timestamp")]
    gold["shop_id"] = gold["shop_id"].astype(float)
    return top.merge(gold, on=["day", "shop_id"], how="left")


def _expected_funnel(impressions: pd.DataFrame, contexts: pd.DataFrame) -> pd.DataFrame:
    ordered = contexts.sort_values(["event_time", "source_file", "source_line"])
    days = []
    for day, of_day in impressions.groupby("day"):
        known = ordered[ordered["event_time"] < pd.Timestamp(end_of_day(day))]
        latest = known.drop_duplicates("common_feature_index", keep="last")
        days.append(of_day.merge(latest[["common_feature_index", "user_id", "gender_id", "age_id"]],
                                 on="common_feature_index", how="left"))
    joined = pd.concat(days)
    keys = KEYS["funnel_by_segment"]
    counts = _counts(joined, keys)

    for column, chosen in (("users", joined), ("users_clicking", joined[joined["click"] == 1]),
                           ("users_converting", joined[joined["conversion"] == 1])):
        users = chosen.groupby(keys, dropna=False)["user_id"].nunique().rename(column).reset_index()
        counts = counts.merge(users, on=keys, how="left")
        counts[column] = counts[column].fillna(0)
    counts["conversions_per_impression"] = counts["conversions"] / counts["impressions"]
    return counts


def _assert_equal(got: pd.DataFrame, want: pd.DataFrame, name: str) -> None:
    want = want[list(got.columns)].sort_values(KEYS[name], na_position="first").reset_index(drop=True)
    assert len(got) == len(want), f"{name}: {len(got)} rows, expected {len(want)}"
    pd.testing.assert_frame_equal(got.astype({"day": object}), want.astype({"day": object}),
                                  check_exact=True, check_dtype=False, obj=name)


def test_reports_equal_an_independent_pandas_computation(
    analytics: ExecuteInProcessResult, spark: SparkResource, gold: PostgresResource, settings: Settings
) -> None:
    impressions, contexts = _silver(spark, settings)
    expected = {
        "ctr_cvr_by_category_position": _expected_rates(impressions),
        "top_shops_by_conversions": _expected_top_shops(impressions, gold),
        "funnel_by_segment": _expected_funnel(impressions, contexts),
    }
    assert set(impressions["day"]) == {date.fromisoformat(d) for d in DAILY.get_partition_keys()}
    for name, want in expected.items():
        _assert_equal(_table(spark, settings, name), want, name)
    # The ranking must rank something real: conversions, and the gold features found for each shop.
    top = _table(spark, settings, "top_shops_by_conversions")
    assert top["conversions"].sum() > 0 and top["ctr_7d"].notna().all()


def test_one_run_covers_every_day_and_shows_each_report(analytics: ExecuteInProcessResult) -> None:
    shown = {e.materialization.asset_key.path[-1]: _values(e.materialization.metadata)
             for e in analytics.get_asset_materialization_events()}
    assert sorted(shown) == sorted(KEYS)
    days = DAILY.get_partition_keys()
    for name, metadata in shown.items():
        assert metadata["days"] == f"{days[0]} .. {days[-1]}"
        assert metadata["row_count"] > 0
        header = str(metadata["preview"]).splitlines()[0]
        assert all(key in header for key in KEYS[name]), header


def test_cross_engine_check_passes_on_every_day(analytics: ExecuteInProcessResult) -> None:
    (evaluation,) = analytics.get_asset_check_evaluations()
    metadata = _values(evaluation.metadata)
    assert evaluation.passed, metadata
    assert metadata["mismatches"] == 0
    # Silver, six gold tables and three reports, several numbers each, for each of the days.
    assert metadata["numbers_compared"] >= 60 * len(DAILY.get_partition_keys())


def test_rerun_of_one_day_replaces_it_exactly(analytics: ExecuteInProcessResult, trino: TrinoResource,
                                             spark: SparkResource, settings: Settings) -> None:
    def snapshot() -> dict[str, pd.DataFrame]:
        return {r.name: trino.query_df(f"SELECT * FROM {r.trino_table} ORDER BY "
                                       + ", ".join(f"{k} NULLS FIRST" for k in KEYS[r.name])) for r in REPORTS}

    def commits() -> dict[str, int]:
        return {r.name: int(trino.query_df(f'SELECT count(*) AS n FROM iceberg.analytics."{r.name}$snapshots"'
                                           )["n"][0]) for r in REPORTS}

    before, committed = snapshot(), commits()
    day = DAILY.get_partition_keys()[2]
    result = _run(settings, spark, day, day)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    for name, frame in snapshot().items():
        pd.testing.assert_frame_equal(frame, before[name], check_exact=True, obj=name)
    # One commit per report: no reader ever saw the day deleted and not yet inserted again.
    assert {name: n - committed[name] for name, n in commits().items()} == dict.fromkeys(committed, 1)


def test_check_fails_when_a_report_loses_rows(analytics: ExecuteInProcessResult, trino: TrinoResource,
                                             spark: SparkResource, settings: Settings) -> None:
    day = DAILY.get_partition_keys()[1]
    check_only = AssetSelection.checks(AssetCheckKey(CHECKED_REPORT, "trino_matches_spark_and_postgres"))
    trino.query("DELETE FROM iceberg.analytics.funnel_by_segment WHERE day = ? AND gender_id IS NOT NULL",
                [date.fromisoformat(day)])
    try:
        result = _run(settings, spark, day, day, selection=check_only)
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed
        examples = str(evaluation.metadata["mismatch_examples"].value)
        assert "analytics.funnel_by_segment" in examples and "report vs silver" in examples
    finally:
        assert _run(settings, spark, day, day).success
    (evaluation,) = _run(settings, spark, day, day, selection=check_only).get_asset_check_evaluations()
    assert evaluation.passed


def test_sql_templates_take_only_dates_utc_timestamps_and_identifiers() -> None:
    assert sql_literal(date(2026, 11, 1)) == "DATE '2026-11-01'"
    assert sql_literal(datetime(2026, 11, 2, tzinfo=UTC)) == (
        "CAST('2026-11-02 00:00:00+00:00' AS TIMESTAMP WITH TIME ZONE)")
    assert sql_literal("iceberg.silver") == "iceberg.silver"
    for bad in ("x'; DROP TABLE t; --", "a b", datetime(2026, 11, 2), 42):
        with pytest.raises(ValueError):
            sql_literal(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"silver_totals.sql: placeholder \$\{silver\} has no value"):
        render(SQL_DIR / "silver_totals.sql", {"first_day": date(2026, 11, 1), "last_day": date(2026, 11, 1)})
