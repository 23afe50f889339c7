"""Point-in-time training set: Feast ``get_historical_features`` against a DuckDB ASOF join (docs/architecture.md).

``python -m bench.pit_retrieval [--rows 1000000] [--days 7]`` draws ``rows`` impressions as the
synthetic generator does (sessions of Zipf-popular users, items partly from the user's preferred
categories, labels from the click model, the simulated event time spread over ``days`` days), and
writes, into its own database ``<db>_pit`` and Feast project ``pit``, the gold rows of the
``ctr_model_v1`` views at the end of each day: random values (of the declared contracts) for every
user, item, category and user x category seen in the impressions of the 7-day window up to that
day, as gold holds them. It applies the generated Feast repository and then builds the training
set of all impressions two ways, same data, same run:

- ``feast``: ``get_historical_features(entity rows as a DataFrame, feature service).to_df()`` on
  the Postgres offline store, as the ``training_set`` asset does (:func:`entity_frame`);
- ``duckdb``: the reference, ``ASOF LEFT JOIN`` of the same entity rows with each view's gold rows
  loaded from Postgres (the load is timed apart), keeping a row's features only within the view's
  TTL, i.e. Feast's rule: the latest row with ``event_timestamp <= t`` and ``>= t - ttl``.

The two frames are compared cell by cell (every feature of every row, nulls equal); whether they
agree is a result, not an assertion.

Postgres plans Feast's point-in-time SQL badly: each view's rows are filtered by the entity time
range through sub-selects, which the planner estimates at a handful of rows, so it joins the
per-entity-row CTEs with nested loops, quadratic in the entity rows (20 000 rows: minutes; 1 M:
days). The full run is therefore made with nested loops turned off for the benchmark's database
(``ALTER DATABASE ... SET enable_nestloop = off``; hash and merge joins instead), and Feast with
the default planner is timed on a sample of ``--default-planner-rows`` entity rows, so both are on
record. To show where Feast's time goes, the entity rows are then uploaded alone with Feast's own
``df_to_postgres_table``, Postgres executes Feast's SQL on them under ``EXPLAIN ANALYZE`` (server
time, no transfer), and Feast is timed once more with the entity rows given as SQL (already in
Postgres, nothing uploaded). The target is Feast's seconds <= 2x DuckDB's join; results go to
``bench/results/pit_retrieval.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from feast import FeatureService, FeatureStore
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import EntitySelectMode
from feast.infra.utils.postgres.connection_utils import df_to_postgres_table

from bench import machine, markdown_table, peak_rss_mb, write_results
from bench.online_lookup import bench_settings, create_database, write_gold
from taobao_assets.assets.gold import LONGEST_WINDOW
from taobao_assets.assets.serving import LABELS, TRAINING_SERVICE, entity_frame, join_keys
from taobao_assets.feast_repo import FeastRepo, generated_repo
from taobao_assets.feature_tables import PG_TYPES, TIMESTAMP_FIELD
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.settings import get_settings
from taobao_assets.source.event_time import EventTimeConfig, Timeline
from taobao_assets.source.generate import GeneratorConfig, _Sessions, _sigmoid, _World

TARGET_RATIO = 2.0
#: Where the breakdown uploads the entity rows (the offline store's ``db_schema``).
ENTITY_TABLE = "pit_entity_rows"
ROW_ID = "sample_id"
#: The planner setting the full run turns off (see the module docstring).
NESTLOOP = "enable_nestloop"
#: Writing "5" here restarts the process' peak RSS (VmHWM) at its current RSS (Linux).
CLEAR_REFS = Path("/proc/self/clear_refs")
Keys = dict[str, dict[str, list[tuple[int, ...]]]]


def impressions(rows: int, days: int, seed: int) -> pd.DataFrame:
    """``rows`` impressions of the generator's world: ids as silver has them, event time, labels."""
    config = GeneratorConfig(rows=rows, seed=seed, event_time=EventTimeConfig(days=days))
    world = _World(config)
    sessions = _Sessions.draw(config, world)
    users = np.repeat(sessions.users, sessions.sizes)
    rng = np.random.default_rng(seed)
    items, _, _, logits = world.impressions(rng, users)
    clicks = rng.random(rows) < _sigmoid(world.base_logit + logits)
    conversions = clicks & (rng.random(rows) < world.conversion_probability(items))
    timeline = Timeline(config.event_time, rows, 0)
    return pd.DataFrame({
        ROW_ID: np.arange(rows),
        "user_id": world.ids["101"][users],
        "item_id": world.ids["205"][items],
        "category_id": world.ids["206"][world.item_category[items]],
        TIMESTAMP_FIELD: pd.to_datetime([timeline.timestamp_ms(i) for i in range(rows)], unit="ms", utc=True),
        "click": clicks.astype(np.int64),
        "conversion": conversions.astype(np.int64),
    })


def gold_keys(rows: pd.DataFrame, repo: FeastRepo) -> Keys:
    """Per day, per view of the service: the entities gold holds at the day's end (seen in its window)."""
    days = rows[TIMESTAMP_FIELD].dt.date
    keys: Keys = {}
    for day in sorted(days.unique()):
        window = rows[(days <= day) & (days > day - timedelta(days=LONGEST_WINDOW))]
        keys[day.isoformat()] = {}
        for projection in repo.service(TRAINING_SERVICE).feature_view_projections:
            columns = [c.name for c in repo.view(projection.name).entity_columns]
            seen = window[columns].drop_duplicates()
            keys[day.isoformat()][projection.name] = list(zip(*(seen[c].tolist() for c in columns), strict=True))
    return keys


def load_duckdb(con: duckdb.DuckDBPyConnection, postgres: PostgresResource, service: FeatureService,
                entities: pd.DataFrame, folder: Path) -> None:
    """The service's gold tables (Postgres ``COPY`` to CSV, DuckDB ``read_csv``) and the entity rows."""
    tables = {t.name: t for t in GOLD_TABLES}
    for projection in service.feature_view_projections:
        table = tables[projection.name]
        path = folder / f"{table.name}.csv"
        with postgres.connect() as conn, conn.cursor() as cur, path.open("wb") as out:
            cur.copy_expert(f"COPY {table.qualified_name} TO STDOUT WITH (FORMAT csv, HEADER)", out)
        types = ", ".join(f"'{c.name}': '{PG_TYPES[c.dtype]}'" for c in table.columns)
        con.execute(f"CREATE OR REPLACE TABLE {table.name} AS "
                    f"SELECT * FROM read_csv('{path}', header = true, columns = {{{types}}})")
    con.register("entity_frame", entities)
    con.execute("CREATE OR REPLACE TABLE entities AS SELECT * FROM entity_frame")
    con.unregister("entity_frame")


def asof_sql(repo: FeastRepo, service: FeatureService) -> str:
    """Feast's point-in-time rule as ASOF joins: per view the latest row at or before the entity
    time, whose features count only if that row is within the view's TTL (else nulls)."""
    columns, joins = [], []
    for i, projection in enumerate(service.feature_view_projections):
        view, alias = repo.view(projection.name), f"v{i}"
        on = " AND ".join(f"e.{c.name} = {alias}.{c.name}" for c in view.entity_columns)
        joins.append(f"ASOF LEFT JOIN {view.name} {alias} ON {on} AND e.{TIMESTAMP_FIELD} >= {alias}.{TIMESTAMP_FIELD}")
        ttl = int(view.ttl.total_seconds()) if view.ttl else 0
        # A TTL of 0 means none (Feast); without a match the timestamp is null and so is the CASE.
        fresh = (f"{alias}.{TIMESTAMP_FIELD} >= e.{TIMESTAMP_FIELD} - INTERVAL {ttl} SECOND" if ttl
                 else f"{alias}.{TIMESTAMP_FIELD} IS NOT NULL")
        columns += [f'CASE WHEN {fresh} THEN {alias}.{f.name} END AS "{view.name}__{f.name}"'
                    for f in projection.features]
    return f"SELECT e.*, {', '.join(columns)} FROM entities e {' '.join(joins)}"


def feature_names(service: FeatureService) -> list[str]:
    return [f"{p.name}__{f.name}" for p in service.feature_view_projections for f in p.features]


def compare(feast_frame: pd.DataFrame, duck_frame: pd.DataFrame, service: FeatureService) -> dict[str, Any]:
    """Whether both training sets hold the same rows and, cell by cell, the same features (nulls equal).

    Only DuckDB's rows of the entity rows Feast was given count (Feast may have had a sample).
    """
    a = feast_frame.sort_values(ROW_ID, ignore_index=True)
    b = duck_frame[duck_frame[ROW_ID].isin(a[ROW_ID])].sort_values(ROW_ID, ignore_index=True)
    same_rows = len(a) == len(b) and bool(np.array_equal(a[ROW_ID].to_numpy(), b[ROW_ID].to_numpy()))
    differing: dict[str, int] = {}
    if same_rows:
        for name in feature_names(service):
            x = a[name].to_numpy(dtype="float64", na_value=np.nan)
            y = b[name].to_numpy(dtype="float64", na_value=np.nan)
            count = int((~((x == y) | (np.isnan(x) & np.isnan(y)))).sum())
            if count:
                differing[name] = count
    coverage = {p.name: {"feast": int(a[f"{p.name}__{p.features[0].name}"].notna().sum()),
                         "duckdb": int(b[f"{p.name}__{p.features[0].name}"].notna().sum())}
                for p in service.feature_view_projections}
    return {
        "rows_feast": len(a), "rows_duckdb": len(b), "same_rows": same_rows,
        "cells_compared": len(a) * len(feature_names(service)) if same_rows else 0,
        "cells_differing": sum(differing.values()), "columns_differing": differing,
        "rows_with_features": coverage,
        "agree": same_rows and not differing,
    }


def feast_breakdown(feast: FeastResource, store: FeatureStore, service: FeatureService,
                    entities: pd.DataFrame) -> dict[str, float]:
    """Feast's time in parts: entity upload, Postgres executing the point-in-time SQL, and the
    whole call with the entity rows given as SQL (nothing to upload)."""
    postgres = feast.postgres
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {ENTITY_TABLE}")
    t0 = time.perf_counter()
    df_to_postgres_table(store.config.offline_store, entities, ENTITY_TABLE)
    upload_s = time.perf_counter() - t0
    entity_sql = f"SELECT * FROM {ENTITY_TABLE}"
    # Embedded, the SQL reads the uploaded table itself (no temporary copy) and can be run on its own.
    config = feast.repo_config()
    config.offline_store.entity_select_mode = EntitySelectMode.embed_query
    pit_sql = FeatureStore(repo_path=feast.repo_path, config=config).get_historical_features(
        entity_df=entity_sql, features=service, full_feature_names=True).to_sql()
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {pit_sql}")
        query_s = cur.fetchone()[0][0]["Execution Time"] / 1000
    sql_entities_s, frame = timed_feast(store, service, entity_sql)
    rows = len(frame)
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE {ENTITY_TABLE}")
    if rows != len(entities):
        raise RuntimeError(f"Feast with entity rows as SQL returned {rows} rows for {len(entities)} entity rows")
    return {"entity_upload_s": round(upload_s, 2), "postgres_pit_query_s": round(query_s, 2),
            "sql_entity_rows_s": round(sql_entities_s, 2)}


def restart_peak_rss() -> float:
    """Restart the peak RSS at the current RSS, so the next :func:`peak_rss_mb` is one stage's; returns it.

    Without the Linux file the peak keeps counting from the start: an upper bound of the stage's.
    """
    if CLEAR_REFS.exists():
        CLEAR_REFS.write_text("5")
    return round(peak_rss_mb(), 1)


def _timing(seconds: float, rows: int) -> dict[str, float]:
    return {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}


def set_planner(postgres: PostgresResource, fixed: bool) -> None:
    """Nested loops off (``fixed``) or back to the server default for new connections to the
    benchmark's database (Feast opens one per query)."""
    change = f"SET {NESTLOOP} = off" if fixed else f"RESET {NESTLOOP}"
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{postgres.database}" {change}')


def timed_feast(store: FeatureStore, service: FeatureService, entities: pd.DataFrame | str
                ) -> tuple[float, pd.DataFrame]:
    """Seconds of ``get_historical_features(...).to_df()`` for ``entities`` (a DataFrame or SQL), and the frame."""
    t0 = time.perf_counter()
    frame = store.get_historical_features(entity_df=entities, features=service, full_feature_names=True).to_df()
    return time.perf_counter() - t0, frame


def run(rows: int, days: int, seed: int, default_planner_rows: int) -> dict[str, Any]:
    settings = bench_settings(get_settings(), "pit")
    create_database(settings)
    feast = FeastResource.from_settings(settings)
    set_planner(feast.postgres, fixed=False)
    repo = generated_repo()
    t0 = time.perf_counter()
    drawn = impressions(rows, days, seed)
    gold_rows = write_gold(feast.postgres, gold_keys(drawn, repo), np.random.default_rng(seed))
    feast.apply(repo.contents())
    setup_s = time.perf_counter() - t0
    rss: dict[str, float] = {"setup_peak": round(peak_rss_mb(), 1), "duckdb_start": restart_peak_rss()}
    keys = join_keys(repo, TRAINING_SERVICE)
    entities = entity_frame(drawn[[ROW_ID, *keys, TIMESTAMP_FIELD, *LABELS]], keys)
    store = feast.store()
    service = store.get_feature_service(TRAINING_SERVICE)

    con = duckdb.connect()
    with tempfile.TemporaryDirectory(dir=settings.state_dir) as folder:
        t0 = time.perf_counter()
        load_duckdb(con, feast.postgres, service, entities, Path(folder))
        load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    duck_frame = con.execute(asof_sql(repo, service)).df()
    join_s = time.perf_counter() - t0
    con.close()
    rss["duckdb_peak"] = round(peak_rss_mb(), 1)

    # A sample spread over the whole time line (the first rows would all precede the first gold day).
    sample = entities.iloc[::max(1, rows // default_planner_rows)].head(default_planner_rows)
    default_s, default_frame = timed_feast(store, service, sample)
    default_agreement = compare(default_frame, duck_frame, service)
    del default_frame
    try:
        set_planner(feast.postgres, fixed=True)
        rss["feast_start"] = restart_peak_rss()
        feast_s, feast_frame = timed_feast(store, service, entities)
        rss["feast_peak"] = round(peak_rss_mb(), 1)
        agreement = compare(feast_frame, duck_frame, service)
        del feast_frame, duck_frame
        breakdown = feast_breakdown(feast, store, service, entities)
    finally:
        set_planner(feast.postgres, fixed=False)
    ratio = feast_s / join_s
    return {
        "benchmark": "pit_retrieval",
        "service": TRAINING_SERVICE,
        "entity_rows": rows,
        "days": days,
        "features": len(feature_names(service)),
        "views": len(service.feature_view_projections),
        "distinct_entities": {k: int(drawn[k].nunique()) for k in keys},
        "gold_rows": {name: count for name, count in gold_rows.items() if count},
        "setup_s": round(setup_s, 1),
        "feast": {**_timing(feast_s, rows), "postgres_setting": f"{NESTLOOP} = off", "breakdown": breakdown},
        "feast_default_planner": {**_timing(default_s, len(sample)), "entity_rows": len(sample),
                                  "agree": default_agreement["agree"]},
        "duckdb": {**_timing(join_s, rows), "load_s": round(load_s, 2)},
        "ratio_feast_vs_duckdb": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
        "agreement": agreement,
        "peak_rss_mb": rss,
        "machine": machine(),
    }


def markdown(result: dict[str, Any]) -> str:
    feast, duck, parts = result["feast"], result["duckdb"], result["feast"]["breakdown"]
    default = result["feast_default_planner"]
    rows = result["entity_rows"]
    fetch_s = feast["seconds"] - parts["entity_upload_s"] - parts["postgres_pit_query_s"]
    table = markdown_table(["path", "entity rows", "seconds", "entity rows/s"], [
        ["DuckDB ASOF LEFT JOIN to pandas (reference)", rows, duck["seconds"], duck["rows_per_s"]],
        [f"Feast get_historical_features(DataFrame).to_df(), {feast['postgres_setting']}", rows,
         feast["seconds"], feast["rows_per_s"]],
        ["- of which entity upload (Feast's df_to_postgres_table, alone)", rows, parts["entity_upload_s"], ""],
        ["- of which Postgres runs Feast's PIT SQL (EXPLAIN ANALYZE)", rows, parts["postgres_pit_query_s"], ""],
        ["- rest: transfer, row-by-row Python to Arrow to pandas", rows, round(fetch_s, 2), ""],
        ["Feast, entity rows as SQL (already in Postgres)", rows, parts["sql_entity_rows_s"],
         round(rows / parts["sql_entity_rows_s"])],
        ["Feast, Postgres default planner (sample; quadratic)", default["entity_rows"], default["seconds"],
         default["rows_per_s"]],
        ["DuckDB load: gold COPY from Postgres + entity rows (not in the ratio)", rows, duck["load_s"], ""],
    ])
    agreement = result["agreement"]
    verdict = ("agree: same rows, every feature equal" if agreement["agree"] else
               f"DISAGREE: same rows {agreement['same_rows']}, {agreement['cells_differing']} cells differ "
               f"({agreement['columns_differing']})")
    rss = result["peak_rss_mb"]
    coverage = {k: v["feast"] for k, v in agreement["rows_with_features"].items()}
    return (
        "## Point-in-time training set (bench/pit_retrieval.py)\n\n"
        f"`{result['service']}`: {result['features']} features from {result['views']} views for {rows:,} "
        f"impressions over {result['days']} days (distinct {result['distinct_entities']}); gold rows "
        f"{result['gold_rows']}.\n\n" + table
        + f"\nFeast / DuckDB join = **{result['ratio_feast_vs_duckdb']}** (target <= {result['target_ratio']}, "
        f"{'met' if result['met'] else 'missed'}). Feast and DuckDB {verdict} "
        f"({agreement['cells_compared']:,} cells compared; rows with features per view {coverage}); "
        f"on the default-planner sample they {'agree' if default['agree'] else 'DISAGREE'}. "
        f"With Postgres' default planner Feast's SQL joins its per-row CTEs in nested loops (the views' "
        f"time-range filters are estimated at a few rows), so its time grows with the square of the "
        f"entity rows; the full run sets `{feast['postgres_setting']}` on the benchmark's database. "
        f"Peak RSS of the process: setup {rss['setup_peak']} MB; DuckDB load and join {rss['duckdb_peak']} MB "
        f"(from {rss['duckdb_start']} MB); Feast {rss['feast_peak']} MB (from {rss['feast_start']} MB, "
        f"DuckDB's result held for the comparison). "
        f"Machine: {result['machine']['cpus']} CPUs, load average {result['machine']['load_average']}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pit_retrieval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="entity rows (impressions)")
    parser.add_argument("--days", type=int, default=7, help="days the impressions and gold snapshots span")
    parser.add_argument("--default-planner-rows", type=int, default=10_000,
                        help="entity rows Feast is timed on with Postgres' default planner (quadratic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.rows, args.days, args.seed, args.default_planner_rows)
    json_path, md_path = write_results("pit_retrieval", result, markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
