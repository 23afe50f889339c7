"""DuckDB's reference in bench.gold_duckdb keeps exactly the lines the project's parser keeps, with the same ids.

``bench.silver_gold`` compares gold tables, where a rule written wrong shows only if the data set
happens to exercise it; here every line is compared with the parser, on generated malformed lines
and on hand-written edges of the number and separator rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import gold_duckdb
from taobao_assets.silver_tables import HISTORY_COLUMNS, PROFILE_COLUMNS, USER_ID_FIELD
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.format import SPLITS, FileKind
from taobao_assets.source.generate import GeneratorConfig, generate
from taobao_assets.source.parser import CommonFeaturesRecord, SampleRecord, parse_file

ITEM = (("205", "11", "1.0"), ("206", "12", "1.0"), ("207", "13", "1.0"), ("216", "14", "1.0"))


def _list(*entries: tuple[str, str, str]) -> str:
    return "\x01".join(f"{field}\x02{feature}\x03{value}" for field, feature, value in entries)


def _sample(feature_list: str = _list(*ITEM), sid: str = "1", click: str = "0", conversion: str = "0",
            key: str = "k1", count: str | None = None) -> bytes:
    entries = str(len(feature_list.split("\x01")) if feature_list else 0) if count is None else count
    return f"{sid},{click},{conversion},{key},{entries},{feature_list}\n".encode()


def _common(feature_list: str, key: str = "k1", count: str | None = None) -> bytes:
    entries = str(len(feature_list.split("\x01")) if feature_list else 0) if count is None else count
    return f"{key},{entries},{feature_list}\n".encode()


#: Values and ids around what ``float()``, 64 bits and the value characters allow.
VALUES = ["1.0", ".5", "5.", "+1", "-1E+05", "1e-400", "0e999", "1" + "0" * 30, "1e400", "1" + "0" * 400, ".", "1e",
          "--1", "nan", "1_0", ""]
IDS = ["0007", "9223372036854775807", "9223372036854775808", "0" * 30 + "1", " 1", "12345678901234567890"]
SAMPLE_EDGES = [
    *(_sample(_list(("205", "1", value))) for value in VALUES),
    *(_sample(_list(("205", feature, "1"))) for feature in IDS), _sample(_list(("301", IDS[2], "1"), *ITEM)),
    _sample(_list(("205", "7", "1"), ("205", "8", "1"), ("206", "9", "2"))), _sample(_list(("101", "1", "1"))),
    _sample(_list(*ITEM) + "\x01", count="5"), _sample(_list(*ITEM).replace("\x03", "\x03\x03", 1)),
    _sample(""), _sample("", count="00"), _sample("", count="1"), _sample(count="+4"), _sample(sid=""),
    _sample(sid="0" * 30 + "1"), _sample(sid="99999999999999999999"), _sample(click="1", conversion="1"),
    _sample(click="0", conversion="1"), _sample(key="a-b_C9"), _sample(key="k\u00e9"), _sample(sid="1\u00ff"),
    b"1,0,0,k1,1,205\x021\x031.0,extra\n", b"\n", _sample().replace(b",k1,", b",k\xff,"), _sample()[:-1],
]
COMMON_EDGES = [
    _common(_list(("101", "7", "1"), ("121", "8", "1"), ("109_14", "5", "2"), ("110_14", "6", "1"),
                  ("109_14", "05", "1"), ("109_14", "3", "1"))),
    _common(_list(("121", "8", "1"), ("101", "7", "1"), ("101", "9", "1")), key="k2"), _common("", key="k3"),
    _common(_list(("101", "7", "1")), key="k4", count="99999999999999999999"),
    _common(_list(("205", "1", "1")), key="k5"), _common(_list(("101", "1", "1")), key=""),
    _common(_list(("101", "1", "1e999")), key="k6"), _common(_list(("101", "12345678901234567890", "1")), key="k7"),
]


def _duckdb_rows(folder: Path) -> tuple[dict[int, tuple[Any, ...]], dict[tuple[str, int], tuple[Any, ...]]]:
    """What DuckDB keeps: item ids per sample ordinal; user, profile and history sizes per file and line."""
    con = gold_duckdb.connect()
    gold_duckdb.parse(con, folder, Timeline.from_folder(folder))
    items = ", ".join(gold_duckdb.ITEM_KEYS)
    samples = {row[0]: row[1:] for row in con.execute(f"SELECT ordinal, {items} FROM impressions").fetchall()}
    sizes = ", ".join(f"len(list_distinct({name}))" for name in HISTORY_COLUMNS)
    commons = {(row[0], row[1]): row[2:] for row in con.execute(
        f"SELECT source_file, source_line, user_id, {', '.join(PROFILE_COLUMNS)}, {sizes} FROM user_context"
    ).fetchall()}
    return samples, commons


def _parser_rows(folder: Path) -> tuple[dict[int, tuple[Any, ...]], dict[tuple[str, int], tuple[Any, ...]]]:
    """The same, from the project's parser."""
    timeline = Timeline.from_folder(folder)
    samples, commons = {}, {}
    for split in SPLITS:
        for record in parse_file(folder / FileKind.SAMPLE_SKELETON.file_name(split)):
            if isinstance(record, SampleRecord):
                ordinal = timeline.ordinal(split, record.line_number)
                samples[ordinal] = tuple(record.feature_id(f) for f in gold_duckdb.ITEM_KEYS.values())
        for record in parse_file(folder / FileKind.COMMON_FEATURES.file_name(split)):
            if isinstance(record, CommonFeaturesRecord):
                commons[(record.source, record.line_number)] = (
                    record.feature_id(USER_ID_FIELD), *(record.feature_id(f) for f in PROFILE_COLUMNS.values()),
                    *(len({feature for feature, _ in record.histories[f]}) for f in HISTORY_COLUMNS.values()))
    return samples, commons


def test_duckdb_keeps_the_parsers_lines_and_ids_with_every_generated_malformation(tmp_path: Path):
    generate(GeneratorConfig(rows=3_000, seed=5, out=tmp_path, malformed_fraction=0.01, progress=False))
    duckdb, parser = _duckdb_rows(tmp_path), _parser_rows(tmp_path)
    assert len(duckdb[0]) == 3_000
    assert duckdb == parser


def test_duckdb_agrees_with_the_parser_on_number_and_separator_edges(tmp_path: Path):
    for split in SPLITS:
        (tmp_path / FileKind.SAMPLE_SKELETON.file_name(split)).write_bytes(b"".join(SAMPLE_EDGES))
        (tmp_path / FileKind.COMMON_FEATURES.file_name(split)).write_bytes(b"".join(COMMON_EDGES))
    duckdb, parser = _duckdb_rows(tmp_path), _parser_rows(tmp_path)
    assert 0 < len(parser[0]) < 2 * len(SAMPLE_EDGES) and 0 < len(parser[1]) < 2 * len(COMMON_EDGES)
    assert duckdb == parser
