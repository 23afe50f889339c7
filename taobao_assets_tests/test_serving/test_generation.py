"""The Feast repository is generated from the table contracts, and only from them; repo.py is that, committed."""

from __future__ import annotations

import ast
import json
import runpy
from datetime import timedelta

import pytest
from feast import FeatureView, PushSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

from taobao_assets import gold_tables
from taobao_assets.assets.serving import CONTRACT_KEYS
from taobao_assets.definitions import build_definitions
from taobao_assets.feast_repo import FEATURE_SERVICES, REPO_MODULE, FeastRepo, generate, generated_repo
from taobao_assets.feast_source import render
from taobao_assets.feature_tables import Column, FeatureTable
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.realtime_tables import REALTIME_TABLES, RealtimeTable
from taobao_assets.settings import Settings

FEAST_TYPE_NAMES = {"int64": "Int64", "float64": "Float64", "string": "String"}
CONTRACTS = (*GOLD_TABLES, *REALTIME_TABLES)


@pytest.fixture(scope="module")
def repo() -> FeastRepo:
    return generated_repo()


def test_the_assets_carry_exactly_the_contracts_and_the_registry_depends_on_them(settings: Settings) -> None:
    """What Dagster shows (asset metadata) is what Feast is generated from (the contracts)."""
    defs = build_definitions(settings)
    carried: dict[str, FeatureTable] = {}
    for spec in defs.resolve_all_asset_specs():
        for kind in (GoldTable, RealtimeTable):
            if kind.metadata_key in spec.metadata:
                carried[spec.key.to_user_string()] = kind.from_metadata(spec.metadata)
    assert carried == {f"{t.schema}/{t.name}": t for t in CONTRACTS}
    registry = next(s for s in defs.resolve_all_asset_specs() if s.key.path[-1] == "feast_registry")
    assert {d.asset_key for d in registry.deps} == set(CONTRACT_KEYS)
    assert {k.to_user_string() for k in CONTRACT_KEYS} == set(carried)


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


def test_a_new_column_in_a_contract_appears_in_its_view() -> None:
    user = next(t for t in GOLD_TABLES if t.name == "user_features")
    extra = Column("sessions_1d", "int64", "Sessions of the user in the day.")
    grown = GoldTable(user.name, user.keys, (*user.features, extra), user.description, user.ttl_seconds)
    view = generate([grown if t is user else t for t in CONTRACTS]).view(user.name)
    assert view.features[-1].name == "sessions_1d" and str(view.features[-1].dtype) == "Int64"


def test_one_key_declared_two_ways_is_refused() -> None:
    user = next(t for t in GOLD_TABLES if t.name == "user_features")
    metadata = json.loads(user.metadata()[gold_tables.METADATA_KEY])
    metadata["keys"][0]["description"] = "Another user id."
    clash = GoldTable.from_metadata({gold_tables.METADATA_KEY: json.dumps({**metadata, "name": "other_user_features"})})
    with pytest.raises(ValueError, match=r"user_id .* one entity needs one declaration"):
        generate([*CONTRACTS, clash])


def test_nothing_is_generated_without_contracts() -> None:
    with pytest.raises(ValueError, match="no table contract"):
        generate([])


def test_the_committed_repo_module_is_what_the_contracts_generate(repo: FeastRepo) -> None:
    """If this fails, run ``python -m taobao_assets.feast_repo generate`` and commit feature_repo/repo.py."""
    assert REPO_MODULE.read_text() == render(repo)


def test_the_repo_module_declares_the_generated_objects_with_feast_alone(repo: FeastRepo) -> None:
    """Python itself reads the file back: every object equals the generated one, and only Feast is imported."""
    tree = ast.parse(REPO_MODULE.read_text())
    imported = {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported == {"datetime", "feast"}
    module = runpy.run_path(str(REPO_MODULE))
    declared = {(type(o).__name__, o.name): o for o in module.values() if hasattr(o, "to_proto") and hasattr(o, "name")}
    assert declared == {(type(o).__name__, o.name): o for o in repo.objects()}
    assert isinstance(declared[("FeatureView", "user_features")], FeatureView)
