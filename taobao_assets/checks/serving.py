"""Serving checks: Feast serves what the metadata declares and what gold holds, without leakage.

- ``registry_matches_metadata``: every entity, source, view and service in the Feast registry is
  defined exactly as the table contracts (the assets' metadata) generate it (nothing missing,
  changed or left over);
- ``online_matches_gold``: for a sample of each gold view's entities of the day, Redis returns the
  values of the gold row whose timestamp it reports, and that row is not older than the day;
- ``features_point_in_time``: for a sample of the day's training rows, each view's features are
  those of the latest gold row at or before the impression and within the TTL, recomputed in SQL
  (a LATERAL join, not Feast's query), so a leak of the future or a wrong join fails the check.
"""

import io
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    DailyPartitionsDefinition,
    MetadataValue,
    asset_check,
)
from psycopg2.extras import execute_values

from taobao_assets.assets.serving import (
    ONLINE_STORE_KEY,
    REGISTRY_KEY,
    TRAINING_SERVICE,
    TRAINING_SET_KEY,
    gold_views,
    training_set_key,
)
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource

# Feast (through feast_repo) and pandas are imported in the checks that use them: every run process
# loads these definitions, and a run of bronze or of the Spark days needs neither.
if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureView

    from taobao_assets.feast_repo import FeastRepo

#: Entities (online) and rows (training set) compared per view and day.
SAMPLE = 50
#: Mismatches listed in the check's metadata.
SHOWN = 10


def same(a: Any, b: Any) -> bool:
    """Equal as feature values: both missing, or equal (floats to 1e-9 relative)."""
    missing_a = a is None or (isinstance(a, float) and math.isnan(a))
    missing_b = b is None or (isinstance(b, float) and math.isnan(b))
    if missing_a or missing_b:
        return missing_a and missing_b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _keys(repo: "FeastRepo", view: "FeatureView") -> list[str]:
    joins = {e.name: e.join_key for e in repo.entities}
    return [joins[name] for name in view.entities]


def _fetch(postgres: PostgresResource, sql: str, params: Sequence[Any]) -> "pd.DataFrame":
    import pandas as pd

    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        names = [d[0] for d in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=names)


def _listed(lines: Iterable[str]) -> MetadataValue:
    shown = list(lines)[:SHOWN]
    return MetadataValue.md("\n".join(f"- {line}" for line in shown) or "none")


@asset_check(asset=REGISTRY_KEY, name="registry_matches_metadata", blocking=True,
             description="The Feast registry holds exactly the objects generated from the current asset metadata.")
def registry_matches_metadata(context: AssetCheckExecutionContext, feast: FeastResource) -> AssetCheckResult:
    from taobao_assets.feast_repo import generated_repo

    repo = generated_repo()
    drift = feast.drift(repo.contents())
    return AssetCheckResult(passed=not drift, metadata={
        "drift": _listed(str(d) for d in drift), "drifted_objects": len(drift),
        "generated_objects": len(repo.objects()),
    })


def point_in_time_rows(
    postgres: PostgresResource, table: str, keys: list[str], ttl_seconds: int, rows: "pd.DataFrame"
) -> "pd.DataFrame":
    """For each row (``keys``, ``event_timestamp``), the latest gold row at or before it within the TTL.

    Written without Feast: a LATERAL join on the primary key index. Returns one row per input row,
    in order, with the gold columns (all null where no row qualifies).
    """
    import pandas as pd

    times = pd.to_datetime(rows[TIMESTAMP_FIELD], utc=True)  # naive times are UTC, never the server's zone
    probes = [(i, times.iloc[i].to_pydatetime(), *(int(row[k]) if pd.notna(row[k]) else None for k in keys))
              for i, row in enumerate(rows.to_dict("records"))]
    probe_columns = ", ".join(["i", "ts", *[f"k_{k}" for k in keys]])
    matches = " AND ".join([*(f"g.{k} = p.k_{k}" for k in keys), f"g.{TIMESTAMP_FIELD} <= p.ts",
                            f"g.{TIMESTAMP_FIELD} >= p.ts - make_interval(secs => {ttl_seconds})"])
    template = "(" + ", ".join(["%s", "%s::timestamptz", *["%s::bigint"] * len(keys)]) + ")"
    with postgres.connect() as conn, conn.cursor() as cur:
        found = execute_values(
            cur,
            f"SELECT p.i, g.* FROM (VALUES %s) AS p({probe_columns}) LEFT JOIN LATERAL "
            f"(SELECT * FROM {table} g WHERE {matches} ORDER BY g.{TIMESTAMP_FIELD} DESC LIMIT 1) g ON true "
            f"ORDER BY p.i",
            probes, template=template, page_size=len(probes) or 1, fetch=True,
        )
        names = [d[0] for d in cur.description or []]
    return pd.DataFrame(found, columns=names)


def _plain(value: Any) -> Any:
    """A pandas/numpy scalar as a Python one (``pd.NA`` as ``None``)."""
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def serving_checks(daily: DailyPartitionsDefinition) -> list[AssetChecksDefinition]:
    """The registry check, and the daily checks of the online store and the training set over ``daily``."""

    @asset_check(asset=ONLINE_STORE_KEY, name="online_matches_gold", partitions_def=daily, blocking=True,
                 description=f"For up to {SAMPLE} entities per gold view of the day, Redis serves the gold row "
                             "it reports, and that row is the day's or newer.")
    def online_matches_gold(
        context: AssetCheckExecutionContext, feast: FeastResource, postgres: PostgresResource
    ) -> AssetCheckResult:
        from taobao_assets.feast_repo import generated_repo

        repo = generated_repo()
        stamp = end_of_day(context.partition_key)
        store = feast.store()
        compared, problems = 0, []
        for name in gold_views(repo):
            view = repo.view(name)
            table, keys = view.tags["table"], _keys(repo, view)
            key_list = ", ".join(keys)
            sample = _fetch(postgres, f"SELECT {key_list} FROM {table} WHERE {TIMESTAMP_FIELD} = %s "
                                      f"ORDER BY md5(({key_list})::text) LIMIT {SAMPLE}", (stamp,))
            if sample.empty:
                continue
            entity_rows = sample.to_dict("records")
            online = store.get_online_features(
                features=[f"{name}:{f.name}" for f in view.features], entity_rows=entity_rows,
            ).to_dict(include_event_timestamps=True)
            gold = _fetch(postgres, f"SELECT * FROM {table} WHERE ({key_list}) IN %s AND {TIMESTAMP_FIELD} >= %s",
                          (tuple(tuple(r.values()) for r in entity_rows), stamp))
            by_key = {(*(row[k] for k in keys), row[TIMESTAMP_FIELD]): row for row in gold.to_dict("records")}
            first = view.features[0].name
            for i, entity in enumerate(entity_rows):
                compared += 1
                served_at = online[f"{first}__ts"][i]
                when = datetime.fromtimestamp(served_at, UTC) if served_at is not None else None
                row = by_key.get((*entity.values(), when)) if when is not None else None
                if when is None or when < stamp or row is None:
                    problems.append(f"{name} {entity}: Redis has the row of {when}, expected {stamp} or newer")
                    continue
                problems += [f"{name} {entity} {f.name}: Redis {online[f.name][i]!r}, gold {row[f.name]!r}"
                             for f in view.features if not same(online[f.name][i], row[f.name])]
        return AssetCheckResult(passed=compared > 0 and not problems, metadata={
            "entities_compared": compared, "mismatches": len(problems), "examples": _listed(problems),
        })

    @asset_check(asset=TRAINING_SET_KEY, name="features_point_in_time", partitions_def=daily, blocking=True,
                 description=f"For up to {SAMPLE} training rows, each view's features equal the latest gold row at "
                             "or before the impression within the TTL, recomputed in SQL.")
    def features_point_in_time(
        context: AssetCheckExecutionContext, s3: S3Resource, postgres: PostgresResource
    ) -> AssetCheckResult:
        import pandas as pd

        from taobao_assets.feast_repo import generated_repo

        repo = generated_repo()
        frame = pd.read_parquet(io.BytesIO(s3.get_bytes(training_set_key(context.partition_key))))
        sample = frame.sample(n=min(SAMPLE, len(frame)), random_state=0).reset_index(drop=True)
        compared, problems = 0, []
        for projection in repo.service(TRAINING_SERVICE).feature_view_projections:
            view = repo.view(projection.name)
            ttl = int(view.ttl.total_seconds()) if view.ttl else 0
            expected = point_in_time_rows(postgres, view.tags["table"], _keys(repo, view), ttl, sample)
            for i in range(len(sample)):
                compared += 1
                problems += [
                    f"sample {sample.at[i, 'sample_id']} {view.name}.{f.name}: training set "
                    f"{sample.at[i, f'{view.name}__{f.name}']!r}, gold {expected.at[i, f.name]!r}"
                    for f in view.features
                    if not same(_plain(sample.at[i, f"{view.name}__{f.name}"]), _plain(expected.at[i, f.name]))
                ]
        return AssetCheckResult(passed=not problems, metadata={
            "rows_times_views_compared": compared, "mismatches": len(problems), "examples": _listed(problems),
        })

    return [registry_matches_metadata, online_matches_gold, features_point_in_time]
