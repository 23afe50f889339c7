"""Materialization into Redis and the online lookup (Python API and CLI) serve the latest gold values."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid

import pandas as pd
import pytest
from dagster import AssetSelection, ExecuteInProcessResult

from taobao_assets.assets.serving import ONLINE_STORE_KEY
from taobao_assets.feast_repo import FeastRepo
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.online_layout import redis_key
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.retrieval import OnlineFeatures
from taobao_assets.settings import REPO_ROOT, Settings
from taobao_assets_tests.test_serving.conftest import COLLIDING_PAIRS, DAYS, latest, run_serving, serving_env


def _keys(repo: FeastRepo, view: str) -> list[str]:
    return [c.name for c in repo.view(view).entity_columns]


def _expected(gold: dict[str, pd.DataFrame], repo: FeastRepo, view: str, entity: dict[str, int]) -> dict:
    rows = latest(gold[view], _keys(repo, view))
    for key, value in entity.items():
        rows = rows[rows[key] == value]
    (row,) = rows.to_dict("records")
    return {f"{view}__{f.name}": row[f.name] for f in repo.view(view).features}


def test_online_store_asset_materializes_each_day_and_its_check_passes(
    materialized: dict[str, ExecuteInProcessResult], gold: dict[str, pd.DataFrame]
) -> None:
    for day, result in materialized.items():
        assert result.success, day
        (evaluation,) = result.get_asset_check_evaluations()
        assert evaluation.passed, evaluation.metadata
        assert evaluation.metadata["entities_compared"].value > 0
        (materialization,) = result.asset_materializations_for_node("serving__online_store")
        stamp = end_of_day(day)
        assert materialization.metadata["rows_materialized"].value == sum(
            int((frame[TIMESTAMP_FIELD] == stamp).sum()) for name, frame in gold.items())


@pytest.mark.parametrize("view", ["user_features", "item_features", "category_features", "shop_features",
                                  "brand_features", "user_category_features"])
def test_online_values_are_each_entitys_latest_gold_row(
    view: str, materialized: dict, applied: FeastResource, generated: FeastRepo, gold: dict[str, pd.DataFrame]
) -> None:
    """Days were materialized out of order (2, 3, 1): day 1 must not replace what days 2 and 3 wrote."""
    keys = _keys(generated, view)
    expected = latest(gold[view], keys)
    served = applied.store().get_online_features(
        features=[f"{view}:{f.name}" for f in generated.view(view).features],
        entity_rows=expected[keys].to_dict("records"), full_feature_names=True,
    ).to_df()
    names = [f"{view}__{f.name}" for f in generated.view(view).features]
    pd.testing.assert_frame_equal(
        served[names].reset_index(drop=True),
        expected[[f.name for f in generated.view(view).features]].set_axis(names, axis=1).reset_index(drop=True),
        check_dtype=False,
    )
    stale = expected[TIMESTAMP_FIELD] < end_of_day(max(materialized))
    assert stale.any(), "some entities should have their newest row on an earlier day"


def test_rerunning_a_day_after_gold_was_recomputed_replaces_the_served_values(
    materialized: dict, applied: FeastResource, serving_settings: Settings, gold: dict[str, pd.DataFrame]
) -> None:
    """Feast alone skips a write whose timestamp equals the stored one; the asset's engine writes it."""
    day = DAYS[-1]
    stamp = end_of_day(day)
    item = int(gold["item_features"].query(f"{TIMESTAMP_FIELD} == @stamp")["item_id"].iloc[0])

    def lookup() -> int:
        return applied.store().get_online_features(
            features=["item_features:clicks_1d"], entity_rows=[{"item_id": item}]).to_dict()["clicks_1d"][0]

    postgres = PostgresResource.from_settings(serving_settings)
    update = f"UPDATE gold.item_features SET clicks_1d = %s WHERE item_id = %s AND {TIMESTAMP_FIELD} = %s"
    original = lookup()
    try:
        with postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(update, (original + 1_000_000, item, stamp))
        result = run_serving(serving_settings, AssetSelection.assets(ONLINE_STORE_KEY), day)
        assert result.success
        assert lookup() == original + 1_000_000
    finally:
        with postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(update, (original, item, stamp))
        assert run_serving(serving_settings, AssetSelection.assets(ONLINE_STORE_KEY), day).success
    assert lookup() == original


def test_retrieval_api_returns_the_service_for_one_impression(
    materialized: dict, applied: FeastResource, generated: FeastRepo, gold: dict[str, pd.DataFrame]
) -> None:
    user, category = COLLIDING_PAIRS[0]
    item = int(latest(gold["item_features"], ["item_id"])["item_id"].iloc[0])
    values = OnlineFeatures.of(applied).lookup(user_id=user, item_id=item, category_id=category)
    expected = {
        **_expected(gold, generated, "user_features", {"user_id": user}),
        **_expected(gold, generated, "item_features", {"item_id": item}),
        **_expected(gold, generated, "category_features", {"category_id": category}),
        **_expected(gold, generated, "user_category_features", {"user_id": user, "category_id": category}),
    }
    assert {k: v for k, v in values.items() if k in expected} == pytest.approx(expected)
    assert set(values) == set(expected) | {"user_id", "item_id", "category_id"}


def test_retrieval_of_an_unknown_entity_gives_nulls_not_errors(materialized: dict, applied: FeastResource) -> None:
    values = OnlineFeatures.of(applied).lookup(user_id=10**12, item_id=10**12, category_id=10**12)
    assert all(v is None for k, v in values.items() if "__" in k)


def test_retrieval_names_the_join_key_a_service_is_missing(applied: FeastResource) -> None:
    with pytest.raises(ValueError, match=r"needs category_id \(views category_features, user_category_features\)"):
        OnlineFeatures.of(applied).lookup(user_id=1, item_id=2)


def test_retrieval_cli_prints_the_service_as_json(
    materialized: dict, applied: FeastResource, serving_settings: Settings
) -> None:
    user, category = COLLIDING_PAIRS[1]
    out = subprocess.run(
        [sys.executable, "-m", "taobao_assets.retrieval", "online", "--user", str(user), "--item", "3",
         "--category", str(category)],
        cwd=REPO_ROOT, env=serving_env(serving_settings), capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed == OnlineFeatures.of(applied).lookup(user_id=user, item_id=3, category_id=category)


def test_clearing_the_online_store_deletes_the_projects_rows_of_those_keys_and_nothing_else(
    settings: Settings, redis_service: object
) -> None:
    """A new data set clears the project's online rows (``demo.forget_previous_data_set``); another
    project's rows, and rows of other join keys, stay. One set of keys has a name 42 bytes long, which
    packs as ``*`` in the keys' header: unescaped in the ``SCAN`` pattern it would match the others."""
    feast = FeastResource.from_settings(dataclasses.replace(settings, feast_project=f"clear_{uuid.uuid4().hex[:8]}"))
    star, plus = ["k" * 42], ["k" * 43]
    rows = {(project, tuple(keys)): [redis_key(project, keys, [i]) for i in range(1_500)]
            for project in (feast.project, f"{feast.project}_other") for keys in (star, plus, ["user_id"])}
    client = feast.redis.client()
    try:
        for keys in rows.values():
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hset(key, "f", "1")
                pipe.execute()
        feast.clear_online([star, ["user_id"], ["user_id"]])
        left = {where: sum(int(client.exists(k)) for k in keys) for where, keys in rows.items()}
        assert left == {(project, tuple(keys)): 0 if project == feast.project and keys != tuple(plus) else 1_500
                        for project, keys in rows}
    finally:
        client.delete(*(k for keys in rows.values() for k in keys))
