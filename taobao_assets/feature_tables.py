"""What a feature table declares, whatever writes it: columns, types, descriptions, entity keys, TTL.

A :class:`FeatureTable` is written down once (the gold tables in :mod:`taobao_assets.gold_tables`,
the real-time tables in :mod:`taobao_assets.realtime_tables`) and travels as its asset's metadata.
Postgres tables are created from it, asset checks compare stored tables with it, and the Feast
repository is generated from it, so what Dagster shows, what Postgres holds and what Feast serves
are the same thing. The subclasses say where rows live and what their timestamp means.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from dagster import AssetKey, TableColumn, TableSchema

#: Column types and their Postgres types (Feast maps the same names to its own types).
PG_TYPES = {"int64": "BIGINT", "float64": "DOUBLE PRECISION", "string": "TEXT", "timestamp": "TIMESTAMPTZ"}
TIMESTAMP_FIELD = "event_timestamp"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    description: str

    def __post_init__(self) -> None:
        if self.dtype not in PG_TYPES:
            raise ValueError(f"column {self.name}: type {self.dtype!r} is not one of {sorted(PG_TYPES)}")


@dataclass(frozen=True)
class FeatureTable:
    name: str
    #: Entity keys; each is one Feast entity named after it (``user_id`` -> ``user``), so the
    #: user x category table joins on the user and the category entities.
    keys: tuple[Column, ...]
    features: tuple[Column, ...]
    description: str
    #: How long a day's row stays valid: a row at end of day D describes the impressions of D+1.
    ttl_seconds: int = 86_400

    #: Postgres schema of the table, metadata key of the contract and meaning of its timestamp:
    #: what each kind of table (gold, real-time) sets.
    schema: ClassVar[str]
    metadata_key: ClassVar[str]
    timestamp_description: ClassVar[str]

    @property
    def asset_key(self) -> AssetKey:
        """``<schema>/<table>``: the asset that carries the contract (``gold/user_features``)."""
        return AssetKey([self.schema, self.name])

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def columns(self) -> tuple[Column, ...]:
        return (*self.keys, Column(TIMESTAMP_FIELD, "timestamp", self.timestamp_description), *self.features)

    @property
    def key_names(self) -> list[str]:
        return [k.name for k in self.keys]

    def metadata(self) -> dict[str, Any]:
        """Dagster asset metadata: the standard column schema plus the full contract as JSON."""
        return {
            "dagster/column_schema": TableSchema(
                columns=[TableColumn(c.name, c.dtype, description=c.description) for c in self.columns]
            ),
            "dagster/table_name": self.qualified_name,
            self.metadata_key: json.dumps(self.to_json()),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "keys": [c.__dict__ for c in self.keys], "features": [c.__dict__ for c in self.features],
            "description": self.description, "ttl_seconds": self.ttl_seconds,
        }

    @classmethod
    def from_metadata(cls, metadata: Any) -> Self:
        """Rebuild the contract from an asset's metadata (a mapping with the class's metadata key)."""
        raw = metadata[cls.metadata_key]
        data = json.loads(raw.value if hasattr(raw, "value") else raw)
        return cls(
            name=data["name"], keys=tuple(Column(**c) for c in data["keys"]),
            features=tuple(Column(**c) for c in data["features"]),
            description=data["description"], ttl_seconds=data["ttl_seconds"],
        )
