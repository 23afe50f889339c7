"""Online lookup latency: the ``ctr_model_v1`` service for one impression, three ways (docs/architecture.md).

``python -m bench.online_lookup [--lookups 2000] [--users 20000]`` writes one day of synthetic gold
(of the declared contracts) into its own database ``<db>_bench`` and Feast project ``bench``,
applies the generated repository, materializes the day into Redis, and then times, over the same
random sequence of (user, item, category) rows:

- ``feast sdk``: ``FeatureStore.get_online_features(feature service, one entity row)`` in process;
- ``feast serve http``: ``POST /get-online-features`` to ``feast serve`` on the same repository,
  one keep-alive connection;
- ``redis pipeline``: the reference, one pipelined ``HMGET`` per view of exactly the hash fields
  Feast reads (each view's features and its timestamp), returning the raw bytes;
- ``feast sdk, 100 rows per call``: the SDK with a ranking request's worth of rows per call (the
  figures are per call; divide by 100 for a row), which separates per-call overhead from per-row work;
- ``lean reader`` (one row, and 100 rows per call): the project's lookup API
  (:mod:`taobao_assets.online_read`), which returns the SDK's values from the same Redis hashes;
- ``lookup server http``: the same through ``python -m taobao_assets.lookup_server``, one
  keep-alive connection.

Each lookup is timed alone (``perf_counter_ns``) after a warm-up; the figures are p50/p99/mean in
milliseconds and lookups/s. The target is Feast SDK p99 <= 3x the Redis pipeline's p99. Results go
to ``bench/results/online_lookup.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
import requests
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from psycopg2.extras import execute_values

from bench import machine, markdown_table, peak_rss_mb, write_results
from deploy.service import free_port
from taobao_assets.feast_repo import FeastRepo, generated_repo, write_config
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.io_managers.postgres import create_table_sql
from taobao_assets.online_read import OnlineReader
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.feast import ENTITY_KEY_VERSION, FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.retrieval import feature_server, http_lookup, lookup_over_http, lookup_server
from taobao_assets.settings import Settings, get_settings

SERVICE = "ctr_model_v1"
TARGET_RATIO = 3.0
DAY = "2026-11-01"
WARMUP = 200
#: Rows per call of the batched SDK path: a ranking request scores many candidate items at once.
BATCH = 100
BATCH_CALLS, BATCH_WARMUP = 200, 10
Row = dict[str, int]


def bench_settings(settings: Settings, name: str = "bench") -> Settings:
    """``settings`` with a database ``<db>_<name>`` and Feast project ``name`` of the benchmark's own."""
    return dataclasses.replace(settings, postgres_db=f"{settings.postgres_db}_{name}", feast_project=name)


def create_database(settings: Settings) -> None:
    conn = psycopg2.connect(host=settings.postgres_host, port=settings.postgres_port, user=settings.postgres_user,
                            password=settings.postgres_password, dbname="postgres")
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.postgres_db,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{settings.postgres_db}"')
    finally:
        conn.close()


def _ids(table: GoldTable, sizes: dict[str, int], rng: np.random.Generator) -> list[tuple[int, ...]]:
    if len(table.keys) == 1:
        return [(i,) for i in range(1, sizes[table.key_names[0]] + 1)]
    # About ten categories per user: a user x category table an order of magnitude above users.
    users = np.repeat(np.arange(1, sizes["user_id"] + 1), 10)
    categories = rng.integers(1, sizes["category_id"] + 1, len(users))
    return sorted({(int(u), int(c)) for u, c in zip(users, categories, strict=True)})


def write_gold(postgres: PostgresResource, keys: Mapping[str, Mapping[str, Sequence[tuple[int, ...]]]],
               rng: np.random.Generator) -> dict[str, int]:
    """Random gold rows for ``keys[day][table name]``, stamped with each day's end; returns rows per table.

    Every gold table is emptied first (a table without keys stays empty), so a run holds exactly its rows.
    """
    counts = {}
    with postgres.connect() as conn, conn.cursor() as cur:
        for table in GOLD_TABLES:
            cur.execute(create_table_sql(table), (table.description,))
            cur.execute(f"TRUNCATE {table.qualified_name}")
            counts[table.name] = 0
            for day, tables in keys.items():
                ids = tables.get(table.name, [])
                values = {c.name: (rng.integers(0, 1000, len(ids)) if c.dtype == "int64" else rng.random(len(ids)))
                          for c in table.features}
                rows = [(*key, end_of_day(day), *(values[c.name][i].item() for c in table.features))
                        for i, key in enumerate(ids)]
                execute_values(cur, f"INSERT INTO {table.qualified_name} "
                                    f"({', '.join(c.name for c in table.columns)}) VALUES %s", rows, page_size=5000)
                counts[table.name] += len(rows)
            cur.execute(f"ANALYZE {table.qualified_name}")  # as the gold IO manager does after a write
    return counts


def raw_reader(feast: FeastResource, repo: FeastRepo) -> Callable[[Row], list[Any]]:
    """The reference: the hashes and fields Feast's Redis store reads for the service, one pipeline."""
    client = feast.redis.client()
    views = [(repo.view(p.name), [f.name for f in p.features]) for p in repo.service(SERVICE).feature_view_projections]
    plans = [([c.name for c in view.entity_columns],
              [f"_ts:{view.name}".encode(), *(_mmh3(f"{view.name}:{f}") for f in features)])
             for view, features in views]

    def read(row: Row) -> list[Any]:
        with client.pipeline(transaction=False) as pipe:
            for keys, fields in plans:
                entity = EntityKeyProto(join_keys=keys, entity_values=[ValueProto(int64_val=row[k]) for k in keys])
                pipe.hmget(_redis_key(feast.project, entity, ENTITY_KEY_VERSION), fields)
            return list(pipe.execute())

    return read


def timed(lookup: Callable[[Any], Any], rows: list[Any], warmup: int = WARMUP) -> dict[str, float]:
    """Latency of each lookup of ``rows`` after the first ``warmup`` ones (connections, caches)."""
    for row in rows[:warmup]:
        lookup(row)
    samples = []
    started = time.perf_counter()
    for row in rows[warmup:]:
        t0 = time.perf_counter_ns()
        lookup(row)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    wall = time.perf_counter() - started
    ordered = sorted(samples)
    return {
        "lookups": len(samples),
        "p50_ms": round(ordered[len(ordered) // 2], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "max_ms": round(ordered[-1], 3),
        "lookups_per_s": round(len(samples) / wall, 1),
    }


def run(lookups: int, sizes: dict[str, int], seed: int) -> dict[str, Any]:
    settings = bench_settings(get_settings())
    create_database(settings)
    feast = FeastResource.from_settings(settings)
    repo = generated_repo()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    rows_written = write_gold(PostgresResource.from_settings(settings),
                              {DAY: {t.name: _ids(t, sizes, rng) for t in GOLD_TABLES}}, rng)
    feast.apply(repo.contents())
    stamp = end_of_day(DAY)
    feast.store().materialize(start_date=stamp, end_date=stamp,
                              feature_views=[v.name for v in repo.feature_views if v.tags["layer"] == "gold"])
    setup_s = time.perf_counter() - t0

    def random_rows(n: int) -> list[Row]:
        return [{"user_id": int(rng.integers(1, sizes["user_id"] + 1)),
                 "item_id": int(rng.integers(1, sizes["item_id"] + 1)),
                 "category_id": int(rng.integers(1, sizes["category_id"] + 1))} for _ in range(n)]

    rows = random_rows(lookups + WARMUP)
    batches = [random_rows(BATCH) for _ in range(BATCH_CALLS + BATCH_WARMUP)]
    store = feast.store()
    service = store.get_feature_service(SERVICE)
    results = {
        "feast sdk": timed(lambda row: store.get_online_features(
            features=service, entity_rows=[row], full_feature_names=True).to_dict(), rows),
        "redis pipeline": timed(raw_reader(feast, repo), rows),
        f"feast sdk, {BATCH} rows per call": timed(lambda batch: store.get_online_features(
            features=service, entity_rows=batch, full_feature_names=True).to_dict(), batches, BATCH_WARMUP),
    }
    reader = OnlineReader(store, feast.redis.client())
    results["lean reader"] = timed(lambda row: reader.read(SERVICE, [row]), rows)
    results[f"lean reader, {BATCH} rows per call"] = timed(lambda batch: reader.read(SERVICE, batch), batches,
                                                           BATCH_WARMUP)
    with tempfile.TemporaryDirectory(dir=settings.state_dir) as folder:
        write_config(Path(folder) / "feature_store.yaml", feast)
        with feature_server(Path(folder), free_port()) as url, requests.Session() as session:
            results["feast serve http"] = timed(lambda row: http_lookup(session, url, SERVICE, **row), rows)
    env = dict(os.environ, TFP_POSTGRES_DB=settings.postgres_db, TFP_FEAST_PROJECT=settings.feast_project)
    with lookup_server(free_port(), env) as url, requests.Session() as session:
        results["lookup server http"] = timed(lambda row: lookup_over_http(session, url, SERVICE, **row), rows)
    for name in (f"feast sdk, {BATCH} rows per call", f"lean reader, {BATCH} rows per call"):
        results[name]["mean_ms_per_row"] = round(results[name]["mean_ms"] / BATCH, 4)
    reference = results["redis pipeline"]["p99_ms"]
    ratio = results["feast sdk"]["p99_ms"] / reference
    lean = results["lean reader"]["p99_ms"] / reference
    features = sum(len(p.features) for p in service.feature_view_projections)
    return {
        "benchmark": "online_lookup",
        "service": SERVICE,
        "features_per_lookup": features,
        "views_per_lookup": len(service.feature_view_projections),
        "entities": sizes,
        "gold_rows": rows_written,
        "setup_s": round(setup_s, 1),
        "results": results,
        "ratio_sdk_p99_vs_redis_p99": round(ratio, 2),
        "ratio_http_p99_vs_redis_p99": round(results["feast serve http"]["p99_ms"] / reference, 2),
        "ratio_lean_p99_vs_redis_p99": round(lean, 2),
        "ratio_lookup_server_p99_vs_redis_p99": round(results["lookup server http"]["p99_ms"] / reference, 2),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
        "lean_met": lean <= TARGET_RATIO,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine(),
    }


def markdown(result: dict[str, Any]) -> str:
    columns = ["path", "lookups", "p50 ms", "p99 ms", "mean ms", "max ms", "lookups/s"]
    rows = [[name, r["lookups"], r["p50_ms"], r["p99_ms"], r["mean_ms"], r["max_ms"], r["lookups_per_s"]]
            for name, r in result["results"].items()]
    sdk = result["results"]["feast sdk"]
    batched = result["results"][f"feast sdk, {BATCH} rows per call"]
    lean = result["results"][f"lean reader, {BATCH} rows per call"]
    return (
        "## Online lookup: feature service for one impression (bench/online_lookup.py)\n\n"
        f"`{result['service']}`: {result['features_per_lookup']} features from {result['views_per_lookup']} views "
        f"(user, item, category, user x category); entities {result['entities']}.\n\n"
        + markdown_table(columns, rows)
        + f"\nFeast SDK p99 / Redis pipeline p99 = **{result['ratio_sdk_p99_vs_redis_p99']}** "
        f"(target <= {result['target_ratio']}, {'met' if result['met'] else 'missed'}); "
        f"feast serve HTTP p99 / Redis p99 = {result['ratio_http_p99_vs_redis_p99']}. "
        f"The project's lookup API (lean reader, same values as the SDK) p99 / Redis p99 = "
        f"**{result['ratio_lean_p99_vs_redis_p99']}** ({'met' if result['lean_met'] else 'missed'}); "
        f"{lean['mean_ms_per_row']} ms per row in calls of {BATCH} rows; over HTTP (the project's lookup "
        f"server) p99 / Redis p99 = {result['ratio_lookup_server_p99_vs_redis_p99']}. "
        f"Batched, the SDK costs {batched['mean_ms_per_row']} ms per row (calls of {BATCH} rows) against "
        f"{sdk['mean_ms']} ms for a one-row call: the time above Redis grows with rows x features "
        f"(cProfile: decoding each value's protobuf, typing and building the response in Python), "
        f"so it is Feast's Python read path, not Redis or the network, that sets the ratio. "
        f"Peak RSS {result['peak_rss_mb']} MB (bench process, includes the SDK). "
        f"Machine: {result['machine']['cpus']} CPUs, load average {result['machine']['load_average']}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.online_lookup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=2000, help="timed lookups per path")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--categories", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = {"user_id": args.users, "item_id": args.items, "category_id": args.categories,
             "shop_id": args.items // 10, "brand_id": args.items // 10}
    result = run(args.lookups, sizes, args.seed)
    json_path, md_path = write_results("online_lookup", result, markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
