"""Bronze -> silver with real Spark (local), Iceberg tables on MinIO, the JDBC catalog in Postgres.

Silver of the session's shared data set (``conftest.py``) is materialized once for all 5 days; the
tests then compare the tables with what the Python parser makes of the source files, with the
generator's list of malformed lines, and with themselves after a re-run.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    ExecuteInProcessResult,
    Failure,
    PartitionKeyRange,
    build_input_context,
    build_output_context,
)
from pyspark.sql import Row
from pyspark.sql import functions as F

from taobao_assets.assets.bronze import INDEX_HEADER
from taobao_assets.assets.silver import (
    IMPRESSIONS_KEY,
    QUARANTINE_KEY,
    SCHEMAS,
    USER_CONTEXT_KEY,
    bronze_parts,
)
from taobao_assets.checks.silver import silver_checks
from taobao_assets.io_managers.bronze import BronzeManifest
from taobao_assets.io_managers.iceberg import COLUMN_SCHEMA_KEY, IcebergIOManager, table_name, table_schema
from taobao_assets.partitions import event_time_config
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.settings import Settings
from taobao_assets.silver_tables import (
    COMBINATION_FIELDS,
    HISTORY_COLUMNS,
    IMPRESSIONS_SCHEMA,
    ITEM_COLUMNS,
    PROFILE_COLUMNS,
    USER_ID_FIELD,
    ObjectStore,
    parse_bronze,
)
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.format import COLUMNS, FIELDS, FileKind
from taobao_assets.source.generate import MALFORMED_FILE
from taobao_assets_tests.conftest import DAILY, EXAMPLES, TOPICS, materialize_silver, silver_resources

Key = tuple[str, int]


def _table(spark: SparkResource, settings: Settings, key: Any) -> Any:
    return spark.spark_session.table(table_name(settings.iceberg_catalog, key))


def _by_location(rows: Iterable[Row]) -> dict[Key, dict[str, Any]]:
    return {(r["source_file"], r["source_line"]): r.asDict(recursive=True) for r in rows}


def _decode(line: bytes, kind: FileKind) -> tuple[list[str], dict[str, list[tuple[int, float]]]]:
    """A good raw line, decoded here by plain splits (not by the project's parser): its leading
    columns and, per field id, every (feature id, value) in line order."""
    *columns, feature_list = line.rstrip(b"\r\n").decode().split(",", len(COLUMNS[kind]) - 1)
    entries: dict[str, list[tuple[int, float]]] = {}
    for entry in feature_list.split("\x01") if feature_list else []:
        field, rest = entry.split("\x02")
        feature, value = rest.split("\x03")
        entries.setdefault(field, []).append((int(feature), float(value)))
    return columns, entries


def _first(entries: dict[str, list[tuple[int, float]]], field: str) -> tuple[int | None, float | None]:
    """A single-valued field: its first entry counts (repeats are kept aside by the parser)."""
    return entries[field][0] if field in entries else (None, None)


def _expected_impression(line: bytes) -> dict[str, Any]:
    """A good sample line's silver columns, from the raw bytes and the contract's field maps."""
    (sample_id, click, conversion, index, _), entries = _decode(line, FileKind.SAMPLE_SKELETON)
    row: dict[str, Any] = {"sample_id": int(sample_id), "click": int(click), "conversion": int(conversion),
                           "common_feature_index": index}
    row |= {name: _first(entries, fid)[0] for name, fid in ITEM_COLUMNS.items()}
    for fid in COMBINATION_FIELDS:
        feature, value = _first(entries, fid)
        row |= {f"comb_{fid}_id": feature, f"comb_{fid}_value": value}
    return row


def _expected_context(line: bytes) -> dict[str, Any]:
    """A good common-features line's silver columns, from the raw bytes and the contract's field maps."""
    (index, _), entries = _decode(line, FileKind.COMMON_FEATURES)
    row: dict[str, Any] = {"common_feature_index": index, "user_id": _first(entries, USER_ID_FIELD)[0]}
    row |= {name: _first(entries, fid)[0] for name, fid in PROFILE_COLUMNS.items()}
    row |= {name: [{"id": i, "count": c} for i, c in entries.get(fid, [])] for name, fid in HISTORY_COLUMNS.items()}
    return row


def _good_lines(folder: Path, kind: FileKind) -> dict[Key, bytes]:
    """Every line of ``kind``'s files that the generator did not make malformed (its malformed.json)."""
    malformed = json.loads((folder / MALFORMED_FILE).read_text()) if (folder / MALFORMED_FILE).exists() else []
    bad = {(m["file"], m["line_number"]) for m in malformed}
    return {(path.name, n): line for path in sorted(folder.glob(f"{kind.value}_*.csv"))
            for n, line in enumerate(path.read_bytes().splitlines(keepends=True), 1) if (path.name, n) not in bad}


def _subset(row: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {name: row[name] for name in names}


def test_contract_gives_every_field_id_one_column() -> None:
    mapped = [*ITEM_COLUMNS.values(), *COMBINATION_FIELDS, USER_ID_FIELD, *PROFILE_COLUMNS.values(),
              *HISTORY_COLUMNS.values()]
    assert sorted(mapped) == sorted(FIELDS)


def test_every_day_materializes_with_all_checks_passing(silver: dict[str, ExecuteInProcessResult]) -> None:
    assert list(silver) == DAILY.get_partition_keys()
    for day, result in silver.items():
        assert result.success, day
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == len(silver_checks(DAILY, TOPICS)), day
        failed = {e.asset_check_key.name: e.metadata for e in evaluations if not e.passed}
        assert not failed, f"silver checks failed on {day}: {failed}"


def test_impressions_equal_the_python_parse_of_the_source_files(
    silver: dict[str, ExecuteInProcessResult], spark: SparkResource, settings: Settings, dataset: Path,
) -> None:
    expected = _good_lines(dataset, FileKind.SAMPLE_SKELETON)
    stored = _by_location(_table(spark, settings, IMPRESSIONS_KEY).collect())
    assert stored.keys() == expected.keys()
    timeline = Timeline.from_folder(dataset, event_time_config(settings))
    for (source, line), raw in expected.items():
        row, want = stored[source, line], _expected_impression(raw)
        assert _subset(row, want) == want, (source, line)
        split = source.removeprefix("sample_skeleton_").removesuffix(".csv")
        event = timeline.sample_time(split, line)
        assert int(row["event_time"].timestamp() * 1000) == event.timestamp_ms, (source, line)
        assert row["day"] == event.day


def test_user_context_equals_the_python_parse_of_the_source_files(
    silver: dict[str, ExecuteInProcessResult], spark: SparkResource, settings: Settings, dataset: Path,
) -> None:
    expected = _good_lines(dataset, FileKind.COMMON_FEATURES)
    stored = _by_location(_table(spark, settings, USER_CONTEXT_KEY).collect())
    assert stored.keys() == expected.keys()
    for key, raw in expected.items():
        want = _expected_context(raw)
        assert _subset(stored[key], want) == want, key


def test_quarantine_holds_exactly_the_malformed_lines_byte_for_byte(
    silver: dict[str, ExecuteInProcessResult], spark: SparkResource, settings: Settings, dataset: Path,
) -> None:
    injected = {(m["file"], m["line_number"]): m["reason"]
                for m in json.loads((dataset / MALFORMED_FILE).read_text())}
    assert len(injected) > 20
    quarantine = _by_location(_table(spark, settings, QUARANTINE_KEY).collect())
    assert {k: r["reason"] for k, r in quarantine.items()} == injected
    lines = {path.name: path.read_bytes().splitlines(keepends=True) for path in dataset.glob("*.csv")}
    for (source, line), row in quarantine.items():
        assert bytes(row["raw"]) == lines[source][line - 1], (source, line)
        is_sample = source.startswith(FileKind.SAMPLE_SKELETON.value)
        assert row["topic"] == (TOPICS.samples.name if is_sample else TOPICS.common_features.name)
        assert row["message"]


def _current_snapshot(spark: SparkResource, table: str) -> int:
    (row,) = spark.spark_session.sql(
        f"SELECT snapshot_id FROM {table}.snapshots ORDER BY committed_at DESC LIMIT 1").collect()
    return int(row.snapshot_id)


def test_rerun_of_one_day_leaves_every_table_identical(
    silver: dict[str, ExecuteInProcessResult], spark: SparkResource, settings: Settings, bronze: S3Resource,
) -> None:
    tables = [table_name(settings.iceberg_catalog, key) for key in SCHEMAS]
    before = {table: _current_snapshot(spark, table) for table in tables}
    result = materialize_silver(DAILY.get_partition_keys()[1], silver_resources(settings, spark, bronze))
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    for table in tables:
        # A new commit (the day really was rewritten) whose full contents equal the old commit's.
        assert _current_snapshot(spark, table) != before[table], table
        old = spark.spark_session.sql(f"SELECT * FROM {table} VERSION AS OF {before[table]}")
        new = spark.spark_session.table(table)
        assert old.count() == new.count() > 0, table
        assert old.exceptAll(new).isEmpty() and new.exceptAll(old).isEmpty(), table


def test_load_input_returns_the_days_of_a_time_window(
    silver: dict[str, ExecuteInProcessResult], spark: SparkResource, settings: Settings,
) -> None:
    days = DAILY.get_partition_keys()
    io_manager = IcebergIOManager.from_settings(settings, spark)
    context = build_input_context(asset_key=IMPRESSIONS_KEY, asset_partitions_def=DAILY,
                                  asset_partition_key_range=PartitionKeyRange(days[1], days[3]))
    frame = io_manager.load_input(context)
    per_day = {r["day"]: r["count"] for r in frame.groupBy("day").count().collect()}
    assert sorted(per_day) == [date.fromisoformat(d) for d in days[1:4]]
    whole = _table(spark, settings, IMPRESSIONS_KEY)
    assert sum(per_day.values()) == whole.where(F.col("day").between(days[1], days[3])).count()


def test_io_manager_refuses_a_frame_that_breaks_the_contract(
    silver: dict[str, ExecuteInProcessResult], spark: SparkResource, settings: Settings,
) -> None:
    day = DAILY.get_partition_keys()[0]
    table = _table(spark, settings, IMPRESSIONS_KEY)
    drifted = table.where(F.col("day") == day).withColumnRenamed("item_id", "itemid")
    context = build_output_context(
        asset_key=IMPRESSIONS_KEY, partition_key=day, asset_partitions_def=DAILY,
        definition_metadata={COLUMN_SCHEMA_KEY: table_schema(IMPRESSIONS_SCHEMA)},
    )
    rows_before = table.count()
    # A Failure that Dagster does not retry (taobao_assets/server_loss.py), raised from the contract's ValueError.
    with pytest.raises(Failure, match=r"ValueError: .*missing \[\('item_id', 'bigint'\)\].*unexpected \[\('itemid'"
                       ) as refused:
        IcebergIOManager.from_settings(settings, spark).handle_output(context, drifted)
    assert isinstance(refused.value.__cause__, ValueError) and not refused.value.allow_retries
    assert table.count() == rows_before


def _upload_as_bronze_part(s3: S3Resource, prefix: str, path: Path, day: date) -> BronzeManifest:
    """A local file stored as a one-part bronze day: gzip data plus an index of its line lengths."""
    lines = path.read_bytes().splitlines(keepends=True)
    start_ms = int((day - date(1970, 1, 1)) / timedelta(milliseconds=1))
    index = INDEX_HEADER + b"".join(
        b"%d,%d,%s,%d,%d\n" % (i, start_ms + i, path.name.encode(), i + 1, len(line))
        for i, line in enumerate(lines))
    s3.put_bytes(f"{prefix}part-00000.data.gz", gzip.compress(b"".join(lines)))
    s3.put_bytes(f"{prefix}part-00000.index.csv.gz", gzip.compress(index))
    part = {"partition": 0, "data_object": "part-00000.data.gz", "index_object": "part-00000.index.csv.gz"}
    return BronzeManifest(s3.bucket, prefix, {"day": day.isoformat(), "records": len(lines), "parts": [part]})


@pytest.mark.parametrize("kind", list(FileKind))
def test_spark_parse_agrees_with_the_python_parser_on_the_format_examples(
    kind: FileKind, spark: SparkResource, settings: Settings, minio_service: Any,
) -> None:
    path = EXAMPLES / f"{kind.value}_example.csv"
    s3 = S3Resource.from_settings(settings)
    day = DAILY.get_partition_keys()[0]
    prefix = f"tests/examples/{kind.value}/"
    manifest = _upload_as_bronze_part(s3, prefix, path, date.fromisoformat(day))
    try:
        parts = bronze_parts(spark.spark_session, manifest)
        rows = _by_location(parse_bronze(parts, kind, ObjectStore.from_resource(s3)).collect())
    finally:
        s3.delete_prefix(prefix)
    lines = {(path.name, n): line for n, line in enumerate(path.read_bytes().splitlines(keepends=True), 1)}
    assert rows.keys() == lines.keys() and len(rows) > 0
    expected = _expected_impression if kind is FileKind.SAMPLE_SKELETON else _expected_context
    for key, raw in lines.items():
        want = expected(raw)
        assert _subset(rows[key], want) == want, key
        assert rows[key]["reason"] is None and rows[key]["raw"] is None


def test_numeric_metadata_adds_up_to_the_files_lines_malformed_lines_and_history_entries(
    silver: dict[str, ExecuteInProcessResult], dataset: Path,
) -> None:
    """Summed over the days, each table's rates times its lines give the generator's malformed lines and
    the history entries of the good context lines, parsed here from the raw bytes."""
    malformed = json.loads((dataset / MALFORMED_FILE).read_text())
    lines = {kind: sum(len(p.read_bytes().splitlines()) for p in dataset.glob(f"{kind.value}_*.csv"))
             for kind in (FileKind.SAMPLE_SKELETON, FileKind.COMMON_FEATURES)}
    entries = {name: 0 for name in HISTORY_COLUMNS}
    for line in _good_lines(dataset, FileKind.COMMON_FEATURES).values():
        for name, values in _subset(_expected_context(line), HISTORY_COLUMNS).items():
            entries[name] += len(values)
    read = {IMPRESSIONS_KEY: 0, USER_CONTEXT_KEY: 0}
    rejected: dict[AssetKey, float] = {IMPRESSIONS_KEY: 0, USER_CONTEXT_KEY: 0}
    found_entries = dict.fromkeys(HISTORY_COLUMNS, 0.0)
    for result in silver.values():
        metadata = {m.asset_key: {k: v.value for k, v in m.metadata.items()}
                    for m in (e.materialization for e in result.get_asset_materialization_events())}
        for key in read:
            read[key] += metadata[key]["lines_read"]
            rejected[key] += metadata[key]["lines_read"] * metadata[key]["quarantine_rate"]
        good_contexts = metadata[USER_CONTEXT_KEY]["lines_read"] * (1 - metadata[USER_CONTEXT_KEY]["quarantine_rate"])
        for name in HISTORY_COLUMNS:
            found_entries[name] += metadata[USER_CONTEXT_KEY][f"entries_per_line/{name}"] * good_contexts
    assert read == {IMPRESSIONS_KEY: lines[FileKind.SAMPLE_SKELETON], USER_CONTEXT_KEY: lines[FileKind.COMMON_FEATURES]}
    for key, kind in ((IMPRESSIONS_KEY, FileKind.SAMPLE_SKELETON), (USER_CONTEXT_KEY, FileKind.COMMON_FEATURES)):
        assert rejected[key] == pytest.approx(sum(m["kind"] == kind.value for m in malformed)), key
    assert found_entries == pytest.approx(entries)
