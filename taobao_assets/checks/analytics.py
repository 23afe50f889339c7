"""The cross-engine check: Trino reads silver and gold exactly as Spark and Postgres do.

``trino_matches_spark_and_postgres`` runs on ``analytics/ctr_cvr_by_category_position`` after all
three reports of the run (they are its additional dependencies). For each day of the run, the
same SQL file runs on two engines, each with its own names for the tables, and every number must
be equal:

- ``silver_totals.sql``, Trino against Spark: rows, clicks, conversions and distinct sample ids of
  ``silver.impressions``; rows of ``silver.user_context`` and ``silver.quarantine``;
- ``gold_totals.sql`` for each gold table, Trino's ``postgresql`` catalog against Postgres itself
  (psycopg2): rows and the sum of every counter;
- ``analytics_totals.sql``, Trino (which wrote the reports) against Spark reading the same Iceberg
  tables: rows and summed impressions, clicks and conversions.

The reports must also add up: the category x position rows and the segment rows of a day sum to
the day's impressions, clicks and conversions in silver (as Spark counts them), which proves no
impression was lost or doubled by the reports' joins. A day without silver impressions fails the
check, since engines that agree on nothing prove nothing.
"""


from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetKey,
    DailyPartitionsDefinition,
    MetadataValue,
    asset_check,
)

from taobao_assets.assets.analytics import (
    GROUP,
    REPORTS,
    SQL_DIR,
    TRINO_ICEBERG,
    TRINO_POSTGRES,
    SqlValue,
    render,
)
from taobao_assets.assets.silver import IMPRESSIONS_KEY
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.gold_tables import SCHEMA as GOLD_SCHEMA
from taobao_assets.partitions import end_of_day
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.resources.trino import TrinoResource
from taobao_assets.settings import get_settings

# pandas is imported where the check uses it: every run process loads these definitions.
if TYPE_CHECKING:
    import pandas as pd

#: A number of the check: (source table, measure, day).
Key = tuple[str, str, date]
Totals = dict[Key, int | None]
Engine = Callable[[str], "pd.DataFrame"]

CHECKED_REPORT = AssetKey([GROUP, "ctr_cvr_by_category_position"])
#: Reports whose rows partition the day's impressions, so their sums must equal silver's.
ADDITIVE_REPORTS = ("ctr_cvr_by_category_position", "funnel_by_segment")
#: Silver's measure each additive report measure must equal.
RECONCILED = {"impressions": "row_count", "clicks": "clicks", "conversions": "conversions"}
MISMATCHES_SHOWN = 30


def _day_of(row: Mapping[str, Any]) -> date:
    """The day a totals row describes: its ``day``, or for gold the day its ``event_timestamp`` ends."""
    if "day" in row:
        value = row["day"]
        return value.date() if isinstance(value, datetime) else value
    stamp: datetime = row["event_timestamp"]
    return (stamp.astimezone(UTC) - timedelta(days=1)).date()


def totals(engine: Engine, statements: list[str]) -> Totals:
    """Every measure of every row the statements return, keyed by (source, measure, day)."""
    import pandas as pd

    found: Totals = {}
    for statement in statements:
        for row in engine(statement).to_dict("records"):
            day = _day_of(row)
            for measure, value in row.items():
                if measure not in ("source", "day", "event_timestamp"):
                    found[(row["source"], measure, day)] = None if pd.isna(value) else int(value)
    return found


def _spark_engine(spark: SparkResource) -> Engine:
    session = spark.spark_session
    return lambda sql: session.sql(sql).toPandas()


def _postgres_engine(postgres: PostgresResource) -> Engine:
    def query(sql: str) -> "pd.DataFrame":
        import pandas as pd

        with postgres.connect() as conn, conn.cursor() as cur:
            cur.execute(sql)
            return pd.DataFrame.from_records(cur.fetchall(), columns=[c.name for c in cur.description or []])
    return query


def _differences(left_name: str, left: Totals, right_name: str, right: Totals) -> list[dict[str, Any]]:
    return [
        {"source": key[0], "measure": key[1], "day": key[2], "engines": f"{left_name} vs {right_name}",
         "left": left.get(key), "right": right.get(key)}
        for key in sorted(left.keys() | right.keys()) if left.get(key) != right.get(key)
    ]


def _reconciliation(silver: Totals, reports: Totals, days: list[date]) -> list[dict[str, Any]]:
    """Additive reports' sums that differ from silver's day totals."""
    wrong = []
    for name in ADDITIVE_REPORTS:
        for day in days:
            for measure, silver_measure in RECONCILED.items():
                got = reports.get((f"{GROUP}.{name}", measure, day))
                want = silver.get(("silver.impressions", silver_measure, day))
                if got != want:
                    wrong.append({"source": f"{GROUP}.{name}", "measure": measure, "day": day,
                                  "engines": f"report vs silver {silver_measure}",
                                  "left": got, "right": want})
    return wrong


def _days(context: AssetCheckExecutionContext) -> list[date]:
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return [first + timedelta(days=n) for n in range((end - first).days)]


def analytics_checks(daily: DailyPartitionsDefinition) -> list[AssetChecksDefinition]:
    """The cross-engine check of the reports over ``daily``."""

    @asset_check(
        asset=CHECKED_REPORT,
        name="trino_matches_spark_and_postgres",
        partitions_def=daily,
        additional_deps=[IMPRESSIONS_KEY, *[AssetKey(["gold", t.name]) for t in GOLD_TABLES],
                         *[r.key for r in REPORTS if r.key != CHECKED_REPORT]],
        description="Per day, the same SQL gives the same numbers in Trino as in Spark (silver, analytics) and "
                    "in Postgres (gold sums), and the category/position and segment reports add up to silver's "
                    "impressions, clicks and conversions.",
    )
    def trino_matches_spark_and_postgres(
        context: AssetCheckExecutionContext, trino: TrinoResource, spark: SparkResource,
        postgres: PostgresResource,
    ) -> AssetCheckResult:
        import pandas as pd

        days = _days(context)
        catalog = get_settings().iceberg_catalog
        span: dict[str, SqlValue] = {"first_day": days[0], "last_day": days[-1]}
        ends: dict[str, SqlValue] = {"first_day_end": end_of_day(days[0]), "last_day_end": end_of_day(days[-1])}
        spark_engine, postgres_engine = _spark_engine(spark), _postgres_engine(postgres)

        def both(path: str, left: Engine, right: Engine, left_names: Mapping[str, SqlValue],
                 right_names: Mapping[str, SqlValue], values: Mapping[str, SqlValue]) -> tuple[Totals, Totals]:
            return (totals(left, render(SQL_DIR / path, {**values, **left_names})),
                    totals(right, render(SQL_DIR / path, {**values, **right_names})))

        trino_silver, spark_silver = both(
            "silver_totals.sql", trino.query_df, spark_engine,
            {"silver": f"{TRINO_ICEBERG}.silver"}, {"silver": f"{catalog}.silver"}, span)
        trino_reports, spark_reports = both(
            "analytics_totals.sql", trino.query_df, spark_engine,
            {"analytics": f"{TRINO_ICEBERG}.{GROUP}"}, {"analytics": f"{catalog}.{GROUP}"}, span)
        trino_gold: Totals = {}
        postgres_gold: Totals = {}
        for table in GOLD_TABLES:
            from_trino, from_postgres = both(
                "gold_totals.sql", trino.query_df, postgres_engine,
                {"gold": f"{TRINO_POSTGRES}.{GOLD_SCHEMA}"}, {"gold": GOLD_SCHEMA}, {**ends, "table": table.name})
            trino_gold.update(from_trino)
            postgres_gold.update(from_postgres)

        problems = [
            *_differences("trino", trino_silver, "spark", spark_silver),
            *_differences("trino", trino_gold, "postgres", postgres_gold),
            *_differences("trino", trino_reports, "spark", spark_reports),
            *_reconciliation(spark_silver, trino_reports, days),
        ]
        empty = [d for d in days if not spark_silver.get(("silver.impressions", "row_count", d))]
        compared = sum(len(left.keys() | right.keys()) for left, right in (
            (trino_silver, spark_silver), (trino_gold, postgres_gold), (trino_reports, spark_reports)))
        headline = pd.DataFrame([
            {"day": d, **{f"{m} ({engine})": values.get(("silver.impressions", m, d))
                          for m in ("row_count", "clicks", "conversions")
                          for engine, values in (("trino", trino_silver), ("spark", spark_silver))}}
            for d in days
        ])
        shown = pd.DataFrame(problems[:MISMATCHES_SHOWN])
        return AssetCheckResult(
            passed=not problems and not empty,
            metadata={
                "numbers_compared": compared,
                "mismatches": len(problems),
                "days_without_silver_impressions": MetadataValue.json([d.isoformat() for d in empty]),
                "silver_impressions_by_engine": MetadataValue.md(headline.to_markdown(index=False)),
                "mismatch_examples": MetadataValue.md(shown.to_markdown(index=False) if problems else "none"),
            },
        )

    return [trino_matches_spark_and_postgres]
