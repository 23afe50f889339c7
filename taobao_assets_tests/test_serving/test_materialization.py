"""The Postgres-to-Redis engine leaves Redis and the registry exactly as Feast's own materialization does.

The same gold rows (with nulls, NaN, infinities, negative numbers, entities that come and go over
three days, and the user x category view) are materialized by stock Feast into one Feast project
and by :class:`~taobao_assets.online_materialization.PostgresRedisEngine` into another, in the
order the daily asset may run them: a day, the next, an older one (which must not overwrite newer
rows), then the newest again after its gold was recomputed. For that re-run the engine rewrites
the rows stamped with the day's own time (``rewrite_same_time``, as the asset runs it); on the
stock side the recomputed rows' marks are removed first, one ``HGET`` and ``HDEL`` per key, so that
Feast writes them. After each step every Redis hash of the two projects is compared, field by field
and byte by byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from psycopg2.extras import execute_values

from taobao_assets.assets.serving import gold_views
from taobao_assets.feast_repo import FeastRepo, generated_repo
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.io_managers.postgres import create_table_sql
from taobao_assets.online_layout import redis_key
from taobao_assets.online_materialization import PostgresRedisEngine, _ViewPlan
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.feast import FeastResource
from taobao_assets.settings import Settings
from taobao_assets_tests.conftest import ensure_running
from taobao_assets_tests.test_serving.conftest import DAYS

Hashes = dict[bytes, dict[bytes, bytes]]
#: Where the gold of the newest day is recomputed for the re-run: these entities of each table.
REGOLD = slice(0, None, 3)


@pytest.fixture(scope="module")
def mat_settings(settings: Settings, redis_service: Any) -> Settings:
    """A database of the module's own: its gold has values the pipeline never writes (nulls, NaN)."""
    own = dataclasses.replace(settings, postgres_db=f"{settings.postgres_db}_materialization")
    ensure_running("postgres", own)  # creates the database if it is new
    return own


def _values(dtype: str, rows: int, rng: np.random.Generator) -> list[Any]:
    """Random cells of a gold column: negatives, nulls, and for doubles NaN, infinities and -0.0.

    Integers stay within 2**53: Feast passes an integer column with a null through float64.
    """
    if dtype == "int64":
        values: list[Any] = rng.integers(-(2**40), 2**40, rows).tolist()
    else:
        values = rng.normal(0, 1e3, rows).tolist()
        specials = [float("nan"), float("inf"), -float("inf"), -0.0, 0.0]
        values = [specials[i % 5] if rng.random() < 0.1 else v for i, v in enumerate(values)]
    return [None if rng.random() < 0.08 else v for v in values]


def _day(table: GoldTable, day: str, rng: np.random.Generator) -> pd.DataFrame:
    """About two thirds of 60 entities (user x category: of 8 x 8 pairs), present on a day at random."""
    if len(table.keys) == 2:
        ids = [(u, c) for u in range(1, 9) for c in (3, 5, 7, 23, 31, 37, 41, 43) if rng.random() < 0.66]
    else:
        ids = [(i,) for i in range(-5, 55) if rng.random() < 0.66]  # negative ids too
    frame = pd.DataFrame(ids, columns=table.key_names)
    frame[TIMESTAMP_FIELD] = end_of_day(day)
    for column in table.features:
        frame[column.name] = pd.Series(_values(column.dtype, len(frame), rng), dtype=object)
    return frame[[c.name for c in table.columns]]


def _write(resource: FeastResource, frames: dict[str, pd.DataFrame], truncate: bool) -> None:
    with resource.postgres.connect() as conn, conn.cursor() as cur:
        for table in GOLD_TABLES:
            cur.execute(create_table_sql(table), (table.description,))
            if truncate:
                cur.execute(f"TRUNCATE {table.qualified_name}")
            frame = frames[table.name]
            execute_values(
                cur, f"INSERT INTO {table.qualified_name} ({', '.join(frame.columns)}) VALUES %s "
                     f"ON CONFLICT ({', '.join([*table.key_names, TIMESTAMP_FIELD])}) DO UPDATE SET "
                     + ", ".join(f"{c.name} = EXCLUDED.{c.name}" for c in table.features),
                [tuple(r) for r in frame.itertuples(index=False)])


def _store(resource: FeastResource, engine: bool) -> FeatureStore:
    """The online store asset's store (the engine, rewriting the day's own rows), or one that
    materializes with Feast's local engine."""
    return (resource.store_with(batch_engine={"rewrite_same_time": True}) if engine
            else resource.store_with(batch_engine={"type": "local"}))


def _reopen(resource: FeastResource, view: str, join_keys: list[str], rows: Sequence[Sequence[Any]],
            stamp: datetime) -> None:
    """Remove the ``_ts`` mark of each entity of ``rows`` whose stored row of ``view`` is exactly
    ``stamp``, so that Feast's next write of it lands (Feast skips one that is not newer)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    expected = Timestamp()
    expected.FromDatetime(stamp)
    client: Any = resource.redis.client()
    mark = f"_ts:{view}"
    for row in rows:
        key = redis_key(resource.project, join_keys, row)
        stored = client.hget(key, mark)
        if stored is not None and Timestamp.FromString(stored) == expected:
            client.hdel(key, mark)


def _hashes(resource: FeastResource) -> Hashes:
    """Every hash of the project, keyed without the project suffix."""
    client: Any = resource.redis.client()
    suffix = resource.project.encode()
    keys = list(client.scan_iter(match=b"*" + suffix, count=10_000))
    return {key[:-len(suffix)]: client.hgetall(key) for key in keys}


@dataclasses.dataclass
class History:
    """The Redis hashes of both projects after each step, and the stores that made them."""

    steps: dict[str, tuple[Hashes, Hashes]]
    stores: tuple[FeatureStore, FeatureStore]
    regolded: dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def history(mat_settings: Settings) -> History:
    repo = generated_repo()
    rng = np.random.default_rng(15)
    frames = {t.name: {day: _day(t, day, rng) for day in DAYS} for t in GOLD_TABLES}
    base = FeastResource.from_settings(mat_settings)
    _write(base, {name: pd.concat(days.values(), ignore_index=True) for name, days in frames.items()}, truncate=True)
    resources = tuple(FeastResource.from_settings(dataclasses.replace(
        mat_settings, feast_project=f"{mat_settings.feast_project}_mat_{side}")) for side in ("stock", "engine"))
    for resource in resources:
        client: Any = resource.redis.client()
        for key in client.scan_iter(match=b"*" + resource.project.encode(), count=10_000):
            client.delete(key)
        resource.apply(repo.contents())
    stores = (_store(resources[0], engine=False), _store(resources[1], engine=True))
    views = gold_views(repo)

    def materialize(day: str) -> tuple[Hashes, Hashes]:
        for store in stores:
            with contextlib.redirect_stdout(io.StringIO()):
                store.materialize(start_date=end_of_day(day), end_date=end_of_day(day), feature_views=views)
        return _hashes(resources[0]), _hashes(resources[1])

    steps = {name: materialize(day) for name, day in [("second day", DAYS[1]), ("third day", DAYS[2]),
                                                        ("first day, older", DAYS[0])]}
    # The newest day's gold recomputed for some entities; on the stock side their marks are removed.
    regolded = {}
    for table in GOLD_TABLES:
        changed = frames[table.name][DAYS[2]].iloc[REGOLD].copy()
        for column in table.features:
            changed[column.name] = pd.Series(_values(column.dtype, len(changed), rng), dtype=object,
                                             index=changed.index)
        regolded[table.name] = changed
    _write(base, regolded, truncate=False)
    for name, changed in regolded.items():
        keys = [c.name for c in repo.view(name).entity_columns]
        _reopen(resources[0], name, keys, changed[keys].values.tolist(), end_of_day(DAYS[2]))
    steps["third day again, regolded"] = materialize(DAYS[2])
    return History(steps, stores, regolded)


def test_every_step_leaves_the_same_bytes_as_stock_feast(history: History) -> None:
    for step, (stock, engine) in history.steps.items():
        assert stock, step
        assert engine.keys() == stock.keys(), step
        for key, fields in stock.items():
            assert engine[key] == fields, (step, key)


def test_the_data_exercises_nulls_negatives_and_every_view(history: History, generated: FeastRepo
                                                           ) -> None:
    _, engine = history.steps["third day again, regolded"]
    values = [v for fields in engine.values() for k, v in fields.items() if not k.startswith(b"_ts:")]
    assert b"" in values  # nulls and NaN
    assert any(v[:1] == b" " and len(v) == 11 for v in values)  # negative int64: ten-byte varints
    marks = {k for fields in engine.values() for k in fields if k.startswith(b"_ts:")}
    assert marks == {f"_ts:{v}".encode() for v in gold_views(generated)}


def test_an_older_day_overwrites_nothing_newer(history: History) -> None:
    (_, before), (_, after) = history.steps["third day"], history.steps["first day, older"]
    assert {k: v for k, v in after.items() if k in before} == before
    assert after.keys() > before.keys()  # entities only the first day has were written


def test_a_rerun_of_the_day_rewrites_its_rows(history: History, generated: FeastRepo) -> None:
    (_, before), (_, after) = history.steps["first day, older"], history.steps["third day again, regolded"]
    assert after != before
    store = history.stores[1]
    for name, changed in history.regolded.items():
        keys = [c.name for c in generated.view(name).entity_columns]
        served = store.get_online_features(features=[f"{name}:{c}" for c in changed.columns[len(keys) + 1:]],
                                           entity_rows=changed[keys].to_dict("records")).to_dict()
        first = changed.columns[len(keys) + 1]
        expected = [None if v is None or v != v else v for v in changed[first]]
        assert served[first] == expected, name


def test_the_registry_records_the_intervals_as_stock_feast_does(history: History) -> None:
    stock, engine = (store.registry for store in history.stores)
    stamps = [(end_of_day(d), end_of_day(d)) for d in (DAYS[1], DAYS[2], DAYS[0], DAYS[2])]
    for view in stock.list_feature_views(history.stores[0].project, allow_cache=False):
        ours = engine.get_feature_view(view.name, history.stores[1].project, allow_cache=False)
        assert ours.materialization_intervals == view.materialization_intervals, view.name
        if view.tags["layer"] == "gold":
            assert ours.materialization_intervals[-4:] == stamps, view.name


def test_every_registered_view_takes_the_fast_path(history: History) -> None:
    """Gold views and real-time ones alike: Feast rebuilds a push view from the registry on its
    batch source, which it materializes from (and so does the engine)."""
    store = history.stores[1]
    assert isinstance(store._get_provider().batch_engine, PostgresRedisEngine)
    stamp = end_of_day(DAYS[0])
    for view in store.list_feature_views():
        plan = _ViewPlan.of(store.config, store.registry, MaterializationTask(store.project, view, stamp, stamp))
        assert isinstance(plan, _ViewPlan), (view.name, plan)


def test_what_the_engine_cannot_write_exactly_goes_to_feasts_engine(
    history: History, generated: FeastRepo, caplog: pytest.LogCaptureFixture
) -> None:
    store = history.stores[1]
    stamp = end_of_day(DAYS[2])
    pushed = next(v for v in generated.feature_views if v.tags["layer"] != "gold")
    plan = _ViewPlan.of(store.config, store.registry, MaterializationTask(store.project, pushed, stamp, stamp))
    assert plan == "source PushSource, not a PostgreSQLSource"
    every_row = MaterializationTask(store.project, store.get_feature_view("item_features"), stamp, stamp,
                                    only_latest=False)
    with caplog.at_level(logging.INFO, logger="taobao_assets.online_materialization"):
        (job,) = _engine(store).materialize(store.registry, every_row)
    assert job.status() == MaterializationJobStatus.SUCCEEDED, job.error()
    assert "item_features with Feast's local engine: the task keeps every row" in caplog.text
    # Feast's engine writes only newer rows: asked to rewrite the day's own, the engine refuses the view.
    with pytest.raises(ValueError, match="view item_features: rewrite_same_time needs this engine, but .* "
                                         r"\(the task keeps every row, not each entity's latest\)"):
        _engine(store, rewrite_same_time=True).materialize(store.registry, every_row)


def _engine(store: FeatureStore, **options: Any) -> PostgresRedisEngine:
    """The engine on ``store``'s configuration and stores, with ``options`` instead of its own."""
    provider: Any = store._get_provider()
    return PostgresRedisEngine(repo_config=store.config, offline_store=provider.offline_store,
                               online_store=provider.online_store, **options)
