"""The Feast repository is generated from the assets' metadata, and only from it."""

from __future__ import annotations

import importlib.util
import json
from datetime import timedelta

import pytest
from dagster import AssetSpec, Definitions
from feast import FeatureView, PushSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

from taobao_assets import gold_tables
from taobao_assets.assets.gold import gold_features
from taobao_assets.assets.serving import generated_repo, realtime_assets
from taobao_assets.definitions import defs
from taobao_assets.feast_repo import FEATURE_REPO, FEATURE_SERVICES, FeastRepo, generate, repo_from_definitions
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.realtime_tables import REALTIME_TABLES

FEAST_TYPE_NAMES = {"int64": "Int64", "float64": "Float64", "string": "String"}


@pytest.fixture(scope="module")
def repo() -> FeastRepo:
    return generated_repo()


def test_the_registry_depends_on_every_contract_of_the_code_location(repo: FeastRepo) -> None:
    """An asset with a table contract that the registry asset does not depend on would go unserved."""
    everything = repo_from_definitions(defs)
    assert [type(o).__name__ + ":" + o.name for o in everything.objects()] == [
        type(o).__name__ + ":" + o.name for o in repo.objects()]
    assert everything.objects() == repo.objects()


def test_every_key_column_becomes_one_entity_named_after_it(repo: FeastRepo) -> None:
    keys = {k.name: k for t in [*GOLD_TABLES, *REALTIME_TABLES] for k in t.keys}
    assert {e.name: e.join_key for e in repo.entities} == {k.removesuffix("_id"): k for k in keys}
    for entity in repo.entities:
        assert entity.description == keys[entity.join_key].description
        assert entity.value_type.name == "INT64"


@pytest.mark.parametrize("table", [*GOLD_TABLES, *REALTIME_TABLES], ids=lambda t: t.name)
def test_each_view_carries_the_contract_of_its_asset(repo: FeastRepo, table: GoldTable) -> None:
    view = repo.view(table.name)
    assert [(f.name, str(f.dtype), f.description) for f in view.features] == [
        (c.name, FEAST_TYPE_NAMES[c.dtype], c.description) for c in table.features]
    assert [(f.name, str(f.dtype)) for f in view.entity_columns] == [
        (c.name, FEAST_TYPE_NAMES[c.dtype]) for c in table.keys]
    assert view.entities == [k.removesuffix("_id") for k in table.key_names]
    assert view.ttl == timedelta(seconds=table.ttl_seconds)
    assert view.description == table.description
    assert view.tags["table"] == table.qualified_name
    layer = "streaming" if table in REALTIME_TABLES else "gold"
    assert view.tags["dagster_asset_key"] == f"{layer}/{table.name}"
    assert isinstance(view.batch_source, PostgreSQLSource)
    assert view.batch_source.get_table_query_string() == table.qualified_name
    assert view.batch_source.timestamp_field == "event_timestamp"


def test_only_realtime_views_are_fed_by_push_sources(repo: FeastRepo) -> None:
    pushed = {v.name: v.stream_source for v in repo.feature_views if v.stream_source is not None}
    assert set(pushed) == {t.name for t in REALTIME_TABLES}
    assert all(isinstance(source, PushSource) for source in pushed.values())
    assert {p.name for p in repo.push_sources} == {f"{t.name}_push" for t in REALTIME_TABLES}


def test_feature_services_list_the_declared_views(repo: FeastRepo) -> None:
    for spec in FEATURE_SERVICES:
        service = repo.service(spec.name)
        assert [p.name for p in service.feature_view_projections] == list(spec.views)
        # Every feature of every view: a service is a set of whole views.
        assert all(len(p.features) == len(repo.view(p.name).features) for p in service.feature_view_projections)


def test_a_new_column_in_the_metadata_appears_in_its_view() -> None:
    user = next(t for t in GOLD_TABLES if t.name == "user_features")
    extra = gold_tables.Column("sessions_1d", "int64", "Sessions of the user in the day.")
    grown = GoldTable(user.name, user.keys, (*user.features, extra), user.description, user.ttl_seconds)
    specs = [AssetSpec(s.key, metadata=grown.metadata()) if s.key.path[-1] == user.name else s
             for s in gold_features.specs]
    view = generate([*specs, *realtime_assets]).view(user.name)
    assert view.features[-1].name == "sessions_1d" and str(view.features[-1].dtype) == "Int64"


def test_one_key_declared_two_ways_is_refused() -> None:
    user = next(t for t in GOLD_TABLES if t.name == "user_features")
    metadata = json.loads(user.metadata()[gold_tables.METADATA_KEY])
    metadata["keys"][0]["description"] = "Another user id."
    clash = AssetSpec(["gold", "other_user_features"],
                      metadata={gold_tables.METADATA_KEY: json.dumps({**metadata, "name": "other_user_features"})})
    with pytest.raises(ValueError, match=r"user_id .* one entity needs one declaration"):
        generate([*gold_features.specs, *realtime_assets, clash])


def test_nothing_is_generated_without_contracts() -> None:
    with pytest.raises(ValueError, match="no asset carries"):
        repo_from_definitions(Definitions(assets=[AssetSpec("plain")]))


def test_feature_repo_module_publishes_the_generated_objects(repo: FeastRepo) -> None:
    spec = importlib.util.spec_from_file_location("feature_repo_under_test", FEATURE_REPO / "repo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    published = {name: getattr(module, name) for name in dir(module) if name.split("_")[0] in
                 ("entity", "source", "push", "view", "service")}
    assert {type(o).__name__ + ":" + o.name for o in published.values()} == {
        type(o).__name__ + ":" + o.name for o in repo.objects()}
    assert published["view_user_features"] == repo.view("user_features")
    assert isinstance(published["view_user_features"], FeatureView)
