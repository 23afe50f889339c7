"""Point-in-time training set: the platform's offline store against a DuckDB ASOF join (docs/architecture.md).

``python -m bench.pit_retrieval [--rows 1000000] [--days 7] [--repeat 3]`` draws ``rows``
impressions as the synthetic generator does (sessions of Zipf-popular users, items partly from the
user's preferred categories, labels from the click model, the simulated event time spread over
``days`` days), and writes, into its own database ``<db>_pit`` and Feast project ``pit``, the gold
rows of the ``ctr_model_v1`` views at the end of each day: random values (of the declared
contracts) for every user, item, category and user x category seen in the impressions of the
7-day window up to that day, as gold holds them. It applies the generated Feast repository and
then builds the training set of all impressions two ways, ``--repeat`` times each, alternating
which goes first:

- ``platform``: ``get_historical_features(entity rows as a DataFrame, feature service).to_df()``
  with the platform's offline store (:mod:`taobao_assets.offline_store`), as the ``training_set``
  asset does: entity rows copied to Postgres, one index probe per view and row, result copied out;
- ``duckdb``: the reference. The same gold rows are copied out of Postgres and loaded into DuckDB
  with the entity rows, then one ``ASOF LEFT JOIN`` per view keeps a row's features only within
  the view's TTL (Feast's rule: the latest row with ``event_timestamp <= t`` and ``>= t - ttl``),
  to pandas.

Both timers include the loads (entity rows in, gold rows or results out) and end with a pandas
frame. The two frames are compared cell by cell (every feature of every row, nulls equal); whether
they agree is a result, not an assertion. Peak RSS is measured per side as the growth of the
process's high-water mark during the call.

Feast's stock Postgres store is timed for context on a sample of ``--stock-rows`` entity rows, with
nested loops turned off for the benchmark's database (without that, Postgres plans its SQL in
nested loops, quadratic in the entity rows) and, on ``--default-planner-rows``, with the default
planner; the platform's store runs on the same samples, and its results are compared with the
stock store's. The headline is the platform's seconds over DuckDB's (medians), target
:data:`TARGET_RATIO`; results go to ``bench/results/pit_retrieval.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from feast import FeatureService, FeatureStore

from bench import Spread, machine, markdown_table, peak_rss_mb, write_results
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

TARGET_RATIO = 1.5
#: Peak RSS growth of the platform's call over DuckDB's.
TARGET_RSS_RATIO = 2.0
SIDES = ("platform", "duckdb")
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


def compare(found: pd.DataFrame, reference: pd.DataFrame, service: FeatureService) -> dict[str, Any]:
    """Whether both training sets hold the same rows and, cell by cell, the same features (nulls equal).

    Only the reference's rows of the entity rows ``found`` has count (it may be of a sample).
    """
    a = found.sort_values(ROW_ID, ignore_index=True)
    b = reference[reference[ROW_ID].isin(a[ROW_ID])].sort_values(ROW_ID, ignore_index=True)
    same_rows = len(a) == len(b) and bool(np.array_equal(a[ROW_ID].to_numpy(), b[ROW_ID].to_numpy()))
    differing: dict[str, int] = {}
    if same_rows:
        for name in feature_names(service):
            x = a[name].to_numpy(dtype="float64", na_value=np.nan)
            y = b[name].to_numpy(dtype="float64", na_value=np.nan)
            count = int((~((x == y) | (np.isnan(x) & np.isnan(y)))).sum())
            if count:
                differing[name] = count
    coverage = {p.name: {"found": int(a[f"{p.name}__{p.features[0].name}"].notna().sum()),
                         "reference": int(b[f"{p.name}__{p.features[0].name}"].notna().sum())}
                for p in service.feature_view_projections}
    return {
        "rows_found": len(a), "rows_reference": len(b), "same_rows": same_rows,
        "cells_compared": len(a) * len(feature_names(service)) if same_rows else 0,
        "cells_differing": sum(differing.values()), "columns_differing": differing,
        "rows_with_features": coverage,
        "agree": same_rows and not differing,
    }


def restart_peak_rss() -> float:
    """Restart the peak RSS at the current RSS, so the next :func:`peak_rss_mb` is one stage's; returns it.

    Without the Linux file the peak keeps counting from the start: an upper bound of the stage's.
    """
    if CLEAR_REFS.exists():
        CLEAR_REFS.write_text("5")
    return peak_rss_mb()


def set_planner(postgres: PostgresResource, fixed: bool) -> None:
    """Nested loops off (``fixed``) or back to the server default for new connections to the
    benchmark's database (Feast opens one per query)."""
    change = f"SET {NESTLOOP} = off" if fixed else f"RESET {NESTLOOP}"
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{postgres.database}" {change}')


@dataclass(frozen=True)
class Timed:
    """One call: wall seconds and the growth of the process's peak RSS during it (MB)."""

    seconds: float
    rss_growth_mb: float


def timed(call: Callable[[], pd.DataFrame]) -> tuple[Timed, pd.DataFrame]:
    start_mb = restart_peak_rss()
    t0 = time.perf_counter()
    frame = call()
    seconds = time.perf_counter() - t0
    return Timed(seconds, peak_rss_mb() - start_mb), frame


def feast_frame(store: FeatureStore, service: FeatureService, entities: pd.DataFrame) -> pd.DataFrame:
    return store.get_historical_features(entity_df=entities, features=service, full_feature_names=True).to_df()


def duckdb_frame(postgres: PostgresResource, service: FeatureService, entities: pd.DataFrame, repo: FeastRepo,
                 folder: Path) -> pd.DataFrame:
    """The reference, loads included: gold rows copied out of Postgres into DuckDB, then the ASOF join."""
    con = duckdb.connect()
    try:
        load_duckdb(con, postgres, service, entities, folder)
        return con.execute(asof_sql(repo, service)).df()
    finally:
        con.close()


def summary(runs: list[Timed], rows: int) -> dict[str, Any]:
    seconds = Spread.of([r.seconds for r in runs])
    return {"runs": [asdict(r) for r in runs], "seconds": asdict(seconds), "rows_per_s": rows / seconds.median,
            "rss_growth_mb": asdict(Spread.of([r.rss_growth_mb for r in runs]))}


def stock_context(feast: FeastResource, platform: FeatureStore, service: FeatureService, entities: pd.DataFrame,
                  rows: int, nested_loops: bool, repeat: int) -> dict[str, Any]:
    """Feast's stock store and the platform's on a sample of ``rows`` entity rows spread over the time line."""
    sample = entities.iloc[::max(1, len(entities) // rows)].head(rows)
    stock = feast.store_with(offline_store={"type": "postgres"})
    stock_service = stock.get_feature_service(TRAINING_SERVICE)
    set_planner(feast.postgres, fixed=not nested_loops)
    try:
        stock_runs, platform_runs = [], []
        for _ in range(repeat):
            run, stock_result = timed(lambda: feast_frame(stock, stock_service, sample))
            stock_runs.append(run)
            run, platform_result = timed(lambda: feast_frame(platform, service, sample))
            platform_runs.append(run)
    finally:
        set_planner(feast.postgres, fixed=False)
    return {"entity_rows": len(sample), "planner": "default" if nested_loops else f"{NESTLOOP} = off",
            "stock": summary(stock_runs, len(sample)), "platform": summary(platform_runs, len(sample)),
            "agreement": compare(platform_result, stock_result, service)}


@dataclass(frozen=True)
class Setup:
    """A benchmark's own database and Feast project with the gold of ``rows`` impressions, and the
    entity rows of those impressions."""

    feast: FeastResource
    repo: FeastRepo
    entities: pd.DataFrame
    gold_rows: dict[str, int]
    seconds: float

    @classmethod
    def make(cls, name: str, rows: int, days: int, seed: int) -> Setup:
        settings = bench_settings(get_settings(), name)
        create_database(settings)
        feast = FeastResource.from_settings(settings)
        set_planner(feast.postgres, fixed=False)
        repo = generated_repo()
        t0 = time.perf_counter()
        drawn = impressions(rows, days, seed)
        gold_rows = write_gold(feast.postgres, gold_keys(drawn, repo), np.random.default_rng(seed))
        feast.apply(repo.contents())
        keys = join_keys(repo, TRAINING_SERVICE)
        entities = entity_frame(drawn[[ROW_ID, *keys, TIMESTAMP_FIELD, *LABELS]], keys)
        return cls(feast, repo, entities, {k: v for k, v in gold_rows.items() if v}, time.perf_counter() - t0)


def run(rows: int, days: int, seed: int, repeat: int, stock_rows: int, default_planner_rows: int) -> dict[str, Any]:
    setup = Setup.make("pit", rows, days, seed)
    setup_rss = round(peak_rss_mb(), 1)
    feast, repo, entities = setup.feast, setup.repo, setup.entities
    keys = join_keys(repo, TRAINING_SERVICE)
    store = feast.store()
    service = store.get_feature_service(TRAINING_SERVICE)

    runs: dict[str, list[Timed]] = {"platform": [], "duckdb": []}
    agreement: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=get_settings().state_dir) as folder:
        sides: dict[str, Callable[[], pd.DataFrame]] = {
            "platform": lambda: feast_frame(store, service, entities),
            "duckdb": lambda: duckdb_frame(feast.postgres, service, entities, repo, Path(folder)),
        }
        for i in range(repeat):
            frames = {}
            for side in (SIDES if i % 2 == 0 else SIDES[::-1]):
                timing, frames[side] = timed(sides[side])
                runs[side].append(timing)
            agreement = compare(frames["platform"], frames["duckdb"], service)
            del frames
    figures = {side: summary(side_runs, rows) for side, side_runs in runs.items()}
    ratio = figures["platform"]["seconds"]["median"] / figures["duckdb"]["seconds"]["median"]
    rss_ratio = figures["platform"]["rss_growth_mb"]["median"] / figures["duckdb"]["rss_growth_mb"]["median"]
    context = [stock_context(feast, store, service, entities, stock_rows, nested_loops=False, repeat=repeat),
               stock_context(feast, store, service, entities, default_planner_rows, nested_loops=True,
                             repeat=repeat)] if stock_rows else []
    return {
        "benchmark": "pit_retrieval",
        "service": TRAINING_SERVICE,
        "entity_rows": rows,
        "days": days,
        "repeat": repeat,
        "features": len(feature_names(service)),
        "views": len(service.feature_view_projections),
        "distinct_entities": {k: int(entities[k].nunique()) for k in keys},
        "gold_rows": setup.gold_rows,
        "setup": {"seconds": round(setup.seconds, 1), "peak_rss_mb": setup_rss},
        **figures,
        "ratio_platform_vs_duckdb": ratio,
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
        "rss_ratio_platform_vs_duckdb": rss_ratio,
        "target_rss_ratio": TARGET_RSS_RATIO,
        "rss_met": rss_ratio <= TARGET_RSS_RATIO,
        "agreement": agreement,
        "stock_feast": context,
        "machine": machine(),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = result["entity_rows"]

    def line(name: str, side: dict[str, Any], entity_rows: int) -> list[Any]:
        seconds, rss = Spread(**side["seconds"]), Spread(**side["rss_growth_mb"])
        return [name, f"{entity_rows:,}", seconds.text(".2f"), f"{side['rows_per_s']:,.0f}", rss.text(",.0f")]

    lines = [line("DuckDB: gold COPY out of Postgres, load, ASOF LEFT JOIN, to pandas (reference)", result["duckdb"],
                  rows),
             line("platform store: get_historical_features(DataFrame).to_df()", result["platform"], rows)]
    for context in result["stock_feast"]:
        n = context["entity_rows"]
        lines += [line(f"Feast's stock Postgres store, {context['planner']} (sample)", context["stock"], n),
                  line("platform store, same sample", context["platform"], n)]
    table = markdown_table(["path", "entity rows", "seconds, median (min-max)", "entity rows/s",
                            "peak RSS growth MB, median (min-max)"], lines)
    agreement = result["agreement"]
    verdict = ("agree: same rows, every feature equal" if agreement["agree"] else
               f"DISAGREE: same rows {agreement['same_rows']}, {agreement['cells_differing']} cells differ "
               f"({agreement['columns_differing']})")
    coverage = {k: v["found"] for k, v in agreement["rows_with_features"].items()}
    stock = ". ".join(
        f"On the {c['entity_rows']:,}-row sample ({c['planner']}) the stock store and the platform's "
        f"{'agree' if c['agreement']['agree'] else 'DISAGREE'}, stock / platform = "
        f"{c['stock']['seconds']['median'] / c['platform']['seconds']['median']:.1f}x"
        for c in result["stock_feast"])
    machine_ = result["machine"]
    return (
        "## Point-in-time training set (bench/pit_retrieval.py)\n\n"
        f"`{result['service']}`: {result['features']} features from {result['views']} views for {rows:,} "
        f"impressions over {result['days']} days (distinct {result['distinct_entities']}); gold rows "
        f"{result['gold_rows']}. {result['repeat']} runs per side, alternating which goes first; both timers "
        f"include the loads and end with a pandas frame.\n\n" + table
        + f"\nPlatform / DuckDB = **{result['ratio_platform_vs_duckdb']:.3f}** in seconds (target <= "
        f"{result['target_ratio']}, {'met' if result['met'] else 'missed'}) and "
        f"**{result['rss_ratio_platform_vs_duckdb']:.3f}** in peak RSS growth (target <= "
        f"{result['target_rss_ratio']}, {'met' if result['rss_met'] else 'missed'}). The platform's store and "
        f"DuckDB {verdict} ({agreement['cells_compared']:,} cells compared; rows with features per view "
        f"{coverage}). {stock}. Setup (drawing the impressions, writing gold, applying the registry) "
        f"{result['setup']['seconds']} s, not timed. "
        f"Machine: {machine_['cpus']} CPUs, load average {machine_['load_average']}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pit_retrieval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="entity rows (impressions)")
    parser.add_argument("--days", type=int, default=7, help="days the impressions and gold snapshots span")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (the figures are medians)")
    parser.add_argument("--stock-rows", type=int, default=100_000,
                        help="entity rows Feast's stock store is timed on, nested loops off (0: skip the stock runs)")
    parser.add_argument("--default-planner-rows", type=int, default=5_000,
                        help="entity rows Feast's stock store is timed on with Postgres' default planner (quadratic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeat < 3:
        parser.error("--repeat must be at least 3: the figures are medians")
    result = run(args.rows, args.days, args.seed, args.repeat, args.stock_rows, args.default_planner_rows)
    json_path, md_path = write_results("pit_retrieval", result, markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
