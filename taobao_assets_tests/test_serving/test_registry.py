"""Applying the generated repository: by the asset, by ``feast apply``, and the drift check."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dagster import AssetCheckKey, AssetSelection

from taobao_assets.assets.serving import REGISTRY_KEY
from taobao_assets.feast_repo import FeastRepo, generate
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.realtime_tables import REALTIME_TABLES
from taobao_assets.resources.feast import FeastResource
from taobao_assets.settings import Settings
from taobao_assets_tests.test_serving.conftest import feast_cli, run_serving

REGISTRY_CHECK = AssetCheckKey(REGISTRY_KEY, "registry_matches_metadata")


def test_registry_asset_applies_the_generated_repo_and_its_check_passes(
    serving_settings: Settings, clean_registry: FeastResource, generated: FeastRepo
) -> None:
    # Without the services (deleting views would also delete their online data, which other tests read).
    clean_registry.apply(generated.contents()._replace(feature_services=[]))
    result = run_serving(serving_settings, AssetSelection.assets(REGISTRY_KEY))
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.asset_check_key == REGISTRY_CHECK and evaluation.passed
    assert clean_registry.drift(generated.contents()) == []
    store = clean_registry.store()
    assert {v.name for v in store.list_feature_views()} == {v.name for v in generated.feature_views}
    assert [p.name for p in store.get_feature_service("ctr_model_v1").feature_view_projections] == [
        "user_features", "item_features", "category_features", "user_category_features"]


def test_drift_check_fails_when_the_registry_was_applied_from_other_metadata(
    serving_settings: Settings, clean_registry: FeastResource
) -> None:
    """As after a deploy that changed a gold contract, before the registry asset ran again."""
    item = next(t for t in GOLD_TABLES if t.name == "item_features")
    older = GoldTable(item.name, item.keys, item.features[:-1], item.description, item.ttl_seconds)
    contracts = [older if t.name == item.name else t for t in (*GOLD_TABLES, *REALTIME_TABLES)]
    clean_registry.apply(generate(contracts).contents())

    result = run_serving(serving_settings, AssetSelection.checks(REGISTRY_CHECK))
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    drift = evaluation.metadata["drift"].value
    assert "feature_views item_features: definition differs" in drift
    assert "feature_services ctr_model_v1: definition differs" in drift

    # Re-applying from the current metadata is what the registry asset is for.
    result = run_serving(serving_settings, AssetSelection.assets(REGISTRY_KEY))
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())


def test_a_view_no_longer_generated_is_deleted_from_the_registry(
    clean_registry: FeastResource, generated: FeastRepo
) -> None:
    # A view no feature service uses, whose Redis data (none) no other test reads: deleting a view
    # also deletes its online data.
    clean_registry.apply(generated.contents())
    without = generated.contents()._replace(
        feature_views=[v for v in generated.feature_views if v.name != "item_realtime"],
        feature_services=[s for s in generated.feature_services if "item_realtime" not in
                          [p.name for p in s.feature_view_projections]])
    changes = [str(c) for c in clean_registry.apply(without)]
    assert "feature_views item_realtime: in the registry but no longer generated" in changes
    assert "item_realtime" not in {v.name for v in clean_registry.store().list_feature_views()}


def test_feast_cli_apply_registers_exactly_the_generated_objects(
    feature_repo: Path, serving_settings: Settings, clean_registry: FeastResource, generated: FeastRepo
) -> None:
    clean_registry.apply(generated.contents()._replace(feature_services=[]))
    assert clean_registry.drift(generated.contents()) != []
    cli = feast_cli(feature_repo, serving_settings, "apply", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = cli.communicate(timeout=300)
    assert cli.returncode == 0, output
    assert clean_registry.drift(generated.contents()) == []
