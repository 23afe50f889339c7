"""Analytics: daily reports over silver and gold, computed by Trino and stored as Iceberg tables.

Each asset runs one ``.sql`` file of :data:`SQL_DIR` in Trino and writes table
``iceberg.analytics.<asset name>`` (the lakehouse catalog Spark shares, so Spark reads the
reports too):

- ``ctr_cvr_by_category_position``: CTR and CVR per day, item category and position;
- ``top_shops_by_conversions``: the day's top 10 shops, with their 7-day gold features (a query
  that joins the Iceberg and the Postgres catalogs);
- ``funnel_by_segment``: impression -> click -> conversion per day, gender and age, in events and
  distinct users.

A file creates its table if needed, then ``INSERT INTO`` it the days' new rows, which the asset
runs as one ``MERGE`` replacing the rows stored for those days (:func:`replacing_days`), so a
re-run replaces them; its last statement reads the days back, shown in Dagster as a Markdown
table. Trino's Iceberg connector has no multi-statement transactions and no ``INSERT OVERWRITE``,
so a delete then an insert would be two commits, with the days empty between them (or for good,
if the run died there). The ``MERGE`` is one commit: its source is one row per day to replace,
which matches and deletes every stored row of that day, plus the new rows, which match nothing
and are inserted. A reader sees the old days or the new ones.

Backfills run as one run over the whole range (:class:`BackfillPolicy` single run): the SQL
groups by day, so Trino does seven days in one pass instead of seven times the fixed cost.

Templates. The files hold ``${name}`` placeholders (:class:`string.Template`), filled by
:func:`render` only with dates, UTC timestamps and identifiers, each checked for its type, so a
value can never change the shape of the SQL; the same mechanism lets the cross-engine check run
one file on Trino, Spark and Postgres with each engine's table names.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from taobao_assets import failpoints
from taobao_assets.assets.silver import IMPRESSIONS_KEY, USER_CONTEXT_KEY
from taobao_assets.partitions import days_up_to_the_day
from taobao_assets.resources.trino import TrinoResource, split_statements
from taobao_assets.server_loss import SERVER_RETRY, on_server_loss

# pandas and the Trino client are imported where a report runs: every run process loads these definitions.
if TYPE_CHECKING:
    import pandas as pd

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
GROUP = "analytics"
#: Trino's catalog names, fixed by the server's configuration (deploy/services/trino.py).
TRINO_ICEBERG = "iceberg"
TRINO_POSTGRES = "postgresql"
#: Rows of a report shown in the Dagster UI; the table holds them all.
PREVIEW_ROWS = 20

SqlValue = date | datetime | str
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_INSERT = re.compile(r"INSERT\s+INTO\s+(\S+)\s+(.*)", re.DOTALL | re.IGNORECASE)


def sql_literal(value: SqlValue) -> str:
    """SQL text of a template value: a date or UTC timestamp literal, or a checked identifier.

    The literals are spelled so that Trino, Spark and Postgres all read them the same way (a
    ``TIMESTAMP '...'`` literal carries its zone in Trino but drops it in Postgres).
    """
    if isinstance(value, datetime):
        if value.utcoffset() != timedelta(0):
            raise ValueError(f"timestamp {value!r} must be in UTC (an aware datetime with offset 0)")
        return f"CAST('{value.astimezone(UTC).isoformat(sep=' ')}' AS TIMESTAMP WITH TIME ZONE)"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is neither a date, a UTC timestamp nor an identifier (a.b.c)")


def render(path: Path, values: Mapping[str, SqlValue]) -> list[str]:
    """The statements of the SQL file at ``path`` with its ``${name}`` placeholders filled."""
    try:
        text = Template(path.read_text()).substitute({k: sql_literal(v) for k, v in values.items()})
    except KeyError as missing:
        raise ValueError(f"{path}: placeholder ${{{missing.args[0]}}} has no value "
                         f"(given: {sorted(values)})") from None
    statements = split_statements(text)
    if not statements:
        raise ValueError(f"{path}: no SQL statement in the file")
    return statements


def replacing_days(insert: str, columns: Sequence[str], first: date, last: date) -> str:
    """``INSERT INTO <table> <query>`` of a report as one ``MERGE`` that replaces the rows of the days
    ``first`` .. ``last`` with the query's (the module docstring says why and how)."""
    found = _INSERT.fullmatch(insert.strip())
    if found is None:
        raise ValueError(f"not an INSERT INTO <table> <query>: {insert[:80]!r}")
    table, query = found.groups()
    return (f"MERGE INTO {table} AS t\nUSING (\n"
            f"WITH new_rows AS (\n{query}\n)\n"
            # one row per day to replace: it matches, and so deletes, every stored row of its day
            f"SELECT d.day AS replaced_day, n.* FROM UNNEST(sequence({sql_literal(first)}, {sql_literal(last)})) "
            f"AS d (day) LEFT JOIN new_rows AS n ON false\n"
            # the new rows: they match nothing and are inserted
            f"UNION ALL SELECT CAST(NULL AS date), n.* FROM new_rows AS n\n"
            f") AS s\nON t.day = s.replaced_day\n"
            f"WHEN MATCHED THEN DELETE\n"
            f"WHEN NOT MATCHED AND s.replaced_day IS NULL THEN INSERT ({', '.join(columns)}) "
            f"VALUES ({', '.join(f's.{c}' for c in columns)})")


def run_report(trino_resource: TrinoResource, report: "Report", first: date, last: date) -> "pd.DataFrame":
    """Run ``report``'s file for the days ``first`` .. ``last``, its ``INSERT`` as :func:`replacing_days`."""
    def statement(text: str) -> str:
        if not text.lstrip().upper().startswith(f"INSERT INTO {report.trino_table.upper()}"):
            return text
        columns = trino_resource.query_df(f"DESCRIBE {report.trino_table}")["Column"].tolist()
        return replacing_days(text, columns, first, last)
    return run_trino_script(trino_resource, report.sql_path, {"first_day": first, "last_day": last}, statement)


def run_trino_script(
    trino_resource: TrinoResource, path: Path, values: Mapping[str, SqlValue],
    rewrite: Callable[[str], str] = lambda statement: statement,
) -> "pd.DataFrame":
    """Run every statement of the template at ``path`` in order, each through ``rewrite`` just before it
    runs (after the earlier ones); return the last one's result."""
    import pandas as pd
    from trino.exceptions import TrinoQueryError

    statements = render(path, values)
    result = pd.DataFrame()
    for number, statement in enumerate(statements, start=1):
        try:
            result = trino_resource.query_df(rewrite(statement))
        except TrinoQueryError as error:
            error.add_note(f"in {path}, statement {number} of {len(statements)}")
            raise
        failpoints.reached("analytics.statement_run")
    return result


def day_range(context: AssetExecutionContext) -> tuple[date, date]:
    """First and last day of the run's partition or partition range."""
    window = context.partition_time_window
    return window.start.date(), window.end.date() - timedelta(days=1)


def markdown(frame: "pd.DataFrame", limit: int = PREVIEW_ROWS) -> str:
    shown = frame.head(limit)
    more = f"\n\n{len(frame) - limit:,} more rows in the table." if len(frame) > limit else ""
    return shown.to_markdown(index=False, floatfmt=".4g", missingval="NULL") + more


@dataclass(frozen=True)
class Report:
    """An analytics asset: a table of ``iceberg.analytics`` filled by ``<name>.sql``."""

    name: str
    description: str
    #: The assets the SQL reads; ``silver/user_context`` is read up to the day (a user's context
    #: is stored on the day of its first impression), every other one on the same day.
    reads: tuple[AssetKey, ...]

    @property
    def key(self) -> AssetKey:
        return AssetKey([GROUP, self.name])

    @property
    def sql_path(self) -> Path:
        return SQL_DIR / f"{self.name}.sql"

    @property
    def trino_table(self) -> str:
        return f"{TRINO_ICEBERG}.{GROUP}.{self.name}"


REPORTS = (
    Report("ctr_cvr_by_category_position",
           "Daily CTR and CVR per item category and position, from silver impressions (Trino).",
           (IMPRESSIONS_KEY,)),
    Report("top_shops_by_conversions",
           "The day's top 10 shops by conversions with their 7-day gold features: Trino joining "
           "silver (Iceberg) and gold (Postgres).",
           (IMPRESSIONS_KEY, AssetKey(["gold", "shop_features"]))),
    Report("funnel_by_segment",
           "Daily impression -> click -> conversion funnel per gender and age bucket of the user "
           "context, in events and distinct users (Trino).",
           (IMPRESSIONS_KEY, USER_CONTEXT_KEY)),
)


def report_asset(report: Report, daily: DailyPartitionsDefinition) -> AssetsDefinition:
    @asset(
        retry_policy=SERVER_RETRY,
        key=report.key,
        deps=[AssetDep(key, partition_mapping=days_up_to_the_day(daily) if key == USER_CONTEXT_KEY else None)
              for key in report.reads],
        partitions_def=daily,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"trino", "iceberg"},
        description=report.description,
        metadata={"dagster/table_name": report.trino_table,
                  "sql_file": str(report.sql_path.relative_to(SQL_DIR.parent.parent))},
    )
    @on_server_loss("trino", "minio", "postgres")
    def _report(context: AssetExecutionContext, trino: TrinoResource) -> MaterializeResult:
        first, last = day_range(context)
        context.log.info(f"{report.trino_table}: running {report.sql_path.name} for {first} .. {last}")
        rows = run_report(trino, report, first, last)
        return MaterializeResult(metadata={
            "row_count": len(rows),
            "dagster/row_count": len(rows),
            "days": f"{first} .. {last}",
            "preview": MetadataValue.md(markdown(rows)),
        })

    return _report


def analytics_assets(daily: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    return [report_asset(report, daily) for report in REPORTS]
