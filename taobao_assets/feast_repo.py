"""Generates the Feast repository (entities, sources, views, services) from the table contracts.

The gold tables (:mod:`taobao_assets.gold_tables`) and the real-time tables
(:mod:`taobao_assets.realtime_tables`) are declared once, as :class:`FeatureTable` contracts;
the gold and streaming assets carry them as metadata (a test holds the two equal). :func:`generate`
turns the contracts into Feast objects, so nothing here names a column, a type or a TTL. It makes:

- one entity per key column: ``user_id`` is entity ``user`` (join key ``user_id``, INT64);
- per gold table, a :class:`PostgreSQLSource` on ``gold.<table>`` (``event_timestamp``) and a
  feature view with the contract's columns as Feast types, TTL, description and tags that name the
  source asset;
- per real-time table, a push source (batch source ``streaming.<table>``) and a feature view the
  streaming run pushes to;
- the feature services of :data:`FEATURE_SERVICES`, the only hand-written part: which views a
  model consumes.

The objects are also written out as Python declarations, ``feature_repo/repo.py``, the module
``feast apply`` reads: a reader sees every entity, source, view and service as Feast's templates
declare them, and a reviewer sees a contract change as a diff of that file. It is committed, and
a test fails when it is not what the contracts generate now. The ``feast_registry`` asset applies
the very same objects (:func:`generated_repo`).

``python -m taobao_assets.feast_repo generate`` rewrites ``feature_repo/repo.py``;
``python -m taobao_assets.feast_repo write-config`` writes ``feature_repo/feature_store.yaml``
from the settings (it holds the Postgres and Redis passwords, so it is generated, never committed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from dagster import AssetKey
from feast import Entity, FeatureService, FeatureView, Field, PushSource, ValueType
from feast.feature_view import DUMMY_ENTITY
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.repo_contents import RepoContents
from feast.types import FeastType, Float64, Int64, String

from taobao_assets.atomic_file import write_private
from taobao_assets.feast_source import render
from taobao_assets.feature_tables import TIMESTAMP_FIELD, Column, FeatureTable
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.realtime_tables import REALTIME_TABLES, RealtimeTable
from taobao_assets.resources.feast import FeastResource
from taobao_assets.settings import REPO_ROOT, get_settings

FEATURE_REPO = REPO_ROOT / "feature_repo"
REPO_MODULE = FEATURE_REPO / "repo.py"
FEAST_TYPES: dict[str, FeastType] = {"int64": Int64, "float64": Float64, "string": String}
ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
VALUE_TYPES = {"int64": ValueType.INT64, "float64": ValueType.DOUBLE, "string": ValueType.STRING}
#: Tags every generated object carries, so the registry says where it came from.
GENERATED_BY = {"generated_by": "taobao_assets.feast_repo"}
ASSET_TAG = "dagster_asset_key"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    views: tuple[str, ...]
    description: str


#: What each model consumes. ``ctr_model_v1`` is what the training set is built from and the online
#: lookup serves; the ``_realtime`` variant adds the pushed counters, online only until the
#: streaming run also logs them offline (training on all-null columns would teach the model nothing).
FEATURE_SERVICES = (
    ServiceSpec("ctr_model_v1",
                ("user_features", "item_features", "category_features", "user_category_features"),
                "CTR model v1: user, item, category and user x category gold features of the day before."),
    ServiceSpec("ctr_model_v1_realtime",
                ("user_features", "item_features", "category_features", "user_category_features",
                 "user_realtime", "item_realtime", "user_category_realtime"),
                "CTR model v1 plus today's and last hour's counters of the user, the item and the user in "
                "the item's category (online)."),
)


@dataclass(frozen=True)
class SourceTable:
    """A feature table contract, with the asset that carries it (``<schema>/<table>``)."""

    table: FeatureTable

    @property
    def asset_key(self) -> AssetKey:
        return self.table.asset_key

    @property
    def pushed(self) -> bool:
        return isinstance(self.table, RealtimeTable)


def entity_name(key: Column) -> str:
    return key.name.removesuffix("_id")


@dataclass(frozen=True)
class FeastRepo:
    """The generated objects, in the order a reader of the registry expects them, and their tables."""

    tables: tuple[SourceTable, ...]
    entities: tuple[Entity, ...]
    batch_sources: tuple[PostgreSQLSource, ...]
    push_sources: tuple[PushSource, ...]
    feature_views: tuple[FeatureView, ...]
    feature_services: tuple[FeatureService, ...]

    def objects(self) -> list[Any]:
        return [*self.entities, *self.batch_sources, *self.push_sources, *self.feature_views,
                *self.feature_services]

    def contents(self) -> RepoContents:
        """What ``feast apply`` would parse from ``feature_repo/`` (it always adds the dummy entity)."""
        return RepoContents(
            projects=[], data_sources=[*self.batch_sources, *self.push_sources],
            feature_views=list(self.feature_views), on_demand_feature_views=[], stream_feature_views=[],
            label_views=[], entities=[*self.entities, DUMMY_ENTITY],
            feature_services=list(self.feature_services), permissions=[],
        )

    def view(self, name: str) -> FeatureView:
        (view,) = [v for v in self.feature_views if v.name == name]
        return view

    def service(self, name: str) -> FeatureService:
        (service,) = [s for s in self.feature_services if s.name == name]
        return service

    def served_types(self, service: str) -> dict[str, pa.DataType]:
        """The Arrow type of each column a feature service adds to a training set (``<view>__<feature>``,
        Feast's full names), as its view declares it."""
        arrow = {FEAST_TYPES[name]: arrow_type for name, arrow_type in ARROW_TYPES.items()}
        return {f"{p.name}__{f.name}": arrow[f.dtype]
                for p in self.service(service).feature_view_projections for f in p.features}

    def feature_refs(self, service: str) -> list[str]:
        """The service's features as ``view:feature`` references (a request may name them instead)."""
        return [f"{p.name_to_use()}:{f.name}" for p in self.service(service).feature_view_projections
                for f in p.features]


def _entities(tables: Sequence[SourceTable]) -> dict[str, Entity]:
    keys: dict[str, Column] = {}
    for source in tables:
        for key in source.table.keys:
            if keys.setdefault(key.name, key) != key:
                raise ValueError(
                    f"key column {key.name} of {source.asset_key.to_user_string()} is declared as {key}, "
                    f"elsewhere as {keys[key.name]}: one entity needs one declaration (gold_tables.py)")
    return {
        name: Entity(name=entity_name(key), join_keys=[name], value_type=VALUE_TYPES[key.dtype],
                     description=key.description, tags=GENERATED_BY)
        for name, key in keys.items()
    }


def _fields(columns: Iterable[Column]) -> list[Field]:
    return [Field(name=c.name, dtype=FEAST_TYPES[c.dtype], description=c.description) for c in columns]


def _view(source: SourceTable, entities: dict[str, Entity]) -> tuple[FeatureView, PostgreSQLSource, PushSource | None]:
    table = source.table
    layer = "streaming" if source.pushed else "gold"
    tags = {**GENERATED_BY, ASSET_TAG: source.asset_key.to_user_string(), "table": table.qualified_name,
            "layer": layer}
    batch = PostgreSQLSource(name=f"{table.name}_source", table=table.qualified_name,
                             timestamp_field=TIMESTAMP_FIELD, description=f"Postgres table {table.qualified_name}.",
                             tags=tags)
    push = (PushSource(name=f"{table.name}_push", batch_source=batch, tags=tags,
                       description=f"Pushes of the streaming run into the {table.name} view.")
            if source.pushed else None)
    view = FeatureView(
        name=table.name, entities=[entities[k] for k in table.key_names], ttl=timedelta(seconds=table.ttl_seconds),
        schema=_fields([*table.keys, *table.features]), source=push or batch, online=True,
        description=table.description, tags=tags,
    )
    return view, batch, push


def generate(contracts: Iterable[FeatureTable]) -> FeastRepo:
    """The Feast objects that the table contracts describe, in asset key order."""
    tables = sorted((SourceTable(t) for t in contracts), key=lambda t: t.asset_key.to_user_string())
    if not tables:
        raise ValueError("no table contract given: nothing to generate Feast from")
    entities = _entities(tables)
    generated = [_view(t, entities) for t in tables]
    views = {view.name: view for view, _, _ in generated}
    services = []
    for spec in FEATURE_SERVICES:
        missing = [name for name in spec.views if name not in views]
        if missing:
            raise ValueError(f"feature service {spec.name} needs views {missing}, which no asset declares; "
                             f"declared: {sorted(views)}")
        services.append(FeatureService(name=spec.name, features=[views[name] for name in spec.views],
                                       description=spec.description, tags=GENERATED_BY))
    return FeastRepo(
        tables=tuple(tables),
        entities=tuple(entities.values()),
        batch_sources=tuple(batch for _, batch, _ in generated),
        push_sources=tuple(push for _, _, push in generated if push is not None),
        feature_views=tuple(views.values()),
        feature_services=tuple(services),
    )


def generated_repo() -> FeastRepo:
    """The Feast objects of the project's contracts: what ``feature_repo/repo.py`` declares.

    Made anew on each call: Feast writes into the objects it applies and materializes (their
    metadata and materialization intervals), so a shared copy would drift from the declarations.
    """
    return generate((*GOLD_TABLES, *REALTIME_TABLES))


def write_config(path: Path = FEATURE_REPO / "feature_store.yaml", feast: FeastResource | None = None) -> Path:
    """Write ``feature_store.yaml`` for the ``feast`` CLI (owner-only: it holds passwords).

    The content is ``feast``'s configuration, by default the one the settings give.
    """
    config = (feast or FeastResource.from_settings(get_settings())).config_dict()
    text = "# Generated by `python -m taobao_assets.feast_repo write-config` from taobao_assets.settings.\n"
    text += yaml.safe_dump(config, sort_keys=False)
    return write_private(path, text)


def write_repo_module(path: Path = REPO_MODULE) -> Path:
    """Rewrite ``feature_repo/repo.py`` from the contracts (commit the result)."""
    path.write_text(render(generated_repo()))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taobao_assets.feast_repo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write-config", help="write feature_repo/feature_store.yaml from the settings")
    sub.add_parser("generate", help="rewrite feature_repo/repo.py from the table contracts")
    show = sub.add_parser("show", help="list the objects generated from the table contracts")
    show.add_argument("--features", action="store_true", help="also list each view's features")
    args = parser.parse_args(argv)
    if args.command == "write-config":
        print(write_config())
    elif args.command == "generate":
        print(write_repo_module())
    else:
        for obj in generated_repo().objects():
            print(f"{type(obj).__name__:18} {obj.name}")
            if args.features and isinstance(obj, FeatureView):
                for field in obj.features:
                    print(f"{'':20}{field.name}: {field.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
