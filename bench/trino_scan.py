"""Trino scanning silver impressions, side by side with DuckDB reading the same Parquet files.

``python -m bench.trino_scan [--rows 10000000] [--repeat 3]`` measures, in one run:

1. **Data.** ``iceberg.silver.impressions`` of the current settings, copied by Trino into
   ``iceberg.bench.trino_scan_impressions`` about ``--rows`` rows big (k copies of silver, same
   columns and days, with sample ids, entity ids and context keys made distinct per copy), so the
   figure is a scan and not the fixed cost of a query. The copy is reused while it has that size.
2. **Trino** runs each query of ``taobao_assets/sql/scan_impressions.sql`` (per day and position:
   ``aggregate``, counts and sums; ``distinct``, exact distinct categories and shops) once to warm
   up, then ``--repeat`` times; the figure is the median. CPU time, bytes read and peak memory
   come from Trino's own query statistics.
3. **DuckDB** runs the same query texts over the same data files. Its ``iceberg`` and ``httpfs``
   extensions are fetched from DuckDB's own download server at ``INSTALL``, which this machine
   cannot reach (and their PyPI builds are for an older DuckDB), so the table's current data files
   are listed from its Iceberg metadata (Trino's ``$files`` table: the current snapshot's files),
   downloaded from MinIO to a temporary folder (timed and reported: it is the price of having no
   ``httpfs``) and read with ``read_parquet``. A table with delete files is refused: its data files
   alone would not be its rows. DuckDB runs in a child process, so its CPU time and peak RSS are
   its own.

Both engines' answers must be equal (integers exactly, the sum of doubles to 1e-9 relative).
Results go to ``bench/results/trino_scan.json`` and ``.md``; the headline, per query, is Trino's
rows/s over DuckDB's on the local files (no target: a figure to watch).
Trino is started (or restarted) with the current settings first, as the tests' fixtures do.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from trino.exceptions import TrinoQueryError

from bench import machine, markdown_table, peak_rss_mb, write_results
from deploy.services.trino import Trino
from taobao_assets.assets.analytics import SQL_DIR, render
from taobao_assets.resources.trino import TrinoResource
from taobao_assets.settings import Settings, get_settings
from taobao_assets.silver_tables import IMPRESSIONS_SCHEMA

QUERY = SQL_DIR / "scan_impressions.sql"
SOURCE = "iceberg.silver.impressions"
TABLE = "iceberg.bench.trino_scan_impressions"
#: Id columns renumbered per copy (the position is no id: a bigger data set has no more positions).
COPIED_IDS = [c for c in IMPRESSIONS_SCHEMA.fieldNames()
              if c.endswith("_id") and c != "sample_id"]
ID_SHIFT = 10**12
#: Names of the statements of QUERY, in order.
QUERIES = ("aggregate", "distinct")


def _one(trino: TrinoResource, sql: str) -> Any:
    rows = trino.query(sql)
    return rows[0][0] if rows else None


def _copied(column: str, span: int) -> str:
    """``column`` of copy number ``copy``: sample ids shifted past the previous copy's, and entity
    ids and context keys made distinct per copy, so a bigger table has more items, shops and users
    as a bigger data set would (plain copies would also compress to almost nothing)."""
    if column == "sample_id":
        return f"sample_id + copy * {span} AS sample_id"
    if column in COPIED_IDS:
        return f"{column} + copy * {ID_SHIFT} AS {column}"
    if column == "common_feature_index":
        return "common_feature_index || '-' || CAST(copy AS varchar) AS common_feature_index"
    return column


def prepare_table(trino: TrinoResource, target_rows: int) -> dict[str, Any]:
    """Make the bench copy of silver impressions (``k`` copies, about ``target_rows`` rows)."""
    try:
        silver_rows, span = trino.query(f"SELECT count(*), max(sample_id) + 1 FROM {SOURCE}")[0]
    except TrinoQueryError as error:  # its message names the missing table
        raise SystemExit(f"no {SOURCE} to copy ({error}); materialize silver first (e.g. `make demo`), "
                         "or run with the settings of a lakehouse that has it") from error
    if not silver_rows:
        raise SystemExit(f"{SOURCE} is empty; materialize silver first")
    copies = max(1, math.ceil(target_rows / silver_rows))
    wanted = copies * silver_rows
    trino.query("CREATE SCHEMA IF NOT EXISTS iceberg.bench")
    existing = None
    if trino.query("SHOW TABLES FROM iceberg.bench LIKE 'trino_scan_impressions'"):
        existing = _one(trino, f"SELECT count(*) FROM {TABLE}")
    seconds = 0.0
    if existing != wanted:
        trino.query(f"DROP TABLE IF EXISTS {TABLE}")
        columns = [_copied(name, span) for name in IMPRESSIONS_SCHEMA.fieldNames()]
        started = time.perf_counter()
        trino.query(f"CREATE TABLE {TABLE} WITH (partitioning = ARRAY['day']) AS "
                    f"SELECT {', '.join(columns)} FROM {SOURCE} "
                    f"CROSS JOIN UNNEST(sequence(0, {copies - 1})) AS copies(copy)")
        seconds = time.perf_counter() - started
    return {"silver_rows": silver_rows, "copies": copies, "rows": wanted, "copy_seconds": round(seconds, 2),
            "reused": existing == wanted}


def data_files(trino: TrinoResource) -> list[dict[str, Any]]:
    files = trino.query_df('SELECT content, file_path, file_size_in_bytes, record_count '
                           'FROM iceberg.bench."trino_scan_impressions$files"')
    deletes = files[files["content"] != 0]
    if len(deletes):
        raise SystemExit(f"{TABLE} has {len(deletes)} delete files: its data files alone are not its rows; "
                         f"drop the table and run again")
    return list(files.to_dict("records"))


def _trino_run(trino: TrinoResource, sql: str) -> tuple[float, list[tuple[Any, ...]], dict[str, Any]]:
    with trino.connect() as conn:
        cursor = conn.cursor()
        started = time.perf_counter()
        cursor.execute(sql)
        rows = [tuple(row) for row in cursor.fetchall()]
        seconds = time.perf_counter() - started
        stats = dict(cursor.stats or {})
    return seconds, rows, stats


def _statements(table: str) -> dict[str, str]:
    return dict(zip(QUERIES, render(QUERY, {"impressions": table}), strict=True))


def measure_trino(trino: TrinoResource, repeat: int) -> dict[str, dict[str, Any]]:
    figures = {}
    for name, sql in _statements(TABLE).items():
        _, rows, _ = _trino_run(trino, sql)  # warm-up: plans, metadata and file footers get cached
        runs = [_trino_run(trino, sql) for _ in range(repeat)]
        stats = runs[len(runs) // 2][2]
        figures[name] = {
            "seconds": [round(r[0], 3) for r in runs],
            "median_s": round(statistics.median(r[0] for r in runs), 3),
            "cpu_s": round(stats.get("cpuTimeMillis", 0) / 1000, 3),
            "processed_rows": stats.get("processedRows"),
            "processed_mb": round(stats.get("processedBytes", 0) / 1e6, 1),
            "peak_memory_mb": round(stats.get("peakMemoryBytes", 0) / 1e6, 1),
            "result": rows,
        }
    return figures


def download(settings: Settings, files: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.minio_region,
                      aws_access_key_id=settings.minio_access_key,
                      aws_secret_access_key=settings.minio_secret_key)
    started = time.perf_counter()
    for number, file in enumerate(files):
        url = urlparse(file["file_path"])
        local = folder / f"{number:05d}.parquet"
        s3.download_file(url.netloc, url.path.lstrip("/"), str(local))
        file["local_path"] = str(local)
    seconds = time.perf_counter() - started
    size = sum(f["file_size_in_bytes"] for f in files)
    return {"seconds": round(seconds, 3), "mb": round(size / 1e6, 1),
            "mb_per_s": round(size / 1e6 / seconds, 1)}


def _duckdb_worker(paths: list[str], repeat: int) -> dict[str, Any]:
    """In the child: each query over the local files, warmed up once, then timed ``repeat`` times."""
    import duckdb

    connection = duckdb.connect()
    connection.execute(f"CREATE VIEW impressions AS SELECT * FROM read_parquet({json.dumps(paths)})")
    threads = connection.execute("SELECT current_setting('threads')").fetchone()
    figures: dict[str, Any] = {}
    for name, sql in _statements("impressions").items():
        rows = connection.execute(sql).fetchall()
        seconds, cpu = [], []
        for _ in range(repeat):
            wall, processor = time.perf_counter(), time.process_time()
            rows = connection.execute(sql).fetchall()
            seconds.append(time.perf_counter() - wall)
            cpu.append(time.process_time() - processor)
        figures[name] = {
            "seconds": [round(s, 3) for s in seconds], "median_s": round(statistics.median(seconds), 3),
            "cpu_s": round(statistics.median(cpu), 3),
            "result": [[v.isoformat() if isinstance(v, date) else v for v in row] for row in rows],
        }
    return {"queries": figures, "threads": threads[0] if threads else None,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def measure_duckdb(files: list[dict[str, Any]], repeat: int, folder: Path) -> dict[str, Any]:
    listing = folder / "files.json"
    listing.write_text(json.dumps([f["local_path"] for f in files]))
    command = [sys.executable, "-m", "bench.trino_scan", "--worker", str(listing), "--repeat", str(repeat)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output, _ = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the DuckDB worker failed with exit code {child.returncode}: {output[-2000:]}")
    result: dict[str, Any] = json.loads(output)
    for figures in result["queries"].values():
        figures["result"] = [(date.fromisoformat(row[0]), *row[1:]) for row in figures["result"]]
    return result


def same_answer(left: list[tuple[Any, ...]], right: list[tuple[Any, ...]]) -> bool:
    """Equal rows: integers and dates exactly, doubles (summed in another order) to 1e-9 relative."""
    def same(a: Any, b: Any) -> bool:
        return math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) or isinstance(b, float) else a == b

    return len(left) == len(right) and all(
        len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        for a, b in zip(left, right, strict=True))


def trino_server_memory(trino: Trino) -> dict[str, float | None]:
    """Resident and peak resident memory of the Trino JVM (the peak since the server started)."""
    pid = trino.pid()
    status = Path(f"/proc/{pid}/status")
    if pid is None or not status.exists():
        return {"rss_mb": None, "peak_rss_mb": None}
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1)}


def run(rows: int, repeat: int) -> dict[str, Any]:
    settings = get_settings()
    server = Trino(settings)
    server.start()  # a no-op when it already serves these settings
    trino = TrinoResource.from_settings(settings)
    context = machine()
    table = prepare_table(trino, rows)
    files = data_files(trino)
    trino_figures = measure_trino(trino, repeat)
    (settings.state_dir / "bench").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.state_dir / "bench", prefix="trino-scan-") as tmp:
        fetched = download(settings, files, Path(tmp))
        duckdb_run = measure_duckdb(files, repeat, Path(tmp))
    duckdb_figures = duckdb_run.pop("queries")
    size_mb = sum(f["file_size_in_bytes"] for f in files) / 1e6
    ratios = {}
    for name in QUERIES:
        if not same_answer(trino_figures[name]["result"], duckdb_figures[name]["result"]):
            raise RuntimeError(f"Trino and DuckDB disagree on the answer of query {name!r}: "
                               f"{trino_figures[name]['result'][:3]} vs {duckdb_figures[name]['result'][:3]}")
        for figures in (trino_figures[name], duckdb_figures[name]):
            figures["rows_per_s"] = round(table["rows"] / figures["median_s"])
            figures["result_rows"] = len(figures.pop("result"))
        trino_s, duckdb_s = trino_figures[name]["median_s"], duckdb_figures[name]["median_s"]
        ratios[name] = {"trino_vs_duckdb": round(duckdb_s / trino_s, 3),
                        "trino_vs_duckdb_with_download": round((duckdb_s + fetched["seconds"]) / trino_s, 3)}
    return {
        "benchmark": "trino_scan",
        "query_file": str(QUERY.relative_to(SQL_DIR.parent.parent)),
        "table": {**table, "name": TABLE, "data_files": len(files), "data_mb": round(size_mb, 1)},
        "machine": {**context, "load_average_after": machine()["load_average"]},
        "trino": {"queries": trino_figures, "server_memory": trino_server_memory(server)},
        "duckdb_local_files": {"queries": duckdb_figures, **duckdb_run},
        "download_from_minio": fetched,
        "same_answers": True,
        "ratio": ratios,
    }


def markdown(result: dict[str, Any]) -> str:
    table, trino, duck, fetched = (result["table"], result["trino"], result["duckdb_local_files"],
                                   result["download_from_minio"])
    rows = []
    for name in QUERIES:
        t, d = trino["queries"][name], duck["queries"][name]
        rows += [[name, "Trino 476 (Iceberg on MinIO)", t["median_s"], f"{t['rows_per_s']:,}", t["cpu_s"],
                  f"{t['peak_memory_mb']} (query)"],
                 [name, f"DuckDB, {duck['threads']} threads (local Parquet)", d["median_s"],
                  f"{d['rows_per_s']:,}", d["cpu_s"], f"{duck['peak_rss_mb']} (process RSS)"]]
    speed = ", ".join(f"{name} **{r['trino_vs_duckdb']}** ({r['trino_vs_duckdb_with_download']} counting "
                      f"DuckDB's download)" for name, r in result["ratio"].items())
    memory = trino["server_memory"]
    load = result["machine"]
    return (
        "## Trino scan of silver impressions vs DuckDB (bench/trino_scan.py)\n\n"
        f"{table['rows']:,} rows ({table['copies']} copies of {table['silver_rows']:,} silver rows), "
        f"{table['data_files']} Parquet files, {table['data_mb']} MB; the two queries of "
        f"`{result['query_file']}`, same answers in both engines; median of "
        f"{len(trino['queries'][QUERIES[0]]['seconds'])} runs after a warm-up.\n\n"
        + markdown_table(["query", "engine", "seconds", "rows/s", "CPU s", "peak memory MB"], rows)
        + f"\nTrino / DuckDB speed: {speed}.\n\n"
        f"DuckDB reads the files after downloading them from MinIO ({fetched['mb']} MB in "
        f"{fetched['seconds']} s, {fetched['mb_per_s']} MB/s), as it has no httpfs extension here. "
        f"Trino server RSS {memory['rss_mb']} MB (peak since its start {memory['peak_rss_mb']} MB).\n"
        f"Machine: {load['cpus']} CPUs, load average {load['load_average']} before and "
        f"{load['load_average_after']} after.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trino_scan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="about how many rows to scan")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per engine after a warm-up")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_duckdb_worker(json.loads(args.worker.read_text()), args.repeat)))
        return
    result = run(args.rows, args.repeat)
    json_path, md_path = write_results("trino_scan", result, markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
