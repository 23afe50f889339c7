"""Serving checks: Feast serves what the metadata declares and what gold holds, without leakage.

- ``registry_matches_metadata``: every entity, source, view and service in the Feast registry is
  defined exactly as the table contracts (the assets' metadata) generate it (nothing missing,
  changed or left over);
- ``online_matches_gold``: for a sample of each gold view's entities of the day, Redis returns the
  values of the gold row whose timestamp it reports, and that row is not older than the day;
- ``features_point_in_time`` and ``no_feature_copies_the_label`` (one step,
  ``training_set_leakage``): the leakage audit of the day's training set
  (:mod:`taobao_assets.quality.leakage`): every row's features are those of the latest row at or
  before the impression within the TTL, recomputed apart from Feast's query, so a leak of the
  future or a wrong join fails the check; and no feature alone predicts the label almost perfectly.
"""

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    DailyPartitionsDefinition,
    MetadataValue,
    asset_check,
    multi_asset_check,
)

from taobao_assets.assets.serving import (
    ONLINE_STORE_KEY,
    REGISTRY_KEY,
    TRAINING_SERVICE,
    TRAINING_SET_KEY,
    feature_columns,
    gold_views,
    training_set_key,
)
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.partitions import end_of_day
from taobao_assets.quality.leakage import LABEL_COPY_AUC, ViewToAudit, audit
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

    @multi_asset_check(name="training_set_leakage", can_subset=True, specs=[
        AssetCheckSpec("features_point_in_time", asset=TRAINING_SET_KEY, partitions_def=daily, blocking=True,
                       description="Every training row's features equal the latest row of each view's table at "
                                   "or before the impression within the TTL, recomputed apart from Feast (no "
                                   "value from the future)."),
        AssetCheckSpec("no_feature_copies_the_label", asset=TRAINING_SET_KEY, partitions_def=daily, blocking=True,
                       description=f"No feature alone ranks the clicks with an AUC beyond {LABEL_COPY_AUC} (or "
                                   f"below {1 - LABEL_COPY_AUC:.1f}): such a feature is the label in disguise."),
    ])
    def training_set_leakage(
        context: AssetCheckExecutionContext, s3: S3Resource, postgres: PostgresResource
    ) -> Iterator[AssetCheckResult]:
        """The two audits of the day's training set in one step, on one download of it: each alone
        read the whole file from MinIO again."""
        import pandas as pd

        from taobao_assets.feast_repo import generated_repo

        selected = {check.name for check in context.selected_asset_check_keys}
        repo = generated_repo()
        frame = pd.read_parquet(io.BytesIO(s3.get_bytes(training_set_key(context.partition_key))))
        views = [ViewToAudit.of(repo.view(p.name), _keys(repo, repo.view(p.name)))
                 for p in repo.service(TRAINING_SERVICE).feature_view_projections]
        report = audit(postgres, frame, views if "features_point_in_time" in selected else [],
                       feature_columns(frame) if "no_feature_copies_the_label" in selected else [])
        if "features_point_in_time" in selected:
            wrong = sum(report.mismatches.values())
            yield AssetCheckResult(check_name="features_point_in_time", passed=report.rows > 0 and not wrong,
                                   metadata={
                                       "rows": report.rows, "values_compared": report.values_compared,
                                       "mismatches": wrong,
                                       **{f"mismatches/{view}": count for view, count in report.mismatches.items()},
                                       "examples": _listed(report.examples),
                                   })
        if "no_feature_copies_the_label" in selected:
            top = sorted(report.auc.items(), key=lambda ca: -abs(ca[1] - 0.5))
            yield AssetCheckResult(check_name="no_feature_copies_the_label", passed=not report.label_copies,
                                   metadata={
                                       "label_copies": _listed(report.label_copies),
                                       "max_feature_auc": max((max(a, 1 - a) for a in report.auc.values()),
                                                              default=0.5),
                                       "top_features_by_auc": MetadataValue.md("\n".join(
                                           ["| feature | AUC alone |", "|---|---|",
                                            *(f"| {c} | {a:.4f} |" for c, a in top[:SHOWN])])),
                                       **{f"auc/{column}": auc for column, auc in report.auc.items()},
                                   })

    return [registry_matches_metadata, online_matches_gold, training_set_leakage]
