"""DuckDB's gold tables straight from the raw files: the reference ``bench.silver_gold`` times Spark against.

Silver, as far as gold reads it (:func:`parse`). Each raw file is read one whole line per row
(``read_csv`` with NUL as the delimiter, Latin-1 so that any byte reads) and numbered in file order,
malformed lines included, so a sample's ordinal and day are those of
:class:`~taobao_assets.source.event_time.Timeline`. A line is kept when the project's parser would
accept it (docs/architecture.md, "The source data contract"): the right column count; digits for
ids and counts; labels 0 or 1 with conversion <= click; a word for ``common_feature_index``; a
``feature_list`` matching the grammar of its file kind (:func:`feature_list_grammar`) with as many
entries as ``num_features``, every id within 64 bits and every value finite. Every column has an
ASCII character class, so a non-ASCII byte (the parser's ``bad_encoding``) fails one of them, and a
last line cut short fails the grammar. Of a kept line, ``string_split`` on chr(1)/chr(2)/chr(3)
gives what gold reads, as silver's columns hold it (:mod:`taobao_assets.silver_tables`): the first
id of each single-valued field (a repeat does not replace it) and every id of the history fields.

Gold (:func:`gold`). The steps of :func:`taobao_assets.assets.gold.gold_frames` in SQL: the latest
context per ``common_feature_index`` before the day's end, the window's impressions with their
user, the priors of each window, the counters per table's keys, the smoothed rates, and for users
the attributes of their latest context. The rates are the formulas of :mod:`taobao_assets.features`
applied to SQL terms (:class:`Sql`), and each table has its contract's columns in the contract's
order, ``event_timestamp`` (the day's end, as the Postgres IO manager stamps it) included.

A rule written wrong here shows up as a difference: ``bench.silver_gold`` compares every value with
Spark's, on a data set with every kind of malformed line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from taobao_assets.assets.gold import GROUPING, HISTORY_ARRAYS, LONGEST_WINDOW
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.features import WINDOWS_DAYS, global_rate, smoothed_ctr, smoothed_cvr
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.partitions import end_of_day
from taobao_assets.silver_tables import HISTORY_COLUMNS, ITEM_COLUMNS, PROFILE_COLUMNS, USER_ID_FIELD
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.format import FIELDS_BY_KIND, KEY_CHARS, SPLITS, FileKind

WORD = f"[{re.escape(KEY_CHARS.decode())}]+"
#: Item columns gold groups by (item, category, shop, brand), with their field ids.
ITEM_KEYS = {name: ITEM_COLUMNS[name] for keys in GROUPING.values() for name in keys if name in ITEM_COLUMNS}
#: The latest of several contexts, as gold breaks ties: event time, then file and line.
LATEST_FIRST = "event_time_ms DESC, source_file DESC, source_line DESC"


def connect() -> Any:
    """An in-memory DuckDB on both cores (Spark's ``local[*]`` has as many), in UTC as Spark's session."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET TimeZone = 'UTC'")
    return con


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def feature_list_grammar(kind: FileKind, short_numbers: bool = False) -> str:
    """RE2 pattern of a non-empty ``feature_list`` of ``kind``: entries ``field\\x02id\\x03value``
    joined by ``\\x01``, each field known and allowed in that kind, each id digits, each value a text
    Python's ``float()`` converts (``nan``, ``inf``, blanks and underscores are outside the value
    characters of format.VALUE_CHARS).

    With ``short_numbers``, ids and integer parts have at most 18 digits and exponents at most 2: a
    list matching that needs no conversion to know that its ids fit in 64 bits and its values are finite.
    """
    digits, exponent = ("{1,18}", "{1,2}") if short_numbers else ("+", "+")
    value = rf"[+-]?(?:[0-9]{digits}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{exponent})?"
    fields = "|".join(re.escape(f) for f in sorted(FIELDS_BY_KIND[kind]))
    entry = rf"(?:{fields})\x02[0-9]{digits}\x03{value}"
    return rf"{entry}(?:\x01{entry})*"


def _lines(path: Path) -> str:
    """The lines of a raw file, one row each, in file order (a blank line reads as NULL).

    A NUL byte in a line, or a carriage return, stops the read with DuckDB's error naming the line:
    the generator writes neither, and an error is better than a silent difference."""
    return (f"read_csv({_quote(str(path))}, header=false, auto_detect=false, columns={{'line': 'VARCHAR'}}, "
            f"sep=chr(0), quote='', escape='', encoding='latin-1')")


def _entries(feature_list: str, count: str, kind: FileKind) -> str:
    """SELECT items of a line's entries: ``fields`` and ``ids`` (lists in entry order), and
    ``entries_ok``: whether the parser accepts the feature list with ``count`` entries.

    Nearly every line matches the grammar with short numbers; only one that matches just the
    general grammar has its numbers converted: an id too large for 64 bits casts to NULL, and a
    value too large for a double to infinity."""
    entries = f"string_split({feature_list}, chr(1))"
    value = "try_cast(split_part(e, chr(3), 2) AS DOUBLE)"
    return f"""
        list_transform({entries}, lambda e: split_part(e, chr(2), 1)) AS fields,
        list_transform({entries}, lambda e: try_cast(split_part(split_part(e, chr(2), 2), chr(3), 1) AS BIGINT)) AS ids,
        CASE WHEN {feature_list} = '' THEN try_cast({count} AS BIGINT) = 0
             WHEN len(ids) IS DISTINCT FROM try_cast({count} AS BIGINT) THEN false
             WHEN regexp_full_match({feature_list}, '{feature_list_grammar(kind, short_numbers=True)}') THEN true
             WHEN regexp_full_match({feature_list}, '{feature_list_grammar(kind)}')
                  THEN list_count(ids) = len(ids)
                       AND isfinite(list_max(list_transform({entries}, lambda e: abs({value}))))
             ELSE false
        END AS entries_ok"""


def _first_id(field_id: str) -> str:
    return f"ids[list_position(fields, '{field_id}')]"


def impressions_sql(folder: Path, timeline: Timeline) -> str:
    """Good sample lines: ordinal, day (offset from the first day), labels, context key and gold's item keys."""
    kind = FileKind.SAMPLE_SKELETON
    first = {split: timeline.split_start_ordinal(split) for split in SPLITS}
    lines = " UNION ALL ".join(
        f"SELECT {first[split]} + row_number() OVER () - 1 AS ordinal, string_split(line, ',') AS c "
        f"FROM {_lines(folder / kind.file_name(split))}" for split in SPLITS)
    items = ", ".join(f"{_first_id(fid)} AS {name}" for name, fid in ITEM_KEYS.items())
    return f"""
        CREATE TEMP TABLE impressions AS
        WITH checked AS (
            SELECT ordinal, c, {_entries('c[6]', 'c[5]', kind)}
            FROM ({lines})
            WHERE len(c) = 6 AND regexp_full_match(c[1], '[0-9]+') AND try_cast(c[1] AS BIGINT) IS NOT NULL
              AND c[2] IN ('0', '1') AND c[3] IN ('0', '1') AND c[3] <= c[2]
              AND regexp_full_match(c[4], '{WORD}') AND regexp_full_match(c[5], '[0-9]+')
        )
        SELECT ordinal, ordinal * {timeline.config.days} // {timeline.total} AS day, c[2]::INT AS click,
               c[3]::INT AS conversion, c[4] AS common_feature_index, {items}
        FROM checked WHERE entries_ok"""


def user_context_sql(folder: Path, timeline: Timeline) -> str:
    """Good common-features lines: key, event time, file and line (the tie-breaks), user, profile and
    history ids. Each has its split's first sample time, the Spark side's rule for every row."""
    kind = FileKind.COMMON_FEATURES
    lines = " UNION ALL ".join(
        f"SELECT {timeline.timestamp_ms(timeline.split_start_ordinal(split))} AS event_time_ms, "
        f"{_quote(kind.file_name(split))} AS source_file, row_number() OVER () AS source_line, "
        f"string_split(line, ',') AS c FROM {_lines(folder / kind.file_name(split))}" for split in SPLITS)
    profile = ", ".join(f"{_first_id(fid)} AS {name}" for name, fid in PROFILE_COLUMNS.items())
    histories = ", ".join(f"list_filter(ids, lambda x, i: fields[i] = '{fid}') AS {name}"
                          for name, fid in HISTORY_COLUMNS.items())
    return f"""
        CREATE TEMP TABLE user_context AS
        WITH checked AS (
            SELECT event_time_ms, source_file, source_line, c, {_entries('c[3]', 'c[2]', kind)}
            FROM ({lines})
            WHERE len(c) = 3 AND regexp_full_match(c[1], '{WORD}') AND regexp_full_match(c[2], '[0-9]+')
        )
        SELECT c[1] AS common_feature_index, event_time_ms, source_file, source_line,
               {_first_id(USER_ID_FIELD)} AS user_id, {profile}, {histories}
        FROM checked WHERE entries_ok"""


def parse(con: Any, folder: Path, timeline: Timeline) -> tuple[int, int]:
    """Fill ``impressions`` and ``user_context`` from the raw files; their row counts."""
    con.execute(impressions_sql(folder, timeline))
    con.execute(user_context_sql(folder, timeline))
    impressions, user_contexts = (con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                                  for t in ("impressions", "user_context"))
    return impressions, user_contexts


@dataclass(frozen=True)
class Sql:
    """A SQL term that composes with ``+ * /`` like a number, so the feature formulas written for
    Spark columns and floats (:mod:`taobao_assets.features`) also write DuckDB's expressions."""

    text: str

    def _op(self, op: str, other: Sql | float) -> Sql:
        # A float goes in as text cast to DOUBLE: DuckDB reads a bare 0.1 as a DECIMAL.
        term = other.text if isinstance(other, Sql) else f"'{other!r}'::DOUBLE"
        return Sql(f"({self.text} {op} {term})")

    def __add__(self, other: Sql | float) -> Sql:
        return self._op("+", other)

    def __mul__(self, other: Sql | float) -> Sql:
        return self._op("*", other)

    def __truediv__(self, other: Sql | float) -> Sql:
        return self._op("/", other)


def _counters(last: int) -> str:
    """Impressions, clicks and conversions over each window ending on day ``last``, as gold.counters sums them."""
    sums = []
    for w in WINDOWS_DAYS:
        inside = f"day > {last - w}"
        sums += [f"sum(CASE WHEN {inside} THEN 1 ELSE 0 END)::BIGINT AS impressions_{w}d",
                 f"sum(CASE WHEN {inside} THEN click ELSE 0 END)::BIGINT AS clicks_{w}d",
                 f"sum(CASE WHEN {inside} THEN conversion ELSE 0 END)::BIGINT AS conversions_{w}d"]
    return ", ".join(sums)


def _rates() -> dict[str, str]:
    """Each rate column's expression; the window's prior is the query parameter named after the column."""
    rates = {}
    for w in WINDOWS_DAYS:
        clicks, impressions, conversions = Sql(f"clicks_{w}d"), Sql(f"impressions_{w}d"), Sql(f"conversions_{w}d")
        rates[f"ctr_{w}d"] = smoothed_ctr(clicks, impressions, Sql(f"$ctr_{w}d")).text
        rates[f"cvr_{w}d"] = smoothed_cvr(conversions, clicks, Sql(f"$cvr_{w}d")).text
    return rates


def _priors(con: Any, last: int) -> dict[str, float]:
    """The window priors as gold.priors gets them: totals over the enriched impressions, then
    features.global_rate in Python (0 for a window without trials)."""
    names = [f"{what}_{w}d" for w in WINDOWS_DAYS for what in ("impressions", "clicks", "conversions")]
    totals = dict(zip(names, con.execute(f"SELECT {_counters(last)} FROM enriched").fetchall()[0], strict=True))
    priors = {}
    for w in WINDOWS_DAYS:
        priors[f"ctr_{w}d"] = float(global_rate(totals[f"clicks_{w}d"], totals[f"impressions_{w}d"]))
        priors[f"cvr_{w}d"] = float(global_rate(totals[f"conversions_{w}d"], totals[f"clicks_{w}d"]))
    return priors


def table_sql(name: str, last: int) -> str:
    """One gold table, its contract's columns in order; parameters: the priors and ``event_timestamp``."""
    table = next(t for t in GOLD_TABLES if t.name == name)
    keys = ", ".join(table.key_names)
    present = " AND ".join(f"{k} IS NOT NULL" for k in table.key_names)
    source = "counts LEFT JOIN user_attributes USING (user_id)" if name == "user_features" else "counts"
    expressions = {TIMESTAMP_FIELD: "$event_timestamp", **_rates()}
    select = ", ".join(f"{expressions.get(c.name, c.name)} AS {c.name}" for c in table.columns)
    return (f"WITH counts AS (SELECT {keys}, {_counters(last)} FROM enriched WHERE {present} GROUP BY {keys}) "
            f"SELECT {select} FROM {source}")


def gold(con: Any, timeline: Timeline) -> dict[str, pa.Table]:
    """Every gold table of the time line's last day, fetched as Arrow (as Spark's ``toArrow``)."""
    day = timeline.config.dates()[-1]
    last = timeline.config.days - 1
    day_end_ms = int(end_of_day(day).timestamp()) * 1000
    diversity = ", ".join(f"len(list_distinct({array}))::BIGINT AS {name}" for name, array in HISTORY_ARRAYS.items())
    con.execute(f"""CREATE TEMP TABLE contexts AS SELECT * FROM user_context WHERE event_time_ms < {day_end_ms}
                    QUALIFY row_number() OVER (PARTITION BY common_feature_index ORDER BY {LATEST_FIRST}) = 1""")
    con.execute(f"""CREATE TEMP TABLE enriched AS
                    SELECT i.*, c.user_id FROM impressions i LEFT JOIN contexts c USING (common_feature_index)
                    WHERE i.day > {last - LONGEST_WINDOW} AND i.day <= {last}""")
    con.execute(f"""CREATE TEMP TABLE user_attributes AS
                    SELECT user_id, {', '.join(PROFILE_COLUMNS)}, {diversity} FROM contexts
                    WHERE user_id IS NOT NULL
                    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY {LATEST_FIRST}) = 1""")
    params = {**_priors(con, last), "event_timestamp": end_of_day(day)}
    return {name: con.sql(table_sql(name, last), params=params).to_arrow_table() for name in GROUPING}
