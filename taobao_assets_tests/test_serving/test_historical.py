"""Point-in-time retrieval of the training feature service, checked against an independent join.

The reference is pandas ``merge_asof`` per view (latest row at or before the entity's time, at
most the TTL older), written here without Feast; the entity times probe the edges: just before a
day's rows become valid, exactly when they do, inside the day, exactly at the TTL, and just past it.
The platform's offline store (:mod:`taobao_assets.offline_store`) must also return exactly what
Feast's stock Postgres store returns, and take pushed rows.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from feast.data_source import PushMode

from taobao_assets.assets.serving import TRAINING_SERVICE, entity_frame, join_keys
from taobao_assets.feast_repo import FeastRepo
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.io_managers.postgres import create_table_sql
from taobao_assets.offline_store import IndexedRetrievalJob
from taobao_assets.partitions import end_of_day
from taobao_assets.quality.leakage import ViewToAudit, expected_values
from taobao_assets.realtime_tables import REALTIME_TABLES
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.settings import Settings
from taobao_assets_tests.test_serving.conftest import COLLIDING_PAIRS, DAYS, KEY_IDS

UTC_MICROS = "datetime64[us, UTC]"
EDGES = [-timedelta(microseconds=1), timedelta(0), timedelta(hours=7, minutes=13), timedelta(days=1),
         timedelta(days=1, microseconds=1)]


@pytest.fixture(scope="module")
def entity_rows(generated: FeastRepo) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    keys = join_keys(generated, TRAINING_SERVICE)
    rows = []
    for day in DAYS:
        for edge in EDGES:
            when = end_of_day(day) + edge
            for _ in range(40):
                rows.append({**{k: int(rng.choice(KEY_IDS[k])) for k in keys}, TIMESTAMP_FIELD: when})
            # The pairs whose keys concatenate to the same text, at the same instant.
            for user, category in COLLIDING_PAIRS:
                rows.append({"user_id": user, "item_id": 1, "category_id": category, TIMESTAMP_FIELD: when})
    rows.append({"user_id": 10**12, "item_id": 10**12, "category_id": 10**12, TIMESTAMP_FIELD: end_of_day(DAYS[1])})
    # An impression whose item fields are unknown: no item or category features, the user's still.
    rows.append({"user_id": 1, "item_id": None, "category_id": None, TIMESTAMP_FIELD: end_of_day(DAYS[1])})
    frame = pd.DataFrame(rows)
    frame.insert(0, "row", range(len(frame)))
    return entity_frame(frame, keys)


def merge_asof_reference(rows: pd.DataFrame, gold: dict[str, pd.DataFrame], repo: FeastRepo) -> pd.DataFrame:
    """The expected training frame, built with pandas alone."""
    expected = rows.astype({TIMESTAMP_FIELD: UTC_MICROS}).sort_values(TIMESTAMP_FIELD)
    for projection in repo.service(TRAINING_SERVICE).feature_view_projections:
        view = repo.view(projection.name)
        keys = [c.name for c in view.entity_columns]
        right = gold[view.name].copy()
        right[TIMESTAMP_FIELD] = pd.to_datetime(right[TIMESTAMP_FIELD], utc=True).astype(UTC_MICROS)
        right = right.rename(columns={f.name: f"{view.name}__{f.name}" for f in view.features}).sort_values(
            TIMESTAMP_FIELD)
        left = expected.copy()
        for key in keys:
            left[key] = left[key].fillna(-1).astype("int64")  # no gold row has key -1: a null key matches none
            right[key] = right[key].astype("int64")
        expected = pd.merge_asof(left, right, on=TIMESTAMP_FIELD, by=keys, direction="backward",
                                 allow_exact_matches=True, tolerance=pd.Timedelta(view.ttl))
    return expected.sort_values("row", ignore_index=True)


@pytest.fixture(scope="module")
def retrieved(applied: FeastResource, entity_rows: pd.DataFrame) -> pd.DataFrame:
    store = applied.store()
    return store.get_historical_features(
        entity_df=entity_rows, features=store.get_feature_service(TRAINING_SERVICE), full_feature_names=True,
    ).to_df().sort_values("row", ignore_index=True)


def test_historical_features_equal_an_independent_merge_asof(
    retrieved: pd.DataFrame, entity_rows: pd.DataFrame, gold: dict[str, pd.DataFrame], generated: FeastRepo
) -> None:
    expected = merge_asof_reference(entity_rows, gold, generated)
    assert len(retrieved) == len(entity_rows), "one training row per entity row, no duplicates"
    features = [c for c in expected.columns if "__" in c]
    assert set(features) <= set(retrieved.columns)
    pd.testing.assert_frame_equal(retrieved[["row", *features]], expected[["row", *features]], check_dtype=False)


def test_features_are_never_newer_than_the_impression(retrieved: pd.DataFrame, gold: dict[str, pd.DataFrame]) -> None:
    """Rows just before a day's end get the previous day's values (or none), never that day's."""
    before = retrieved[retrieved[TIMESTAMP_FIELD].dt.microsecond == 999_999]
    assert len(before) > 0
    users = gold["user_features"].set_index(["user_id", TIMESTAMP_FIELD])["clicks_1d"]
    for row in before.itertuples():
        own_day = (row.user_id, pd.Timestamp(row.event_timestamp).ceil("D").to_pydatetime())
        if own_day in users.index and not pd.isna(row.user_features__clicks_1d):
            previous = (row.user_id, own_day[1] - timedelta(days=1))
            assert row.user_features__clicks_1d == users.get(previous), row


def test_rows_whose_keys_concatenate_alike_get_their_own_features(
    retrieved: pd.DataFrame, gold: dict[str, pd.DataFrame]
) -> None:
    """(user 1, category 23) and (user 12, category 3) read "123" alike: Feast 0.67's bug, fixed here."""
    pairs = gold["user_category_features"].set_index(["user_id", "category_id", TIMESTAMP_FIELD])
    stamps = {pd.Timestamp(end_of_day(d)) for d in DAYS}
    at_stamp = retrieved[[t in stamps for t in pd.to_datetime(retrieved[TIMESTAMP_FIELD], utc=True)]]
    for user, category in COLLIDING_PAIRS:
        mine = at_stamp[(at_stamp.user_id == user) & (at_stamp.category_id == category)]
        assert len(mine) > 0
        for row in mine.itertuples():
            stamp = pd.Timestamp(row.event_timestamp, tz="UTC").to_pydatetime()
            assert row.user_category_features__impressions_1d == pairs.at[(user, category, stamp), "impressions_1d"]


def _latest_at_or_before(rows: pd.DataFrame, table: pd.DataFrame, keys: list[str], features: list[str],
                         ttl: timedelta) -> pd.DataFrame:
    """Per row of ``rows``, by a search of every row of ``table`` with its keys: the features of the
    latest one stamped at or before the row's time, at most ``ttl`` older (zero: no limit)."""
    stamps = pd.to_datetime(table[TIMESTAMP_FIELD], utc=True)
    candidates: dict[tuple[int, ...], list[int]] = {}
    for j, key in enumerate(zip(*(table[k] for k in keys), strict=True)):
        candidates.setdefault(tuple(int(part) for part in key), []).append(j)
    found = []
    for _, row in rows.iterrows():
        when = pd.Timestamp(row[TIMESTAMP_FIELD]).tz_convert("UTC")
        key = tuple(row[k] for k in keys)
        valid = [] if any(pd.isna(part) for part in key) else [
            j for j in candidates.get(tuple(int(part) for part in key), [])
            if stamps[j] <= when and (not ttl or when - stamps[j] <= ttl)]
        latest = max(valid, key=lambda j: stamps[j], default=None)
        found.append({f: None if latest is None else table.at[latest, f] for f in features})
    return pd.DataFrame(found, columns=features)


def test_the_leakage_audits_expected_values_equal_a_search_of_every_gold_row(
    serving_settings: Settings, entity_rows: pd.DataFrame, gold: dict[str, pd.DataFrame], generated: FeastRepo
) -> None:
    """What the audit holds a training set to is itself right, for every view of the service."""
    rows = entity_rows.sort_values("row", ignore_index=True)
    views = [generated.view(p.name) for p in generated.service(TRAINING_SERVICE).feature_view_projections]
    found = expected_values(PostgresResource.from_settings(serving_settings), rows,
                            [ViewToAudit.of(view, [c.name for c in view.entity_columns]) for view in views])
    for view in views:
        names = [f.name for f in view.features]
        expected = _latest_at_or_before(rows, gold[view.name], [c.name for c in view.entity_columns], names,
                                        view.ttl or timedelta(0))
        assert expected.notna().any().all() and expected.isna().any().all(), "the rows probe both outcomes"
        pd.testing.assert_frame_equal(found[view.name][names].astype(float), expected.astype(float))


@pytest.mark.parametrize("readers", [{}, {"readers": 3, "reader_min_rows": 100}], ids=["one part", "three parts"])
def test_the_store_returns_the_stock_stores_training_set_cell_for_cell(
    applied: FeastResource, entity_rows: pd.DataFrame, readers: dict[str, int]
) -> None:
    """Same columns, types and values as Feast's own Postgres store; ours keeps the entity rows' order,
    also when the rows are read in parts over several connections."""
    ours = applied.store_with(offline_store=readers)
    job = ours.get_historical_features(entity_df=entity_rows, features=ours.get_feature_service(TRAINING_SERVICE),
                                       full_feature_names=True)
    assert isinstance(job, IndexedRetrievalJob), "the training service is read with the index probes"
    found = job.to_arrow()
    stock = applied.store_with(offline_store={"type": "postgres"})
    expected = stock.get_historical_features(
        entity_df=entity_rows, features=stock.get_feature_service(TRAINING_SERVICE), full_feature_names=True,
    ).to_arrow()
    expected = expected.take(pc.sort_indices(expected.column("row")))
    assert found.schema == expected.schema
    assert found.column("row").to_pylist() == list(range(len(entity_rows)))
    for name in expected.column_names:
        assert found.column(name).equals(expected.column(name)), name


def test_pushed_rows_reach_point_in_time_retrieval(applied: FeastResource, serving_settings: Settings) -> None:
    """A push to the offline store lands in the view's table; a push of the same keys and time replaces it."""
    table = next(t for t in REALTIME_TABLES if t.key_names == ["user_id"])
    with PostgresResource.from_settings(serving_settings).connect() as conn, conn.cursor() as cur:
        cur.execute(create_table_sql(table), (table.description,))
        cur.execute(f"TRUNCATE {table.qualified_name}")
    day = pd.Timestamp(end_of_day(DAYS[0]))
    t1, t2 = day + pd.Timedelta(hours=3), day + pd.Timedelta(hours=5)

    def pushed(rows: list[tuple[int, pd.Timestamp, int]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=["user_id", TIMESTAMP_FIELD, "impressions_today"])
        for column in table.features:
            if column.name != "impressions_today":
                frame[column.name] = frame["impressions_today"] * (0.5 if column.dtype == "float64" else 2)
        return frame

    store = applied.store()
    store.push(f"{table.name}_push", pushed([(1, t1, 10), (2, t1, 20)]), to=PushMode.OFFLINE)
    store.push(f"{table.name}_push", pushed([(1, t1, 11), (1, t2, 30)]), to=PushMode.OFFLINE)
    probes = pd.DataFrame({"user_id": [1, 1, 1, 2, 3, 1], TIMESTAMP_FIELD: [
        t1 - pd.Timedelta(microseconds=1), t1, t2, t2, t2, t2 + pd.Timedelta(days=2)]})
    found = store.get_historical_features(
        entity_df=probes, features=[f"{table.name}:impressions_today", f"{table.name}:ctr_today"],
        full_feature_names=True).to_df()
    # Before the first push, the replaced value, the newer row, another user, no row, older than the TTL.
    nan = float("nan")
    np.testing.assert_array_equal(found[f"{table.name}__impressions_today"], [nan, 11, 30, 20, nan, nan])
    np.testing.assert_array_equal(found[f"{table.name}__ctr_today"], [nan, 5.5, 15.0, 10.0, nan, nan])
    with PostgresResource.from_settings(serving_settings).connect() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT user_id, {TIMESTAMP_FIELD}, impressions_today FROM {table.qualified_name} ORDER BY 1, 2")
        stored = cur.fetchall()
    assert stored == [(1, t1.to_pydatetime(), 11), (1, t2.to_pydatetime(), 30), (2, t1.to_pydatetime(), 20)]
