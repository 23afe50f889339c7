"""The disk (and Redis memory) each layer of one namespace holds: what the whole data set will need.

Measured after a run of the main job, on the servers themselves, for the namespace its settings name:

- ``raw``: the source files (``source_dir``);
- ``kafka``: the namespace's topic partitions in the broker's log directory (retention is unlimited,
  so the topics hold every record replayed);
- ``bronze``, ``silver``, ``training sets``: objects under the lake bucket's ``bronze/``,
  ``warehouse/silver/`` and ``training/`` prefixes (Iceberg's data, manifests and metadata);
- ``gold (Postgres)`` and ``other Postgres``: tables with their indexes and TOAST, of the ``gold``
  schema and of every other schema of the namespace's database;
- ``Redis online store`` and ``Redis stream state``: ``MEMORY USAGE`` of every key of the namespace's
  Feast project and of its stream (Redis keeps them in memory; its snapshot on disk is smaller).

Files count by the blocks they occupy, not their length: Kafka preallocates its index files sparse.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from deploy.services.kafka import Kafka
from taobao_assets.gold_tables import SCHEMA as GOLD_SCHEMA
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource, scan_batches
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import Settings
from taobao_assets.streaming.resource import StreamingResource, StreamTopics

#: Lake prefixes measured, by layer.
LAKE_LAYERS = {"bronze": "bronze/", "silver": "warehouse/silver/", "training sets": "training/"}


def _on_disk(root: Path) -> int:
    """Bytes the files under ``root`` occupy (allocated blocks); 0 when it does not exist."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            total += os.stat(Path(folder) / name).st_blocks * 512
    return total


def _kafka_bytes(settings: Settings) -> int:
    topics = StreamTopics.of(settings.topic_prefix)
    names = {topics.samples.name, topics.common_features.name, topics.dead_letter.name}
    log_dir = Kafka(settings).data
    if not log_dir.exists():
        return 0
    return sum(_on_disk(p) for p in log_dir.iterdir() if p.is_dir() and p.name.rpartition("-")[0] in names)


def _lake_bytes(settings: Settings) -> dict[str, int]:
    client = S3Resource.from_settings(settings).client()
    sizes = {}
    for layer, prefix in LAKE_LAYERS.items():
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=settings.lake_bucket, Prefix=prefix)
        sizes[layer] = sum(obj["Size"] for page in pages for obj in page.get("Contents", []))
    return sizes


def _postgres_bytes(settings: Settings) -> dict[str, int]:
    with PostgresResource.from_settings(settings).connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT n.nspname = %s, coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') "
                    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') GROUP BY 1", (GOLD_SCHEMA,))
        by_gold = {bool(gold): int(size) for gold, size in cur.fetchall()}
    return {"gold (Postgres)": by_gold.get(True, 0), "other Postgres": by_gold.get(False, 0)}


def _redis_bytes(settings: Settings, patterns: Iterable[bytes | str]) -> int:
    """``MEMORY USAGE`` summed over the keys matching any of ``patterns``, pipelined per scan batch."""
    client = RedisResource.from_settings(settings).client()
    total = 0
    for pattern in patterns:
        for batch in scan_batches(client, pattern):
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.memory_usage(key, samples=0)
            total += sum(int(used or 0) for used in pipe.execute())
    return total


def layer_bytes(settings: Settings) -> dict[str, int]:
    """Bytes per layer of the namespace ``settings`` name (the module docstring), in pipeline order."""
    from taobao_assets.feast_repo import generated_repo
    from taobao_assets.online_layout import glob_escaped, key_pattern

    online = {key_pattern(settings.feast_project, view.join_keys) for view in generated_repo().feature_views}
    stream = StreamingResource.from_settings(settings).state().prefix
    return {
        "raw": _on_disk(settings.source_dir),
        "kafka": _kafka_bytes(settings),
        **_lake_bytes(settings),
        **_postgres_bytes(settings),
        "Redis online store": _redis_bytes(settings, sorted(online)),
        "Redis stream state": _redis_bytes(settings, [glob_escaped(stream.encode()) + b"*"]),
    }

