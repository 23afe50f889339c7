"""Silver + gold in Spark against DuckDB doing the same parse and aggregation (docs/architecture.md, "Benchmarks").

``python -m bench.silver_gold [--rows 200000]`` generates (once, cached under ``<state_dir>/bench``)
a synthetic data set of 7 days and measures, on the same local files:

- Spark (``settings.spark_master``): the raw files cut into newline-aligned chunks, each parsed by
  silver's own ``mapInArrow`` batch builder (:class:`~taobao_assets.silver_tables._Batch`, i.e. the
  project parser and the silver column contract) with the event time of :class:`Timeline`, then
  :func:`~taobao_assets.assets.gold.gold_tables` of the last day, every table counted;
- DuckDB: ``read_csv`` of the same files, ``feature_list`` split on chr(1)/chr(2)/chr(3) for the
  item/category/shop/brand ids and the user id, joined by ``common_feature_index``, and the same
  1/3/7-day counters per entity of the last day (day = ``ordinal * days // total``).

Bronze (MinIO) and Iceberg are left out on both sides: the figure is the compute. DuckDB extracts
only the ids the counters need, whereas the Spark parse validates every entry and builds every
silver column (profiles, histories) and gold also adds rates and user attributes: the ratio
includes that extra work. Common-features rows are all stamped with their split's first time (the
rule for unreferenced ones); the last day's tables need only that they precede its end.

The headline is Spark sample rows/s over DuckDB sample rows/s (target >= 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench import machine, markdown_table, peak_rss_mb, write_results
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.settings import get_settings
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.format import SPLITS, FileKind
from taobao_assets.source.generate import GeneratorConfig, generate

TARGET_RATIO = 0.5
CHUNK_BYTES = 8 << 20
CHUNK_SCHEMA = "path STRING, split STRING, start BIGINT, length BIGINT, first_line BIGINT"
REPO = Path(__file__).resolve().parent.parent
KINDS = (FileKind.SAMPLE_SKELETON, FileKind.COMMON_FEATURES)


def _dataset(rows: int) -> Path:
    folder = get_settings().state_dir / "bench" / f"silver-gold-{rows}"
    if not (folder / "generator_truth.json").exists():
        generate(GeneratorConfig(rows=rows, seed=11, out=folder, progress=False))
    return folder


def _chunks(path: Path, split: str) -> Iterator[tuple[str, str, int, int, int]]:
    """Newline-aligned byte ranges of ``path`` of about CHUNK_BYTES, with their first line number."""
    start, line = 0, 1
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES) + f.readline():
            yield str(path), split, start, len(block), line
            line += block.count(b"\n")
            start += len(block)


@dataclass(frozen=True)
class LocalChunkParser:
    """``mapInArrow`` over local chunks: the silver batch builder fed from files, not bronze parts."""

    kind: FileKind
    timeline: Timeline

    def __call__(self, chunks: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from taobao_assets.silver_tables import PARSE_SPECS, BronzeRecord, _Batch

        batch = _Batch(PARSE_SPECS[self.kind])
        for chunk in (row for arrow in chunks for row in arrow.to_pylist()):
            with open(chunk["path"], "rb") as f:
                f.seek(chunk["start"])
                lines = f.read(chunk["length"]).splitlines(keepends=True)
            source = Path(chunk["path"]).name
            for line_number, raw in enumerate(lines, chunk["first_line"]):
                ordinal = (self.timeline.ordinal(chunk["split"], line_number)
                           if self.kind is FileKind.SAMPLE_SKELETON
                           else self.timeline.split_start_ordinal(chunk["split"]))
                when = self.timeline.at(ordinal)
                batch.add(BronzeRecord(raw, line_number, when.timestamp_ms, source, line_number), 0, when.day)
                if batch.full:
                    yield batch.take()
        if batch.rows:
            yield batch.take()


class TreePeak:
    """Peak of the summed RSS of a process and its descendants (the JVM and its Python workers)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                todo += [int(p) for p in task.read_text().split()]
        return pids

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            total = 0
            for pid in self._tree():
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            self.peak_kb = max(self.peak_kb, total)

    def stop_mb(self) -> tuple[float, float]:
        """The sampled peak of the tree, and the root's own high-water mark (VmHWM, exact)."""
        self._stop.set()
        self._thread.join()
        status = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        return self.peak_kb / 1024, hwm / 1024


def run_spark(folder: Path, timeline: Timeline) -> dict[str, Any]:
    from taobao_assets.resources.spark import SparkResource
    from taobao_assets.silver_tables import IMPRESSIONS_SCHEMA, PARSE_SPECS, USER_CONTEXT_SCHEMA, good_rows

    # Spark's Python workers unpickle LocalChunkParser by reference: they must find this module.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    spark = SparkResource.from_settings(get_settings()).spark_session
    jvm = TreePeak(spark.sparkContext._gateway.proc.pid)
    frames = []
    t0 = time.perf_counter()
    for kind, table in zip(KINDS, (IMPRESSIONS_SCHEMA, USER_CONTEXT_SCHEMA), strict=True):
        chunks = [c for split in SPLITS for c in _chunks(folder / kind.file_name(split), split)]
        parsed = (spark.createDataFrame(chunks, CHUNK_SCHEMA).repartition(len(chunks))
                  .mapInArrow(LocalChunkParser(kind, timeline), PARSE_SPECS[kind].parsed))
        frames.append(good_rows(parsed, table).cache())
    parsed_rows = [frame.count() for frame in frames]
    parse_seconds = time.perf_counter() - t0

    from taobao_assets.assets.gold import gold_tables

    t0 = time.perf_counter()
    gold = gold_tables(frames[0], frames[1], timeline.config.dates()[-1])
    tables = {name: frame.count() for name, frame in gold.items()}
    gold_seconds = time.perf_counter() - t0
    tree_mb, jvm_mb = jvm.stop_mb()
    spark.stop()
    return {"parse_seconds": parse_seconds, "gold_seconds": gold_seconds, "impressions": parsed_rows[0],
            "user_contexts": parsed_rows[1], "tables": tables, "peak_rss_mb_jvm_tree": tree_mb,
            "peak_rss_mb_jvm": jvm_mb, "peak_rss_mb_driver": peak_rss_mb()}


def _entries(column: str) -> str:
    """DuckDB: a feature_list as a list of {f: field id, id: feature id} (the raw parse)."""
    return (f"list_transform(string_split({column}, chr(1)), lambda e: {{'f': split_part(e, chr(2), 1), "
            f"'id': split_part(split_part(e, chr(2), 2), chr(3), 1)}})")


def _first_id(field: str) -> str:
    return f"try_cast(list_filter(entries, lambda x: x.f = '{field}')[1].id AS BIGINT)"


def _scalar(con: Any, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def run_duckdb(folder: Path, timeline: Timeline) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    csv = "read_csv('{}', header=false, sep=',', quote='', escape='', columns={})"
    sample_cols = ("{'sample_id': 'BIGINT', 'click': 'INT', 'conversion': 'INT', 'cfi': 'VARCHAR', "
                   "'n': 'INT', 'feature_list': 'VARCHAR'}")
    common_cols = "{'cfi': 'VARCHAR', 'n': 'INT', 'feature_list': 'VARCHAR'}"
    days, total = timeline.config.days, timeline.total
    sample_files = [folder / FileKind.SAMPLE_SKELETON.file_name(s) for s in SPLITS]
    common_files = [folder / FileKind.COMMON_FEATURES.file_name(s) for s in SPLITS]
    t0 = time.perf_counter()
    con.execute(f"""
        CREATE TEMP TABLE impressions AS
        WITH raw AS (
            SELECT *, row_number() OVER () - 1 AS ordinal FROM {csv.format(sample_files[0], sample_cols)}
            UNION ALL
            SELECT *, {timeline.train_lines} + row_number() OVER () - 1
            FROM {csv.format(sample_files[1], sample_cols)}
        ), parsed AS (SELECT *, {_entries('feature_list')} AS entries FROM raw)
        SELECT click, conversion, cfi, ordinal * {days} // {total} AS day,
               {_first_id('205')} AS item_id, {_first_id('206')} AS category_id,
               {_first_id('207')} AS shop_id, {_first_id('216')} AS brand_id
        FROM parsed""")
    con.execute(f"""
        CREATE TEMP TABLE users AS
        SELECT cfi, {_first_id('101')} AS user_id
        FROM (SELECT cfi, {_entries('feature_list')} AS entries
              FROM read_csv({[str(f) for f in common_files]}, header=false, sep=',', quote='', escape='',
                            columns={common_cols}))""")
    parsed_rows = [_scalar(con, f"SELECT count(*) FROM {t}") for t in ("impressions", "users")]
    parse_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    last = days - 1
    con.execute(f"""CREATE TEMP TABLE enriched AS SELECT i.*, u.user_id FROM impressions i
                    LEFT JOIN users u USING (cfi) WHERE day > {last} - 7 AND day <= {last}""")
    tables = {}
    for table in GOLD_TABLES:
        keys = ", ".join(table.key_names)
        counts = ", ".join(f"sum((day > {last} - {w})::INT) AS impressions_{w}d, "
                           f"sum(CASE WHEN day > {last} - {w} THEN click ELSE 0 END) AS clicks_{w}d, "
                           f"sum(CASE WHEN day > {last} - {w} THEN conversion ELSE 0 END) AS conversions_{w}d"
                           for w in (1, 3, 7))
        not_null = " AND ".join(f"{k} IS NOT NULL" for k in table.key_names)
        tables[table.name] = _scalar(con, f"SELECT count(*) FROM (SELECT {keys}, {counts} FROM enriched "
                                          f"WHERE {not_null} GROUP BY {keys})")
    gold_seconds = time.perf_counter() - t0
    return {"parse_seconds": parse_seconds, "gold_seconds": gold_seconds, "impressions": parsed_rows[0],
            "user_contexts": parsed_rows[1], "tables": tables, "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.silver_gold", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="sample lines to generate")
    parser.add_argument("--duckdb-only", action="store_true",
                        help="run only the DuckDB side and print its figures (used in a child process)")
    args = parser.parse_args(argv)
    folder = _dataset(args.rows)
    timeline = Timeline.from_folder(folder)
    if args.duckdb_only:
        print(json.dumps(run_duckdb(folder, timeline)))
        return 0
    # DuckDB runs in its own process so that each side's peak RSS is its own.
    command = [sys.executable, "-m", "bench.silver_gold", "--rows", str(args.rows), "--duckdb-only"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    duck = json.loads(out.stdout.strip().splitlines()[-1])
    spark = run_spark(folder, timeline)
    mb = sum(f.stat().st_size for f in folder.glob("*.csv")) / 1e6
    rows = []
    for name, r in (("spark", spark), ("duckdb", duck)):
        seconds = r["parse_seconds"] + r["gold_seconds"]
        r.update(seconds=seconds, rows_per_s=timeline.total / seconds, mb_per_s=mb / seconds)
        rows.append([name, f"{r['parse_seconds']:.1f}", f"{r['gold_seconds']:.1f}", f"{seconds:.1f}",
                     f"{r['rows_per_s']:,.0f}", f"{r['mb_per_s']:.2f}",
                     f"{r.get('peak_rss_mb', r.get('peak_rss_mb_jvm_tree', 0)):.0f}"])
    ratio = spark["rows_per_s"] / duck["rows_per_s"]
    payload = {"benchmark": "silver_gold", "rows": timeline.total, "input_mb": mb,
               "spark": spark, "duckdb": duck,
               "tables_agree": spark["tables"] == duck["tables"], "ratio": ratio,
               "target": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO, "machine": machine()}
    columns = ["engine", "parse s", "gold s", "total s", "sample rows/s", "MB/s", "peak RSS MB"]
    markdown = (f"# Silver + gold: Spark vs DuckDB\n\n{timeline.total:,} sample lines, {mb:.1f} MB of raw "
                f"files, gold of the last of {timeline.config.days} days.\n\n"
                + markdown_table(columns, rows)
                + f"\nSpark peak RSS is the JVM and its Python workers (sampled every 0.2 s); the JVM "
                  f"alone {spark['peak_rss_mb_jvm']:.0f} MB (VmHWM), driver Python "
                  f"{spark['peak_rss_mb_driver']:.0f} MB. Gold row counts per table agree: "
                  f"{spark['tables'] == duck['tables']}.\n\n**Ratio Spark/DuckDB: {ratio:.3f}** "
                  f"(target >= {TARGET_RATIO}).\n")
    write_results("silver_gold", payload, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
