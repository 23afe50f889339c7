"""Silver + gold in Spark against DuckDB computing the same gold tables (docs/architecture.md, "Benchmarks").

``python -m bench.silver_gold [--rows 200000] [--repeat 3]`` generates (once, cached under
``<state_dir>/bench``) a synthetic data set of 7 days with malformed lines of every kind the
generator makes (:data:`MALFORMED_FRACTION`; so the quarantine rules change the answer), and runs on
the same local raw files:

- Spark (``settings.spark_master``): :func:`spark_silver` parses them into silver's two tables with
  silver's own parser, then :func:`~taobao_assets.assets.gold.gold_frames` computes every gold
  table of the last day, fetched with ``toArrow`` with its contract's columns, as the Postgres IO
  manager writes them;
- DuckDB (:mod:`bench.gold_duckdb`): the same tables in SQL from the same files, in a child process
  so that its peak RSS is its own.

Both timers cover the same steps: read and parse the raw files into the tables gold reads
("parse"), then compute every gold table and fetch it to the client as Arrow ("gold"). Neither the
engines' start (JVM, connection) nor bronze, Iceberg or Postgres is timed; Spark's session serves
every run, so its first run also warms the JVM and starts the Python workers. The sides run in turn,
DuckDB then Spark, ``--repeat`` times (at least 3); after each round the two sides' tables are
compared value by value (:mod:`bench.gold_compare`) and a difference stops the benchmark. Figures
are the median with min and max, never the best run; the headline is Spark's sample rows/s over
DuckDB's, met or missed against :data:`TARGET_RATIO` from the unrounded medians.

Where the work still differs, it is Spark that does more: its parse builds every silver column
(position, combination features, history counts) where DuckDB keeps only what gold reads. Both
check every entry of every line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from bench import Spread, gold_duckdb, machine, markdown_table, peak_rss_mb, write_results
from bench.gold_compare import REL_TOL, Agreement, GoldMismatch, compare
from taobao_assets.assets.gold import gold_frames
from taobao_assets.feature_tables import TIMESTAMP_FIELD
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.partitions import end_of_day
from taobao_assets.settings import get_settings
from taobao_assets.silver_tables import PARSE_SPECS, good_rows
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.format import SPLITS, FileKind
from taobao_assets.source.generate import TRUTH_FILE, GeneratorConfig, generate

#: Spark silver + gold must reach this share of DuckDB's sample rows/s (the issue's target).
TARGET_RATIO = 1.0
#: Malformed lines per good line: at 200,000 rows about 200, every kind at least once per file.
MALFORMED_FRACTION = 0.001
MIN_REPEAT = 3
CHUNK_BYTES = 8 << 20
CHUNK_SCHEMA = "path STRING, split STRING, start BIGINT, length BIGINT, first_line BIGINT"
REPO = Path(__file__).resolve().parent.parent
KINDS = (FileKind.SAMPLE_SKELETON, FileKind.COMMON_FEATURES)
SIDES = ("spark", "duckdb")


def _dataset(rows: int) -> Path:
    folder = get_settings().state_dir / "bench" / f"silver-gold-{rows}-malformed-{MALFORMED_FRACTION:g}"
    if not (folder / TRUTH_FILE).exists():
        generate(GeneratorConfig(rows=rows, seed=11, out=folder, malformed_fraction=MALFORMED_FRACTION,
                                 progress=False))
    return folder


# --- Spark ---------------------------------------------------------------------------------------

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
    """``mapInArrow`` over local chunks: the silver batch builder fed from files, not bronze parts.

    A sample line's event time is that of its ordinal; a common-features line gets its split's
    first time (the rule for unreferenced ones): the last day's gold needs only that it precedes
    the day's end."""

    kind: FileKind
    timeline: Timeline

    def __call__(self, chunks: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from taobao_assets.silver_tables import PARSE_SPECS

        spec = PARSE_SPECS[self.kind]
        for chunk in (row for arrow in chunks for row in arrow.to_pylist()):
            with open(chunk["path"], "rb") as f:
                f.seek(chunk["start"])
                data = f.read(chunk["length"])
            lines = chunk["first_line"] + np.arange(data.count(b"\n") + (not data.endswith(b"\n")))
            yield spec.batch(data, None, self._context(chunk["split"], Path(chunk["path"]).name, lines))

    def _context(self, split: str, source: str, lines: np.ndarray) -> list[pa.Array]:
        """Time and location of a chunk's lines, as silver takes them from a bronze index."""
        start = self.timeline.ordinal(split, 1)
        ordinals = (start + lines - 1 if self.kind is FileKind.SAMPLE_SKELETON
                    else np.full(len(lines), self.timeline.split_start_ordinal(split)))
        timestamp_ms, day = self.timeline.event_times(ordinals)
        return [pa.array(timestamp_ms * 1000, pa.timestamp("us", tz="UTC")),
                pa.array(day.astype(np.int32), pa.date32()), pa.repeat(pa.scalar(source), len(lines)),
                pa.array(lines), pa.repeat(pa.scalar(0, pa.int32()), len(lines)), pa.array(lines)]


def spark_silver(spark: SparkSession, folder: Path, timeline: Timeline, kind: FileKind) -> DataFrame:
    """The good rows of silver's table for ``kind``, parsed from the raw files: the Spark side's parse.

    It is silver's own ``mapInArrow`` batch builder (the project parser and the silver column
    contract) over newline-aligned chunks; to time another parser, replace this function."""
    chunks = [c for split in SPLITS for c in _chunks(folder / kind.file_name(split), split)]
    parsed = (spark.createDataFrame(chunks, CHUNK_SCHEMA).repartition(len(chunks))
              .mapInArrow(LocalChunkParser(kind, timeline), PARSE_SPECS[kind].parsed))
    return good_rows(parsed, PARSE_SPECS[kind].table)


@dataclass(frozen=True)
class Run:
    """One timed run of one side: seconds of each phase and the rows each parsed table kept."""

    parse_seconds: float
    gold_seconds: float
    impressions: int
    user_contexts: int

    @property
    def seconds(self) -> float:
        return self.parse_seconds + self.gold_seconds


def run_spark(spark: SparkSession, folder: Path, timeline: Timeline) -> tuple[Run, dict[str, pa.Table]]:
    """Silver's parse (cached and counted, as silver is written once) and every gold table, as Arrow."""
    day = timeline.config.dates()[-1]
    t0 = time.perf_counter()
    impressions, user_context = (spark_silver(spark, folder, timeline, kind).cache() for kind in KINDS)
    counts = impressions.count(), user_context.count()
    t1 = time.perf_counter()
    frames = gold_frames(impressions, user_context, day)
    tables = {t.name: frames[t.name].withColumn(TIMESTAMP_FIELD, F.lit(end_of_day(day)))
              .select(*[c.name for c in t.columns]).toArrow() for t in GOLD_TABLES}
    t2 = time.perf_counter()
    spark.catalog.clearCache()
    return Run(t1 - t0, t2 - t1, *counts), tables


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


# --- DuckDB ---------------------------------------------------------------------------------------

def run_duckdb(folder: Path, timeline: Timeline) -> tuple[Run, dict[str, pa.Table]]:
    """DuckDB's parse of the raw files and every gold table, as Arrow (:mod:`bench.gold_duckdb`)."""
    con = gold_duckdb.connect()
    t0 = time.perf_counter()
    counts = gold_duckdb.parse(con, folder, timeline)
    t1 = time.perf_counter()
    tables = gold_duckdb.gold(con, timeline)
    t2 = time.perf_counter()
    con.close()
    return Run(t1 - t0, t2 - t1, *counts), tables


def duckdb_child(rows: int, out: Path) -> tuple[Run, dict[str, pa.Table], float]:
    """One DuckDB run in a fresh process: its figures, its tables (through Arrow files) and its peak RSS."""
    command = [sys.executable, "-m", "bench.silver_gold", "--rows", str(rows), "--duckdb-run", str(out)]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True,
                                       cwd=REPO).stdout.strip().splitlines()[-1])
    tables = {path.stem: feather.read_table(path) for path in out.glob("*.arrow")}
    return Run(**result["run"]), tables, result["peak_rss_mb"]


# --- figures ---------------------------------------------------------------------------------------

def summary(runs: list[Run], rows: int, mb: float) -> dict[str, Any]:
    seconds = Spread.of([r.seconds for r in runs])
    return {"runs": [asdict(r) for r in runs],
            "parse_seconds": asdict(Spread.of([r.parse_seconds for r in runs])),
            "gold_seconds": asdict(Spread.of([r.gold_seconds for r in runs])),
            "seconds": asdict(seconds), "rows_per_s": rows / seconds.median, "mb_per_s": mb / seconds.median,
            "impressions": runs[0].impressions, "user_contexts": runs[0].user_contexts}


def _check_parsed(spark: Run, duck: Run) -> None:
    """Both sides must keep the same lines, referenced by gold or not."""
    if (spark.impressions, spark.user_contexts) != (duck.impressions, duck.user_contexts):
        raise GoldMismatch(f"the sides kept different good lines: Spark {spark.impressions} impressions and "
                           f"{spark.user_contexts} user contexts, DuckDB {duck.impressions} and {duck.user_contexts}")


def markdown(payload: dict[str, Any], timeline: Timeline, agreements: list[Agreement]) -> str:
    spark, duck = payload["spark"], payload["duckdb"]
    rows = [[name, f"{r['parse_seconds']['median']:.2f}", f"{r['gold_seconds']['median']:.2f}",
             f"**{r['seconds']['median']:.2f}**", f"{r['seconds']['min']:.2f} to {r['seconds']['max']:.2f}",
             f"{r['rows_per_s']:,.0f}", f"{r['mb_per_s']:.2f}", f"{r['peak_rss_mb']:.0f}"]
            for name, r in (("Spark (silver's parser + gold)", spark), ("DuckDB (SQL, 2 threads)", duck))]
    columns = ["engine", "parse s", "gold s", "total s", "total min to max", "sample rows/s", "MB/s",
               "peak RSS MB"]
    malformed = payload["malformed"]
    kinds = ", ".join(f"{reason} {count}" for reason, count in sorted(malformed["by_reason"].items()))
    values = sum(a.values for a in agreements)
    per_table = ", ".join(f"{a.table} {a.rows:,}" for a in agreements)
    load = payload["machine"]
    verdict = "met" if payload["meets_target"] else "missed"
    return (
        f"# Silver + gold: Spark vs DuckDB\n\n{timeline.total:,} sample lines ({malformed['count']} malformed lines "
        f"in all four files: {kinds}), {payload['input_mb']:.1f} MB of raw files, every gold table of the last "
        f"of {timeline.config.days} days. Each side ran {payload['repeat']} times, in turn; the figures are "
        f"medians (parse, gold and total each its own median), rows/s and MB/s from the median total.\n\n"
        + markdown_table(columns, rows)
        + f"\nSame answer: in each run the two sides' gold tables were compared value by value, every column of "
          f"every table keyed by its entity keys: {sum(a.rows for a in agreements):,} rows ({per_table}), "
          f"{values:,} values per run, all equal (integers and timestamps exactly; largest float difference "
          f"{max(a.max_abs_difference for a in agreements):.1e}, tolerance {REL_TOL:g} relative). Both sides "
          f"kept {spark['impressions']:,} impressions and {spark['user_contexts']:,} user contexts.\n\n"
          f"Timers on both sides: reading and parsing the raw files, then computing every gold table and "
          f"fetching it as Arrow. Spark's parse also builds the silver columns gold does not read. Spark peak RSS "
          f"is the JVM and its Python workers (sampled every 0.2 s); the JVM alone {spark['peak_rss_mb_jvm']:.0f} MB "
          f"(VmHWM), driver Python {spark['peak_rss_mb_driver']:.0f} MB.\n\n"
          f"Machine: {load['cpus']} CPUs; load average (1, 5, 15 min) {payload['load_average_before']} before, "
          f"{load['load_average']} after.\n\n"
          f"**Ratio Spark/DuckDB (sample rows/s): {payload['ratio']:.3f}**, target >= {TARGET_RATIO}: {verdict}.\n")


@dataclass(frozen=True)
class Measurements:
    """Every run of both sides, what each round's comparison covered, and the peak memory of each side."""

    spark: list[Run]
    duckdb: list[Run]
    agreements: list[Agreement]
    spark_peak_rss_mb: tuple[float, float]
    duckdb_peak_rss_mb: float


def measure(rows: int, repeat: int, folder: Path, timeline: Timeline) -> Measurements:
    """``repeat`` rounds of one DuckDB run then one Spark run, each round's gold tables compared."""
    # Imported here, not at the top: Spark's Python workers import this module, and need no Dagster resource.
    from taobao_assets.resources.spark import SparkResource

    # Spark's Python workers unpickle LocalChunkParser by reference: they must find this module.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    spark = SparkResource.from_settings(get_settings()).spark_session
    jvm = TreePeak(spark.sparkContext._gateway.proc.pid)
    runs: dict[str, list[Run]] = {side: [] for side in SIDES}
    duck_rss, agreements = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(1, repeat + 1):
            out = Path(tmp) / f"run-{round_number}"
            out.mkdir()
            duck, duck_tables, rss = duckdb_child(rows, out)
            spark_run, spark_tables = run_spark(spark, folder, timeline)
            _check_parsed(spark_run, duck)
            agreements = compare(SIDES, spark_tables, duck_tables)
            runs["spark"].append(spark_run)
            runs["duckdb"].append(duck)
            duck_rss = max(duck_rss, rss)
            print(f"run {round_number}/{repeat}: DuckDB {duck.seconds:.2f} s, Spark {spark_run.seconds:.2f} s, "
                  f"{sum(a.values for a in agreements):,} gold values equal; load average "
                  f"{os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    spark_rss = jvm.stop_mb()
    spark.stop()
    return Measurements(runs["spark"], runs["duckdb"], agreements, spark_rss, duck_rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.silver_gold", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="good sample lines to generate")
    parser.add_argument("--repeat", type=int, default=MIN_REPEAT, help=f"runs of each side (>= {MIN_REPEAT})")
    parser.add_argument("--duckdb-run", type=Path, metavar="DIR",
                        help="run the DuckDB side once, write its tables to DIR and print its figures "
                             "(how the benchmark starts its child process)")
    args = parser.parse_args(argv)
    if args.repeat < MIN_REPEAT:
        parser.error(f"--repeat must be at least {MIN_REPEAT}: the figure is a median")
    folder = _dataset(args.rows)
    timeline = Timeline.from_folder(folder)
    if args.duckdb_run:
        run, tables = run_duckdb(folder, timeline)
        for name, table in tables.items():
            feather.write_feather(table, args.duckdb_run / f"{name}.arrow")
        print(json.dumps({"run": asdict(run), "peak_rss_mb": peak_rss_mb()}))
        return 0

    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"load average before: {load_before}", file=sys.stderr, flush=True)
    done = measure(args.rows, args.repeat, folder, timeline)
    mb = sum((folder / kind.file_name(split)).stat().st_size for kind in KINDS for split in SPLITS) / 1e6
    tree_mb, jvm_mb = done.spark_peak_rss_mb
    spark_figures = {**summary(done.spark, timeline.total, mb), "peak_rss_mb": tree_mb,
                     "peak_rss_mb_jvm": jvm_mb, "peak_rss_mb_driver": peak_rss_mb()}
    duck_figures = {**summary(done.duckdb, timeline.total, mb), "peak_rss_mb": done.duckdb_peak_rss_mb}
    ratio = spark_figures["rows_per_s"] / duck_figures["rows_per_s"]
    payload = {
        "benchmark": "silver_gold", "rows": timeline.total, "input_mb": mb, "repeat": args.repeat,
        "malformed": json.loads((folder / TRUTH_FILE).read_text())["malformed"],
        "spark": spark_figures, "duckdb": duck_figures,
        "comparison": {"rel_tol": REL_TOL, "tables": [{**asdict(a), "values": a.values} for a in done.agreements]},
        "ratio": ratio, "target": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO,
        "load_average_before": load_before, "machine": machine(),
    }
    text = markdown(payload, timeline, done.agreements)
    write_results("silver_gold", payload, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
