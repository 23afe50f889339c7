"""Gold through the real Spark, Iceberg and Postgres, against an independent pandas computation.

The expected tables are computed here straight from the raw generated files (parsed line by line,
days from the event-time mapping) with pandas, restating the smoothing formula rather than calling
the feature module, so a mistake in the Spark pipeline or in the formulas' use shows up as a
difference.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from taobao_assets.features import CTR_PRIOR_STRENGTH, CVR_PRIOR_STRENGTH, WINDOWS_DAYS
from taobao_assets.gold_tables import GOLD_TABLES, GoldTable
from taobao_assets.partitions import end_of_day, event_time_config
from taobao_assets.quality.stats import NUMERIC, STATS_TABLE
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.settings import Settings
from taobao_assets.silver_tables import HISTORY_COLUMNS, PROFILE_COLUMNS, USER_ID_FIELD
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.format import SPLITS, FileKind
from taobao_assets.source.parser import CommonFeaturesRecord, SampleRecord
from taobao_assets_tests.conftest import DAILY, gold_resources, materialize_gold
from taobao_assets_tests.parser_reference import parse_file

ITEM_KEYS = {"item_id": "205", "category_id": "206", "shop_id": "207", "brand_id": "216"}


def _raw_frames(dataset: Path, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    timeline = Timeline.from_folder(dataset, event_time_config(settings))
    samples, contexts = [], []
    for split in SPLITS:
        for record in parse_file(dataset / FileKind.SAMPLE_SKELETON.file_name(split)):
            if isinstance(record, SampleRecord):
                t = timeline.sample_time(split, record.line_number)
                samples.append({"split": split, "click": record.click, "conversion": record.conversion,
                                "cfi": record.common_feature_index, "day": t.day,
                                **{k: record.feature_id(f) for k, f in ITEM_KEYS.items()}})
        for record in parse_file(dataset / FileKind.COMMON_FEATURES.file_name(split)):
            if isinstance(record, CommonFeaturesRecord):
                contexts.append({"split": split, "cfi": record.common_feature_index,
                                 "user_id": record.feature_id("101")})
    return pd.DataFrame(samples), pd.DataFrame(contexts)


def _expected(samples: pd.DataFrame, contexts: pd.DataFrame, day: date) -> dict[str, pd.DataFrame]:
    users = contexts.drop_duplicates("cfi").set_index("cfi")["user_id"]
    window = samples[(samples.day > day - timedelta(days=7)) & (samples.day <= day)].copy()
    window["user_id"] = window.cfi.map(users)
    priors = {}
    for w in WINDOWS_DAYS:
        inside = window[window.day > day - timedelta(days=w)]
        ctr = inside.click.sum() / len(inside) if len(inside) else 0.0
        cvr = inside.conversion.sum() / inside.click.sum() if inside.click.sum() else 0.0
        priors[w] = (ctr, cvr)
    out = {}
    for table in GOLD_TABLES:
        keys = table.key_names
        rows = window.dropna(subset=keys)
        frame = rows[keys].drop_duplicates().astype("int64").set_index(keys)
        for w in WINDOWS_DAYS:
            inside = rows[rows.day > day - timedelta(days=w)].astype({k: "int64" for k in keys})
            grouped = inside.groupby(keys)
            frame[f"impressions_{w}d"] = grouped.size()
            frame[f"clicks_{w}d"] = grouped.click.sum()
            frame[f"conversions_{w}d"] = grouped.conversion.sum()
            frame = frame.fillna(0)
            ctr, cvr = priors[w]
            frame[f"ctr_{w}d"] = (frame[f"clicks_{w}d"] + ctr * CTR_PRIOR_STRENGTH) / (
                frame[f"impressions_{w}d"] + CTR_PRIOR_STRENGTH)
            frame[f"cvr_{w}d"] = (frame[f"conversions_{w}d"] + cvr * CVR_PRIOR_STRENGTH) / (
                frame[f"clicks_{w}d"] + CVR_PRIOR_STRENGTH)
        out[table.name] = frame.reset_index()
    return out


def test_gold_equals_an_independent_pandas_computation(gold: PostgresResource, dataset: Path,
                                                       settings: Settings) -> None:
    samples, contexts = _raw_frames(dataset, settings)
    for day_key in DAILY.get_partition_keys():
        day = date.fromisoformat(day_key)
        expected = _expected(samples, contexts, day)
        for table in GOLD_TABLES:
            want = expected[table.name]
            columns = [*table.key_names, *want.columns.difference(table.key_names)]
            with gold.connect() as conn:
                got = pd.read_sql_query(f"SELECT {', '.join(columns)} FROM {table.qualified_name} "
                                        f"WHERE event_timestamp = %(ts)s", conn, params={"ts": end_of_day(day)})
            got = got.sort_values(table.key_names).reset_index(drop=True)
            want = want[columns].sort_values(table.key_names).reset_index(drop=True)
            assert len(got) == len(want), f"{table.name} {day}: {len(got)} rows, expected {len(want)}"
            for column in columns:
                assert np.allclose(got[column].astype(float), want[column].astype(float), rtol=1e-9, atol=1e-12), (
                    f"{table.name} {day}: column {column} differs")


def _user_attributes(dataset: Path, settings: Settings, day: date) -> pd.DataFrame:
    """Each user's profile and history diversity from the raw files: of the contexts known before the
    end of ``day`` (a context's time is its first referencing sample's, else its split's start), the
    latest by time, then file, then line."""
    timeline = Timeline.from_folder(dataset, event_time_config(settings))
    day_end_ms = int(end_of_day(day).timestamp() * 1000)
    rows = []
    for split in SPLITS:
        references = [(r.line_number, r.common_feature_index)
                      for r in parse_file(dataset / FileKind.SAMPLE_SKELETON.file_name(split))
                      if isinstance(r, SampleRecord)]
        first = timeline.common_feature_ordinals(split, references)
        name = FileKind.COMMON_FEATURES.file_name(split)
        for record in parse_file(dataset / name):
            if not isinstance(record, CommonFeaturesRecord) or record.feature_id(USER_ID_FIELD) is None:
                continue
            ordinal = first.get(record.common_feature_index, timeline.split_start_ordinal(split))
            rows.append({"user_id": record.feature_id(USER_ID_FIELD), "time": timeline.timestamp_ms(ordinal),
                         "file": name, "line": record.line_number,
                         **{c: record.feature_id(fid) for c, fid in PROFILE_COLUMNS.items()},
                         **{f"{c}_distinct": len({entry[0] for entry in record.histories[fid]})
                            for c, fid in HISTORY_COLUMNS.items()}})
    known = pd.DataFrame(rows)
    known = known[known.time < day_end_ms]
    latest = known.sort_values(["time", "file", "line"]).drop_duplicates("user_id", keep="last")
    return latest.drop(columns=["time", "file", "line"]).sort_values("user_id").reset_index(drop=True)


def test_user_profile_and_history_diversity_come_from_the_latest_context(gold: PostgresResource, dataset: Path,
                                                                          settings: Settings) -> None:
    for day_key in (DAILY.get_partition_keys()[0], DAILY.get_partition_keys()[-1]):
        day = date.fromisoformat(day_key)
        want = _user_attributes(dataset, settings, day)
        columns = list(want.columns)
        with gold.connect() as conn:
            got = pd.read_sql_query(f"SELECT {', '.join(columns)} FROM gold.user_features "
                                    f"WHERE event_timestamp = %(ts)s ORDER BY user_id", conn,
                                    params={"ts": end_of_day(day)})
        # gold has the users active in the window; each has a context known by then
        assert len(got) > 0
        want = want.set_index("user_id").loc[got.user_id].reset_index()
        pd.testing.assert_frame_equal(got.astype("float64"), want[columns].astype("float64"), obj=day_key)


def test_gold_rerun_of_one_day_leaves_every_table_identical(gold: PostgresResource, bronze: S3Resource,
                                                           spark: SparkResource, settings: Settings) -> None:
    def snapshot() -> dict[str, pd.DataFrame]:
        with gold.connect() as conn:
            return {t.name: pd.read_sql_query(
                f"SELECT * FROM {t.qualified_name} ORDER BY {', '.join([*t.key_names, 'event_timestamp'])}", conn)
                for t in GOLD_TABLES}

    before = snapshot()
    assert materialize_gold(DAILY.get_partition_keys()[2], gold_resources(settings, spark, bronze)).success
    after = snapshot()
    for name, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[name], check_exact=True, obj=name)


def _stats_in_pandas(postgres: PostgresResource, table: GoldTable, day: str) -> dict[str, dict[str, float | None]]:
    """Each column's statistics of the stored day, recomputed by pandas from the table's rows.

    The writer takes them in SQL; pandas' linear quantile interpolates as ``percentile_cont`` does.
    """
    keys = set(table.key_names)
    with postgres.connect() as conn:
        stored = pd.read_sql_query(f"SELECT * FROM {table.qualified_name} WHERE event_timestamp = %(ts)s", conn,
                                   params={"ts": end_of_day(day)})
    assert len(stored) > 0, table.name
    expected: dict[str, dict[str, float | None]] = {}
    for column in (*table.keys, *table.features):
        values = stored[column.name]
        numbers = values.dropna().astype("float64") if column.dtype in NUMERIC else pd.Series([], dtype="float64")
        expected[column.name] = {
            "null_rate": values.isna().sum() / len(values),
            **({"min": numbers.min(), "mean": numbers.mean(), "p50": numbers.quantile(0.5),
                "p99": numbers.quantile(0.99), "max": numbers.max()} if len(numbers)
               else dict.fromkeys(("min", "mean", "p50", "p99", "max"))),
            "distinct_count": values.nunique() if column.name in keys else None,
        }
    return expected


def test_statistics_on_write_equal_pandas_recomputing_them(gold: PostgresResource, bronze: S3Resource,
                                                           spark: SparkResource, settings: Settings) -> None:
    day = DAILY.get_partition_keys()[3]
    result = materialize_gold(day, gold_resources(settings, spark, bronze))
    metadata = {m.asset_key: {k: v.value for k, v in m.metadata.items()}
                for m in (e.materialization for e in result.get_asset_materialization_events())}
    for table in GOLD_TABLES:
        expected = _stats_in_pandas(gold, table, day)
        with gold.connect() as conn:
            stored = pd.read_sql_query(f"SELECT * FROM {STATS_TABLE} WHERE table_name = %(t)s AND day = %(d)s",
                                       conn, params={"t": table.qualified_name, "d": day}).set_index("column_name")
        assert sorted(stored.index) == sorted(expected), table.name
        for column, stats in expected.items():
            for name, value in stats.items():
                where = f"{table.name}.{column} {name}"
                got_stored, got_metadata = stored.at[column, name], metadata[table.asset_key].get(
                    f"stats/{column}/{name}")
                if value is None:
                    assert pd.isna(got_stored) and got_metadata is None, where
                else:
                    assert np.isclose(float(got_stored), float(value), rtol=1e-9), f"{where}: {got_stored} != {value}"
                    assert np.isclose(float(got_metadata), float(value), rtol=1e-9), f"{where}: {got_metadata}"
