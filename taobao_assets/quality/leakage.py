"""The leakage audit of a training set, independent of Feast: every value from the past, no label copy.

1. **Point in time.** For every row of the training set and every view of its feature service,
   the values must be those of the latest row of the view's table stamped at or before the
   impression's event time and within the view's TTL (or all missing when there is none). The
   expectation is recomputed in SQL, ``LATERAL`` probes of the table's primary key for the whole
   day's rows copied into a temporary table, not Feast's query. A value joined from a row stamped
   after the impression (the classic off-by-one-day join) differs from it, and so does any other
   wrong join.
2. **Label copies.** A feature whose values alone rank the clicks almost perfectly (AUC beyond
   ``LABEL_COPY_AUC``, or below its mirror) is the label in disguise: real CTR features score
   around 0.6.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.quality.copy_out import copy_out_csv
from taobao_assets.resources.postgres import PostgresResource

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureView

LABEL_COPY_AUC = 0.9
LABEL = "click"
#: Mismatches kept as examples.
EXAMPLES = 10


@dataclass(frozen=True)
class ViewToAudit:
    """A view of the training set's service: its table in Postgres, entity keys, features and TTL."""

    name: str
    table: str
    keys: list[str]
    features: list[str]
    ttl_seconds: int

    @classmethod
    def of(cls, view: FeatureView, keys: list[str]) -> ViewToAudit:
        ttl = int(view.ttl.total_seconds()) if view.ttl else 0
        return cls(view.name, view.tags["table"], keys, [f.name for f in view.features], ttl)


@dataclass
class LeakageReport:
    rows: int = 0
    values_compared: int = 0
    #: Per view: values that are not those of the latest row at or before the impression.
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    #: Per feature column: AUC of the feature alone against the label.
    auc: dict[str, float] = field(default_factory=dict)

    @property
    def label_copies(self) -> list[str]:
        return [c for c, auc in self.auc.items() if max(auc, 1 - auc) > LABEL_COPY_AUC]


def expected_values(postgres: PostgresResource, frame: pd.DataFrame, views: list[ViewToAudit]
                    ) -> dict[str, pd.DataFrame]:
    """Per view, one row per row of ``frame`` (in order): the features of the latest row at or before
    its ``event_timestamp`` within the TTL, all null where there is none.

    A table's rows carry few distinct stamps (gold has one per day), so the latest row of an entity
    at or before an impression is its latest row at or before the table's last stamp before that
    impression. The table is probed once per entity and such stamp rather than once per training row
    (about eight times fewer index probes at a week of gold); the TTL is then applied per row.
    """
    import pandas as pd

    keys = list(dict.fromkeys(k for view in views for k in view.keys))
    micros = pd.to_datetime(frame[TIMESTAMP_FIELD], utc=True).dt.as_unit("us").astype("int64").to_numpy()
    expected = {}
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute("SET extra_float_digits = 1")
        upto = {}
        for n, view in enumerate(views):
            # Microseconds since the epoch, the unit Arrow and pandas share with Postgres' timestamps.
            cur.execute(f"SELECT DISTINCT (extract(epoch FROM {TIMESTAMP_FIELD}) * 1000000)::bigint "
                        f"FROM {view.table}")
            stamps = np.sort(np.fromiter((row[0] for row in cur), np.int64))
            before = np.searchsorted(stamps, micros, side="right") - 1
            upto[f"u_{n}"] = pa.array(stamps[np.maximum(before, 0)] if len(stamps) else micros,
                                      mask=before < 0).cast(pa.timestamp("us", tz="UTC"))
        probes = pa.table({"i": np.arange(len(frame)),
                           "ts": pa.array(micros).cast(pa.timestamp("us", tz="UTC")),
                           **{f"k_{k}": pa.array(frame[k].astype("Int64"), pa.int64()) for k in keys}, **upto})
        # Event times written by Arrow's CSV writer (ISO 8601 with microseconds and ``Z``, which Postgres
        # reads exactly): formatting them as text in pandas cost seconds per hundred thousand rows.
        csv = io.BytesIO()
        pa_csv.write_csv(probes, csv, pa_csv.WriteOptions(include_header=False))
        csv.seek(0)
        cur.execute("CREATE TEMPORARY TABLE audit_rows (i BIGINT PRIMARY KEY, ts TIMESTAMPTZ NOT NULL, "
                    + ", ".join([*(f"k_{k} BIGINT" for k in keys), *(f"{u} TIMESTAMPTZ" for u in upto)])
                    + ") ON COMMIT DROP")
        cur.copy_expert(f"COPY audit_rows ({', '.join(probes.column_names)}) FROM STDIN WITH (FORMAT csv)", csv)
        cur.execute("ANALYZE audit_rows")
        for n, view in enumerate(views):
            probe = [*(f"k_{k}" for k in view.keys), f"u_{n}"]
            matches = " AND ".join([*(f"g.{k} = q.k_{k}" for k in view.keys), f"g.{TIMESTAMP_FIELD} <= q.u_{n}"])
            in_ttl = f"f.audit_stamp >= p.ts - make_interval(secs => {view.ttl_seconds})"
            columns = ", ".join(f"CASE WHEN {in_ttl} THEN f.{f} END AS {f}" for f in view.features)
            found = copy_out_csv(
                cur,
                f"WITH probes AS (SELECT DISTINCT {', '.join(probe)} FROM audit_rows WHERE u_{n} IS NOT NULL), "
                f"found AS (SELECT q.*, g.* FROM probes q CROSS JOIN LATERAL "
                f"(SELECT g.{TIMESTAMP_FIELD} AS audit_stamp, {', '.join(f'g.{f}' for f in view.features)} "
                f"FROM {view.table} g WHERE {matches} ORDER BY g.{TIMESTAMP_FIELD} DESC LIMIT 1) g) "
                f"SELECT p.i, {columns} FROM audit_rows p LEFT JOIN found f ON "
                + " AND ".join(f"f.{c} = p.{c}" for c in probe) + " ORDER BY p.i")
            expected[view.name] = found.to_pandas().drop(columns="i").reset_index(drop=True)
    return expected


def _differ(got: pd.Series, want: pd.Series) -> np.ndarray:
    """Where two columns of feature values differ: one missing and not the other, or numbers apart."""
    import pandas as pd

    a, b = pd.to_numeric(got, errors="coerce").to_numpy(np.float64, na_value=np.nan), \
        pd.to_numeric(want, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    missing_a, missing_b = np.isnan(a), np.isnan(b)
    both = ~missing_a & ~missing_b
    close = np.zeros(len(a), bool)
    close[both] = np.isclose(a[both], b[both], rtol=1e-9, atol=1e-12)
    return (missing_a != missing_b) | (both & ~close)


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half), by ranks: the
    Mann-Whitney statistic. ``None`` unless both classes are present."""
    from scipy.stats import rankdata  # imported here: only the training-set checks need it

    positives = int(labels.sum())
    negatives = labels.size - positives
    if not positives or not negatives:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def audit(postgres: PostgresResource, frame: pd.DataFrame, views: list[ViewToAudit], features: list[str]
          ) -> LeakageReport:
    """:class:`LeakageReport` of a training set ``frame`` (columns ``<view>__<feature>``, the keys,
    ``event_timestamp`` and the label): the point-in-time audit of ``views``, the AUC screen of ``features``."""
    report = LeakageReport(rows=len(frame))
    frame = frame.reset_index(drop=True)
    expected = expected_values(postgres, frame, views) if views else {}
    for view in views:
        want = expected[view.name]
        wrong = 0
        for feature in view.features:
            column = f"{view.name}__{feature}"
            differs = _differ(frame[column], want[feature])
            report.values_compared += len(frame)
            wrong += int(differs.sum())
            for i in np.flatnonzero(differs)[:EXAMPLES - len(report.examples)]:
                report.examples.append(f"row {i} ({', '.join(f'{k}={frame.at[i, k]}' for k in view.keys)}, "
                                       f"{frame.at[i, TIMESTAMP_FIELD]}) {column}: training set "
                                       f"{frame.at[i, column]!r}, latest row at or before it {want.at[i, feature]!r}")
        report.mismatches[view.name] = wrong
    labels = frame[LABEL].to_numpy(np.int64)
    for column in features:
        values = frame[column].to_numpy(np.float64, na_value=np.nan)
        present = ~np.isnan(values)
        score = auc(labels[present], values[present])
        if score is not None:
            report.auc[column] = score
    return report
