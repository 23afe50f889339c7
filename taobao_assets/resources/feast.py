"""Feast: registry in Postgres (SQL), offline store Postgres (schema ``gold``), online store Redis.

The whole ``feature_store.yaml`` is built here from the Postgres and Redis resources, so the
Dagster assets (which build a :class:`RepoConfig` in memory) and the ``feast`` CLI (which reads the
file :func:`taobao_assets.feast_repo.write_config` writes from the same dictionary) cannot point at
different stores.

Applying takes the generated repository contents and does what ``feast apply`` does (objects no
longer generated are deleted). :meth:`FeastResource.drift` compares the registry with them object
by object, the basis of the registry-drift asset check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource, unlink_matching
from taobao_assets.settings import REPO_ROOT, Settings

# Feast (seconds to import) and the project's Feast plug-ins are imported where they are used:
# every run process builds this resource, and most runs (bronze, the Spark days) never call it.
if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig
    from feast.repo_contents import RepoContents
    from google.protobuf.message import Message

#: How long a process trusts its copy of the registry before reading Postgres again.
REGISTRY_CACHE_SECONDS = 60
#: Rows per online-store write during materialization (bounds the memory of the proto conversion).
ONLINE_WRITE_BATCH = 10_000


def _separate_entity_keys_in_point_in_time_ids() -> None:
    """Make the Postgres offline store's point-in-time row ids unambiguous for multi-key views.

    Feast 0.67 identifies an entity row of a view by concatenating its keys and timestamp as text
    with no separator, so (user 1, category 23) and (user 12, category 3) at the same time get the
    same id and swap or duplicate features in ``get_historical_features`` (found by this project's
    merge_asof leakage test). A separator between the parts makes the id injective. The template
    text is checked, so a Feast upgrade that changes it fails loudly here instead of silently. It is
    applied (once: it is idempotent) when a feature store is made, not at import.
    """
    from feast.infra.offline_stores.contrib.postgres_offline_store import postgres as postgres_offline

    template = postgres_offline.MULTIPLE_FEATURE_VIEW_POINT_IN_TIME_JOIN
    ambiguous = 'CAST("{{entity}}" as VARCHAR) ||'
    separated = "CAST(\"{{entity}}\" as VARCHAR) || '|' ||"
    if separated in template:
        return
    if template.count(ambiguous) != 1:
        raise RuntimeError(
            "Feast's Postgres point-in-time template changed: cannot add the entity key separator "
            "(taobao_assets/resources/feast.py); check whether the installed Feast still needs it")
    postgres_offline.MULTIPLE_FEATURE_VIEW_POINT_IN_TIME_JOIN = template.replace(ambiguous, separated)


@dataclass(frozen=True)
class Drift:
    """One object whose registry version differs from the generated one (or exists on one side only)."""

    kind: str
    name: str
    change: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.change}"


def _definition(obj: Any) -> str:
    """What an object declares, as deterministic text: its spec without bookkeeping.

    ``meta`` (creation and update times, materialization intervals, state) changes whenever Feast
    materializes or re-registers an object; Feast's own plan counts that as an update, which would
    make every materialization look like drift.
    """
    from google.protobuf import text_format

    proto = obj.to_proto()
    spec = proto.spec if hasattr(proto, "spec") else proto
    spec = type(spec).FromString(spec.SerializeToString())
    _clear_meta(spec)
    return text_format.MessageToString(spec, as_one_line=True)


def _clear_meta(message: Message) -> None:
    for field, value in message.ListFields():
        if field.name in ("meta", "project"):
            message.ClearField(field.name)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for item in (value if field.label == field.LABEL_REPEATED else [value]):
                _clear_meta(item)


class FeastResource(ConfigurableResource):
    postgres: PostgresResource
    redis: RedisResource
    project: str
    #: The ``feature_repo/`` folder: Feast resolves relative paths against it.
    repo_path: str = str(REPO_ROOT / "feature_repo")

    _store: FeatureStore | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> FeastResource:
        return cls(postgres=PostgresResource.from_settings(settings), redis=RedisResource.from_settings(settings),
                   project=settings.feast_project)

    def config_dict(self) -> dict[str, Any]:
        """The content of ``feature_store.yaml``."""
        from taobao_assets.offline_store import STORE_TYPE
        from taobao_assets.online_layout import ENTITY_KEY_VERSION
        from taobao_assets.online_materialization import ENGINE_TYPE

        pg = self.postgres
        return {
            "project": self.project,
            "provider": "local",
            "registry": {
                "registry_type": "sql",
                "path": pg.sqlalchemy_url,
                "cache_ttl_seconds": REGISTRY_CACHE_SECONDS,
                "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
            },
            "offline_store": {
                # Feast's Postgres store with index-probing point-in-time reads and push.
                "type": STORE_TYPE, "host": pg.host, "port": pg.port, "database": pg.database,
                "user": pg.user, "password": pg.password,
                # Feast's own default is "require"; "prefer" also accepts the loopback server without TLS.
                "sslmode": "prefer",
                # Where the entity data frames of historical retrieval are uploaded (temporary tables).
                "db_schema": "public",
            },
            "online_store": {"type": "redis", "connection_string": self.redis.connection_string},
            # Materialization: COPY out of Postgres, values encoded a column at a time, pipelined
            # HSETs (the same bytes as Feast's local engine, which keeps what this one cannot do).
            "batch_engine": {"type": ENGINE_TYPE},
            # Feast turns a whole view's rows into protobuf values at once unless told a batch size:
            # gigabytes for a day of user x category rows (for the views left to its local engine).
            "materialization_config": {"online_write_batch_size": ONLINE_WRITE_BATCH},
            "entity_key_serialization_version": ENTITY_KEY_VERSION,
        }

    def repo_config(self, **sections: dict[str, Any]) -> RepoConfig:
        """The configuration; each keyword updates the settings of one section (``online_store=...``)."""
        from feast import RepoConfig

        settings = self.config_dict()
        for section, changes in sections.items():
            settings[section] = {**settings[section], **changes}
        config = RepoConfig(**settings)
        config.repo_path = Path(self.repo_path)
        return config

    def store(self) -> FeatureStore:
        """The feature store, made once per resource instance (it caches the registry and connections)."""
        if self._store is None:
            self._store = self.store_with()
        return self._store

    def store_with(self, **sections: dict[str, Any]) -> FeatureStore:
        """A new feature store on the same registry whose configuration differs by ``sections``.

        For the writers and readers that need another setting than the platform's default (the
        streaming run's ``skip_dedup``, the tests' and benchmarks' stock offline store).
        """
        from feast import FeatureStore

        _separate_entity_keys_in_point_in_time_ids()
        return FeatureStore(repo_path=self.repo_path, config=self.repo_config(**sections))

    def _in_project(self, contents: RepoContents) -> RepoContents:
        """``contents`` in this project, as ``feast apply`` adds it when the repo declares none."""
        from feast import Project

        return contents._replace(projects=[Project(name=self.project)])

    def registered(self) -> RepoContents:
        """What the registry holds for this project now (read fresh, not from the cache)."""
        from feast.repo_contents import RepoContents

        store = self.store()
        store.refresh_registry()
        return RepoContents(
            projects=[], data_sources=store.list_data_sources(), feature_views=store.list_feature_views(),
            on_demand_feature_views=[], stream_feature_views=[], label_views=[],
            entities=store.list_entities(), feature_services=store.list_feature_services(), permissions=[],
        )

    def drift(self, contents: RepoContents) -> list[Drift]:
        """Objects whose definition in the registry differs from ``contents`` (empty: they match)."""
        from feast.feature_view import DUMMY_ENTITY_NAME

        registered = self.registered()
        drift = []
        for kind in ("entities", "data_sources", "feature_views", "feature_services"):
            wanted = {o.name: _definition(o) for o in getattr(contents, kind) if o.name != DUMMY_ENTITY_NAME}
            actual = {o.name: _definition(o) for o in getattr(registered, kind) if o.name != DUMMY_ENTITY_NAME}
            for name in sorted(wanted.keys() | actual.keys()):
                if name not in actual:
                    drift.append(Drift(kind, name, "not in the registry"))
                elif name not in wanted:
                    drift.append(Drift(kind, name, "in the registry but no longer generated"))
                elif wanted[name] != actual[name]:
                    drift.append(Drift(kind, name, "definition differs"))
        return drift

    def clear_online(self, join_keys: Iterable[Sequence[str]]) -> None:
        """Delete every online row of the project for entities of ``join_keys`` (each view's keys).

        For a new data set: Feast's Redis store keeps a stored row over any write with an older
        timestamp, so the old set's later days would shadow the new set's earlier ones.
        """
        from taobao_assets.online_layout import key_pattern

        client = self.redis.client()
        for keys in {tuple(k) for k in join_keys}:
            unlink_matching(client, key_pattern(self.project, keys))

    def apply(self, contents: RepoContents) -> list[Drift]:
        """Make the registry (and the online store's tables) equal ``contents``, as ``feast apply`` does.

        Objects of the project that ``contents`` no longer has are deleted, so a removed view stops
        being served. Returns what changed.
        """
        from feast.repo_operations import extract_objects_for_apply_delete

        changes = self.drift(contents)
        store = self.store()
        to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
            self.project, store.registry, self._in_project(contents))
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
        return changes
