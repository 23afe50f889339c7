"""Drift (PSI) against independent expectations: the normal distribution's own bins, repeated sampling,
and a generated gold table in Postgres whose item CTRs shift on one day."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from psycopg2.extras import execute_values
from scipy.stats import norm

from deploy.service import Service
from taobao_assets.features import WINDOWS_DAYS
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.io_managers.postgres import create_table_sql
from taobao_assets.partitions import end_of_day
from taobao_assets.quality.drift import BINS, MIN_ROWS, THRESHOLD, drift_report, psi
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.settings import Settings
from taobao_assets_tests.conftest import ensure_running

ITEMS = next(t for t in GOLD_TABLES if t.name == "item_features")


def test_psi_of_a_shifted_normal_equals_the_psi_of_its_exact_decile_shares() -> None:
    rng = np.random.default_rng(1)
    reference, current = rng.normal(0, 1, 400_000), rng.normal(0.5, 1, 400_000)
    edges = norm.ppf(np.arange(1, BINS) / BINS)
    expected_shares = np.full(BINS, 1 / BINS)
    shifted = np.diff(np.concatenate([[0.0], norm.cdf(edges - 0.5), [1.0]]))
    exact = float(np.sum((shifted - expected_shares) * np.log(shifted / expected_shares)))
    assert psi(reference, current).value == pytest.approx(exact, abs=0.005)
    assert psi(reference, reference.copy()).value == 0.0


def test_nulls_are_a_bin_of_their_own() -> None:
    values = np.arange(1000, dtype=np.float64)
    half_missing = values.copy()
    half_missing[::2] = np.nan
    # Half the values leave the ten bins for the null bin: the null share goes from nothing (the floor) to 0.5.
    assert psi(values, half_missing).value > 2.0


def test_sampling_alone_exceeds_the_noise_bound_about_one_time_in_a_hundred() -> None:
    rng = np.random.default_rng(2)
    over = sum(p.value > p.noise for p in (psi(rng.exponential(1, 300), rng.exponential(1, 120))
                                           for _ in range(2000)))
    assert 0.002 < over / 2000 < 0.03, over


@pytest.fixture(scope="module")
def quality_postgres(settings: Settings, postgres_service: Service) -> PostgresResource:
    """A database of its own, so the generated table never meets the pipeline's gold."""
    own = dataclasses.replace(settings, postgres_db=f"{settings.postgres_db}_quality")
    ensure_running("postgres", own)  # creates the database if it is new
    return PostgresResource.from_settings(own)


def _item_days(first: date, days: int, shifted: date, rng: np.random.Generator) -> pd.DataFrame:
    """Gold item rows of ``days`` days: each item's impressions and clicks per day from its own CTR,
    which doubles on ``shifted``; windows summed as gold sums them, rates left unsmoothed."""
    items = 3000
    ctr = rng.beta(2, 60, items)
    daily = []
    for d in range(days):
        day = first + timedelta(days=d)
        impressions = rng.poisson(rng.gamma(2, 25, items))
        clicks = rng.binomial(impressions, np.minimum(ctr * (2 if day == shifted else 1), 1))
        conversions = rng.binomial(clicks, 0.1)
        daily.append(pd.DataFrame({"item_id": np.arange(items), "day": day, "impressions": impressions,
                                   "clicks": clicks, "conversions": conversions}))
    counts = pd.concat(daily)
    rows = []
    for d in range(days):
        day = first + timedelta(days=d)
        row = pd.DataFrame({"item_id": np.arange(items), "event_timestamp": end_of_day(day)})
        for w in WINDOWS_DAYS:
            inside = counts[(counts.day > day - timedelta(days=w)) & (counts.day <= day)].groupby("item_id").sum(
                numeric_only=True)
            for c in ("impressions", "clicks", "conversions"):
                row[f"{c}_{w}d"] = inside[c].to_numpy()
            row[f"ctr_{w}d"] = (row[f"clicks_{w}d"] + 1) / (row[f"impressions_{w}d"] + 20)
            row[f"cvr_{w}d"] = (row[f"conversions_{w}d"] + 1) / (row[f"clicks_{w}d"] + 10)
        rows.append(row[row["impressions_7d"] > 0])
    return pd.concat(rows, ignore_index=True)[[c.name for c in ITEMS.columns]]


def test_a_day_whose_item_ctrs_double_drifts_in_its_ctr_and_not_in_its_impressions(
    quality_postgres: PostgresResource,
) -> None:
    first = date(2026, 3, 1)
    shifted = first + timedelta(days=8)
    frame = _item_days(first, 9, shifted, np.random.default_rng(3))
    with quality_postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(create_table_sql(ITEMS), (ITEMS.description,))
        cur.execute(f"TRUNCATE {ITEMS.qualified_name}")
        execute_values(cur, f"INSERT INTO {ITEMS.qualified_name} ({', '.join(frame.columns)}) VALUES %s",
                       [tuple(r) for r in frame.astype(object).itertuples(index=False)], page_size=5000)

    before = drift_report(quality_postgres, ITEMS, shifted - timedelta(days=1), first)
    assert before.reference_days == 7 and not before.drifting, before.markdown()
    after = drift_report(quality_postgres, ITEMS, shifted, first)
    assert after.drifting[0] == "ctr_1d", after.markdown()
    assert not [f for f in after.drifting if f.startswith("impressions_")], after.markdown()
    assert after.psi["ctr_1d"].value > THRESHOLD > 10 * before.psi["ctr_1d"].value


def test_a_psi_of_too_few_rows_is_reported_but_not_judged() -> None:
    rng = np.random.default_rng(4)
    small = psi(rng.normal(0, 1, MIN_ROWS - 1), rng.normal(3, 1, MIN_ROWS))
    assert small.value > THRESHOLD and not small.judged and not small.drifting
    large = psi(rng.normal(0, 1, MIN_ROWS), rng.normal(3, 1, MIN_ROWS))
    assert large.judged and large.drifting
