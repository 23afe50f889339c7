"""Fixtures of the serving tests: their own database and Feast project, with synthetic gold rows.

The unit-level serving tests write gold rows of their own making (through the gold IO manager's
DDL, so the tables are the real ones), which must never mix with the gold the pipeline tests
compute: they use database ``<tests' db>_serving`` and Feast project ``<tests' project>_unit``,
so neither their registry nor their Redis keys meet anyone else's.

The rows cover three days with entities that come and go (so some entities' newest row is older
than the newest day), and a user x category pair designed
to collide in a naive text key: (user 1, category 23) and (user 12, category 3).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetSelection, AssetSpec, Definitions, ExecuteInProcessResult, materialize
from psycopg2.extras import execute_values

from deploy.service import Service
from taobao_assets.assets.gold import gold_assets
from taobao_assets.assets.serving import ONLINE_STORE_KEY, serving_assets
from taobao_assets.checks.serving import serving_checks
from taobao_assets.feast_repo import FEATURE_REPO, FeastRepo, generated_repo, write_config
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.io_managers.postgres import create_table_sql
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import REPO_ROOT, Settings
from taobao_assets_tests.conftest import DAILY, ensure_running

DAYS = DAILY.get_partition_keys()[:3]
#: Ids of each key column; user 1 / category 23 and user 12 / category 3 are always in the data.
KEY_IDS = {"user_id": range(1, 31), "item_id": range(1, 41), "category_id": (3, 5, 7, 23, 31, 37, 41, 43, 47, 53),
           "shop_id": range(1, 11), "brand_id": range(1, 11)}
COLLIDING_PAIRS = [(1, 23), (12, 3)]


@pytest.fixture(scope="session")
def serving_settings(settings: Settings, redis_service: Service) -> Settings:
    own = dataclasses.replace(settings, postgres_db=f"{settings.postgres_db}_serving",
                              feast_project=f"{settings.feast_project}_unit")
    ensure_running("postgres", own)  # creates the database if it is new
    return own


def serving_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process (feast CLI, retrieval CLI) see ``settings``."""
    return dict(os.environ, TFP_POSTGRES_DB=settings.postgres_db, TFP_FEAST_PROJECT=settings.feast_project)


def _rows(table: GoldTable, day: str, rng: np.random.Generator) -> pd.DataFrame:
    """Most entities, with fresh random values each day; every fourth id skips the last day."""
    last = day == DAYS[-1]
    if table.key_names == ["user_id", "category_id"]:
        pairs = {(int(u), int(c)) for u in KEY_IDS["user_id"] for c in KEY_IDS["category_id"] if rng.random() < 0.1}
        frame = pd.DataFrame(sorted(pairs | set(COLLIDING_PAIRS)), columns=table.key_names)
    else:
        (key,) = table.key_names
        always = (1, 12) if key == "user_id" else ()
        ids = [i for i in KEY_IDS[key] if i in always or (rng.random() < 0.8 and not (last and i % 4 == 0))]
        frame = pd.DataFrame({key: ids})
    frame[TIMESTAMP_FIELD] = end_of_day(day)
    for column in table.features:
        frame[column.name] = (rng.integers(0, 1000, len(frame)) if column.dtype == "int64"
                              else rng.random(len(frame)).round(6))
    return frame[[c.name for c in table.columns]]


@pytest.fixture(scope="session")
def gold(serving_settings: Settings) -> dict[str, pd.DataFrame]:
    """Synthetic gold rows of :data:`DAYS` for every table, written to the serving database."""
    rng = np.random.default_rng(20261101)
    tables = {t.name: pd.concat([_rows(t, day, rng) for day in DAYS], ignore_index=True) for t in GOLD_TABLES}
    with PostgresResource.from_settings(serving_settings).connect() as conn, conn.cursor() as cur:
        for table in GOLD_TABLES:
            frame = tables[table.name]
            cur.execute(create_table_sql(table), (table.description,))
            cur.execute(f"TRUNCATE {table.qualified_name}")
            execute_values(cur, f"INSERT INTO {table.qualified_name} ({', '.join(frame.columns)}) VALUES %s",
                           [tuple(r) for r in frame.astype(object).itertuples(index=False)], page_size=2000)
    return tables


@pytest.fixture(scope="session")
def feast_resource(serving_settings: Settings) -> FeastResource:
    return FeastResource.from_settings(serving_settings)


#: Gold and the silver it reads as specs: the serving assets' upstream without its Spark computation.
UPSTREAM_SPECS = [*(AssetSpec(["silver", name], partitions_def=DAILY) for name in ("impressions", "user_context")),
                  *(spec for gold in gold_assets(DAILY) for spec in gold.specs)]
SERVING_ASSETS = serving_assets(DAILY)
SERVING_CHECKS = serving_checks(DAILY)


def serving_definitions(settings: Settings) -> Definitions:
    """The serving assets and checks (and their upstream as specs) on ``settings``' stores."""
    postgres = PostgresResource.from_settings(settings)
    return Definitions(
        assets=[*UPSTREAM_SPECS, *SERVING_ASSETS],
        asset_checks=SERVING_CHECKS,
        resources={"feast": FeastResource.from_settings(settings), "postgres": postgres,
                   "s3": S3Resource.from_settings(settings)},
    )


@pytest.fixture(scope="session")
def generated() -> FeastRepo:
    return generated_repo()


@pytest.fixture(scope="session")
def applied(feast_resource: FeastResource, generated: FeastRepo, gold: dict[str, pd.DataFrame]) -> FeastResource:
    """The serving project's registry, applied from the generated repository, and an empty online store.

    Redis keys end with the project's name; a previous session's values (of other random gold)
    would otherwise be newer than some of this session's rows.
    """
    client = feast_resource.redis.client()
    for key in client.scan_iter(match=f"*{feast_resource.project}".encode(), count=10_000):
        client.delete(key)
    feast_resource.apply(generated.contents())
    return feast_resource


@pytest.fixture(scope="session")
def feature_repo(tmp_path_factory: pytest.TempPathFactory, serving_settings: Settings) -> Path:
    """A copy of ``feature_repo/`` whose ``feature_store.yaml`` points at the serving database."""
    folder = tmp_path_factory.mktemp("feature_repo")
    shutil.copy(FEATURE_REPO / "repo.py", folder / "repo.py")
    write_config(folder / "feature_store.yaml", FeastResource.from_settings(serving_settings))
    return folder


def feast_cli(repo: Path, settings: Settings, *args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen([str(Path(sys.executable).parent / "feast"), "-c", str(repo), *args],
                            cwd=REPO_ROOT, env=serving_env(settings), text=True, **popen)  # type: ignore[call-overload]


@pytest.fixture
def clean_registry(feast_resource: FeastResource, generated: FeastRepo) -> Iterator[FeastResource]:
    """Restores the generated registry after a test that changes it."""
    yield feast_resource
    feast_resource.apply(generated.contents())


def run_serving(settings: Settings, selection: AssetSelection, partition_key: str | None = None
                ) -> ExecuteInProcessResult:
    """Materialize ``selection`` of the serving assets and checks; failures are returned, not raised."""
    defs = serving_definitions(settings)
    return materialize([*UPSTREAM_SPECS, *SERVING_ASSETS, *SERVING_CHECKS], resources=defs.resources,
                       selection=selection, partition_key=partition_key, raise_on_error=False)


@pytest.fixture(scope="session")
def materialized(applied: FeastResource, serving_settings: Settings) -> dict[str, ExecuteInProcessResult]:
    """``online_store`` of each day, newest first but one: an older day must not overwrite a newer one."""
    order = [DAYS[1], DAYS[2], DAYS[0]]
    return {day: run_serving(serving_settings, AssetSelection.assets(ONLINE_STORE_KEY), day) for day in order}


def latest(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Each entity's newest gold row."""
    return frame.sort_values(TIMESTAMP_FIELD).groupby(keys, as_index=False).last()
