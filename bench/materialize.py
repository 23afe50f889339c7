"""Materialization into Redis: stock Feast, the Postgres-to-Redis engine, and the Redis-bound floor.

``python -m bench.materialize [--rows 1000000] [--days 7] [--runs 3]`` draws ``rows`` impressions
over ``days`` days and writes the gold rows of the ``ctr_model_v1`` views for every day, as
:mod:`bench.pit_retrieval` does, into its own database ``<db>_materialize`` and Feast project
``materialize``. It then materializes the last day (the largest: every entity of the 7-day window)
into Redis, the ``online_store`` asset's call, three ways, on the same rows, each run starting from
an empty Redis namespace (the project's keys deleted, not timed):

- ``stock feast``: ``FeatureStore.materialize(start_date=stamp, end_date=stamp, feature_views=...)``
  with Feast's local engine. The timer spans the call: registry bookkeeping (view states,
  intervals), the Postgres read, Feast's filter, dedup and protobuf conversion, and its Redis
  writes (a pipelined ``HMGET`` of the ``_ts`` marks, then ``HSET`` per row);
- ``engine``: the same call on a store whose ``batch_engine`` is
  :class:`~taobao_assets.online_materialization.PostgresRedisEngine`: same timer boundaries. Its
  parts are timed apart on the same rows: the views' Postgres ``COPY`` into Arrow alone, and the
  engine's whole per-view work without the registry bookkeeping (``engine.materialize`` of the
  tasks);
- ``raw HSET``: the floor Redis sets: the final hashes (read back after an engine run) as packed
  ``HSET`` commands, prepared before the timer, sent in pipelines of 10 000 commands; the timer
  spans sending them and reading the replies, nothing else.

Rows/s is the day's gold rows over seconds; the figures are the median, min and max of ``--runs``
runs (interleaved: stock, engine, raw, ...), against the target of 200 000 rows/s. Results go to
``bench/results/materialize.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from feast import FeatureStore
from feast.infra.common.materialization_job import MaterializationTask

from bench import Spread, machine, markdown_table, peak_rss_mb, write_results
from bench.online_lookup import bench_settings, create_database, write_gold
from bench.pit_retrieval import gold_keys, impressions
from taobao_assets.assets.serving import TRAINING_SERVICE
from taobao_assets.feast_repo import generated_repo
from taobao_assets.online_materialization import WRITE_BATCH, PostgresRedisEngine, _ViewPlan
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.redis import unlink_matching
from taobao_assets.settings import get_settings

TARGET_ROWS_PER_S = 200_000


def _store(feast: FeastResource, engine: bool) -> FeatureStore:
    """The platform's store (its engine), or one that materializes with Feast's local engine."""
    return feast.store_with() if engine else feast.store_with(batch_engine={"type": "local"})


def clear(feast: FeastResource) -> int:
    """Delete the project's online rows (every key ends with the project's name); returns how many."""
    return unlink_matching(feast.redis.client(), b"*" + feast.project.encode())


def packed_hsets(feast: FeastResource) -> list[tuple[bytes, int]]:
    """The project's hashes as packed ``HSET`` commands, in pipelines of the engine's
    :data:`~taobao_assets.online_materialization.WRITE_BATCH`."""
    client: Any = feast.redis.client()
    keys = list(client.scan_iter(match=b"*" + feast.project.encode(), count=10_000))
    connection = client.connection_pool.get_connection()
    try:
        batches = []
        for start in range(0, len(keys), WRITE_BATCH):
            chunk = keys[start:start + WRITE_BATCH]
            with client.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.hgetall(key)
                hashes = pipe.execute()
            commands = [connection.pack_command("HSET", key, *(x for pair in fields.items() for x in pair))
                        for key, fields in zip(chunk, hashes, strict=True)]
            batches.append((b"".join(part for command in commands for part in command), len(chunk)))
    finally:
        client.connection_pool.release(connection)
    return batches


def raw_hset(feast: FeastResource, batches: list[tuple[bytes, int]]) -> float:
    """Seconds to send ``batches`` and read every reply, on one connection."""
    client: Any = feast.redis.client()
    connection = client.connection_pool.get_connection()
    try:
        t0 = time.perf_counter()
        for payload, count in batches:
            connection.send_packed_command([payload], check_health=False)
            for _ in range(count):
                connection.read_response()
        return time.perf_counter() - t0
    finally:
        client.connection_pool.release(connection)


def timed(action: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a report per view
        action()
    return time.perf_counter() - t0


def summary(seconds: list[float], rows: int) -> dict[str, Any]:
    rates = Spread.of([rows / s for s in seconds])
    return {"seconds": [round(s, 3) for s in seconds], "rows_per_s_median": round(rates.median),
            "rows_per_s_min": round(rates.min), "rows_per_s_max": round(rates.max)}


def run(rows: int, days: int, runs: int, seed: int) -> dict[str, Any]:
    settings = bench_settings(get_settings(), "materialize")
    create_database(settings)
    feast = FeastResource.from_settings(settings)
    t0 = time.perf_counter()
    repo = generated_repo()
    keys = gold_keys(impressions(rows, days, seed), repo)
    day = max(keys)
    gold_rows = write_gold(feast.postgres, keys, np.random.default_rng(seed))
    feast.apply(repo.contents())
    setup_s = time.perf_counter() - t0
    views = [p.name for p in repo.service(TRAINING_SERVICE).feature_view_projections]
    stamp = end_of_day(day)
    day_rows = {view: len(keys[day][view]) for view in views}
    total = sum(day_rows.values())
    stock, engine_store = _store(feast, engine=False), _store(feast, engine=True)
    engine = cast(Any, engine_store._get_provider()).batch_engine  # Feast's passthrough provider has one
    assert isinstance(engine, PostgresRedisEngine)

    def materialize(store: FeatureStore) -> Callable[[], None]:
        return lambda: store.materialize(start_date=stamp, end_date=stamp, feature_views=views)

    def tasks() -> list[MaterializationTask]:
        return [MaterializationTask(feast.project, engine_store.get_feature_view(v), stamp, stamp) for v in views]

    def read_only() -> None:
        for task in tasks():
            plan = _ViewPlan.of(engine_store.config, engine_store.registry, task)
            assert isinstance(plan, _ViewPlan)
            engine._read(plan, stamp, stamp)

    seconds: dict[str, list[float]] = {name: [] for name in ("stock", "engine", "engine_work", "copy", "raw")}
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    clear(feast)
    timed(materialize(engine_store))
    written = packed_hsets(feast)
    if sum(count for _, count in written) != total:
        raise RuntimeError(f"the engine wrote {sum(c for _, c in written)} hashes for {total} gold rows")
    for _ in range(runs):
        for name, action in [("stock", materialize(stock)), ("engine", materialize(engine_store)),
                             ("engine_work", lambda: engine.materialize(engine_store.registry, tasks()))]:
            clear(feast)
            seconds[name].append(timed(action))
        seconds["copy"].append(timed(read_only))
        clear(feast)
        seconds["raw"].append(raw_hset(feast, written))
    clear(feast)
    results = {name: summary(values, total) for name, values in seconds.items()}
    engine_rate = results["engine"]["rows_per_s_median"]
    return {
        "benchmark": "materialize",
        "service": TRAINING_SERVICE,
        "impressions": rows,
        "days": days,
        "day": day,
        "gold_rows_day": day_rows,
        "gold_rows_all_days": {v: gold_rows[v] for v in views},
        "features_per_row": {v: len(repo.view(v).features) for v in views},
        "redis_commands_per_pipeline": WRITE_BATCH,
        "runs": runs,
        "setup_s": round(setup_s, 1),
        "results": results,
        "ratio_engine_to_stock": round(engine_rate / results["stock"]["rows_per_s_median"], 1),
        "ratio_engine_to_raw": round(engine_rate / results["raw"]["rows_per_s_median"], 2),
        "target_rows_per_s": TARGET_ROWS_PER_S,
        "met": engine_rate >= TARGET_ROWS_PER_S,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine(),
        "load_average_at_start": load_at_start,
    }


LABELS = {
    "stock": "stock Feast materialize (local engine)",
    "engine": "materialize with PostgresRedisEngine",
    "engine_work": "- engine per-view work alone (no registry bookkeeping)",
    "copy": "- of which Postgres COPY into Arrow alone",
    "raw": "raw pipelined HSET of the final bytes (Redis floor)",
}


def markdown(result: dict[str, Any]) -> str:
    rows = sum(result["gold_rows_day"].values())
    table = markdown_table(
        ["path", "rows", "median rows/s", "min rows/s", "max rows/s", "seconds per run"],
        [[LABELS[name], rows, f"{r['rows_per_s_median']:,}", f"{r['rows_per_s_min']:,}", f"{r['rows_per_s_max']:,}",
          ", ".join(f"{s:.2f}" for s in r["seconds"])] for name, r in result["results"].items()])
    engine = result["results"]["engine"]["rows_per_s_median"]
    return (
        "## Materialization into Redis (bench/materialize.py)\n\n"
        f"The `{result['service']}` views' gold rows of {result['day']} (the last of {result['days']} days of "
        f"{result['impressions']:,} impressions): {result['gold_rows_day']} rows, "
        f"{result['features_per_row']} features per row; Postgres holds all days ({result['gold_rows_all_days']}). "
        f"Median, min and max of {result['runs']} runs, each from an empty Redis namespace.\n\n" + table
        + f"\nEngine median **{engine:,} rows/s** (target >= {result['target_rows_per_s']:,}: "
        f"{'met' if result['met'] else 'missed'}); {result['ratio_engine_to_stock']}x stock Feast, "
        f"{result['ratio_engine_to_raw']} of the raw HSET floor. Timers: stock and engine span the whole "
        f"`materialize` call (registry bookkeeping, Postgres read, encoding, Redis `_ts` reads and writes); the "
        f"raw floor spans only sending the prepared commands and reading the replies. Peak RSS "
        f"{result['peak_rss_mb']} MB. Machine: {result['machine']['cpus']} CPUs, load average at start "
        f"{result['load_average_at_start']}, at end {result['machine']['load_average']}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.materialize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="impressions the gold rows are drawn from")
    parser.add_argument("--days", type=int, default=7, help="days of gold written (the last is materialized)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.rows, args.days, args.runs, args.seed)
    json_path, md_path = write_results("materialize", result, markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
