"""The raw parser against DuckDB ``read_csv`` + split of the same files (docs/architecture.md, "Benchmarks").

``python -m bench.parser [--megabytes 1024] [--repeats 3] [--data DIR]`` generates (once, cached
under ``<state_dir>/bench``) a synthetic data set of about ``--megabytes`` (train split only, so
two files: sample_skeleton and common_features), or uses the raw files in ``--data``, then
measures on each file, in the same run and with a warm page cache:

- ``wc -l``: reading the bytes, the floor;
- ``compiled, batch``: the compiled core's batch mode (:func:`taobao_assets.source.parser.parse_batch`)
  over the file mapped into memory, in 8 MB chunks cut after a newline, every line to silver's typed Arrow columns
  (or a quarantine row): what silver's Spark parse runs. One thread;
- ``compiled, per record``: :func:`taobao_assets.source.parser.parse_file`, every line to a typed
  Python record object (one thread): the price of a Python object per record;
- ``python reference``: the pure-Python reference parser the compiled core replaced (kept in the
  tests as the core's differential reference), one thread;
- ``duckdb split``: ``read_csv`` of the columns + ``string_split(feature_list, '\\x01')``: the
  reference of the target (DuckDB uses every core, and splits one level only);
- ``duckdb tokens``: the same with the entries split down to field / id / value
  (``string_split_regex`` on the three separators), closer to the work the parser does.

Each tool runs ``--repeats`` times, each run in its own process; a file's figure is the median
run (min and max beside it). The timer starts after imports and ends when every line is parsed
(both for the parsers and DuckDB: reading the file is inside it). CPU time comes from ``wait4``,
peak RSS from the process's own high-water mark (not measured for ``wc``). Results go to
``bench/results/parser.json`` and ``parser.md``; the headlines are the compiled batch parser's
MB/s over both files against ``duckdb split`` (target >= 1.0) and ``duckdb tokens`` (>= 5.0).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import machine, markdown_table, peak_rss_mb, write_results
from taobao_assets.source.format import COLUMNS, FileKind

TARGETS = {"duckdb split": 1.0, "duckdb tokens": 5.0}
HEADLINE = "compiled, batch"
#: Bytes per sample of the generator's output (sample line + its share of a common row), measured.
_BYTES_PER_SAMPLE = 570
_TOOLS = ("wc -l", "compiled, batch", "compiled, per record", "python reference", "duckdb split", "duckdb tokens")
_CHUNK = 8 << 20
_DUCKDB_TYPES = {
    "sample_id": "BIGINT",
    "click": "INTEGER",
    "conversion": "INTEGER",
    "common_feature_index": "VARCHAR",
    "num_features": "INTEGER",
    "feature_list": "VARCHAR",
}


def _duckdb_query(path: Path, kind: FileKind, split_expression: str) -> str:
    columns = ", ".join(f"'{name}': '{_DUCKDB_TYPES[name]}'" for name in COLUMNS[kind])
    return (
        f"SELECT count(*), sum(len({split_expression})) FROM read_csv('{path}', delim=',', quote='', "
        f"escape='', header=false, auto_detect=false, columns={{{columns}}})"
    )


def _chunks(path: Path) -> Iterator[memoryview]:
    """A file in chunks of about 8 MB cut after a newline (the last chunk may lack one): views of
    the file mapped into memory, so the parser reads the page cache without a copy."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        start = 0
        while start < len(mapped):
            end = mapped.find(b"\n", min(start + _CHUNK, len(mapped)) - 1) + 1 or len(mapped)
            with memoryview(mapped)[start:end] as chunk:
                yield chunk
            start = end


def _batch_parse(path: Path, kind: FileKind) -> tuple[int, int]:
    """Lines and quarantined lines of a file, parsed by the compiled batch mode into silver's columns."""
    from taobao_assets.silver_tables import PARSE_SPECS
    from taobao_assets.source.parser import parse_batch

    rows = quarantined = 0
    for data in _chunks(path):
        batch = parse_batch(kind, PARSE_SPECS[kind].layout, data)
        rows += batch.num_rows
        quarantined += batch.num_rows - batch.column("reason").null_count
    return rows, quarantined


def _work(tool: str, kind: FileKind, path: Path) -> dict[str, Any]:
    """Run one tool over one file in this process; rows and wall/CPU seconds of the work alone."""
    import duckdb

    from taobao_assets.silver_tables import PARSE_SPECS  # imported before the timer, like DuckDB
    from taobao_assets.source.parser import QuarantineRecord, parse_file
    from taobao_assets_tests import parser_reference

    assert PARSE_SPECS
    wall, cpu = time.perf_counter(), time.process_time()
    extra: dict[str, Any] = {}
    if tool == "compiled, batch":
        rows, extra["quarantined"] = _batch_parse(path, kind)
    elif tool in ("compiled, per record", "python reference"):
        parse = parse_file if tool == "compiled, per record" else parser_reference.parse_file
        outcomes = Counter(type(record) is QuarantineRecord for record in parse(path, kind))
        rows, extra["quarantined"] = outcomes.total(), outcomes[True]
    else:
        separators = "'[' || chr(1) || chr(2) || chr(3) || ']'"
        expression = {
            "duckdb split": "string_split(feature_list, chr(1))",
            "duckdb tokens": f"string_split_regex(feature_list, {separators})",
        }[tool]
        connection = duckdb.connect()
        counts = connection.execute(_duckdb_query(path, kind, expression)).fetchone()
        threads = connection.execute("SELECT current_setting('threads')").fetchone()
        assert counts is not None and threads is not None
        rows, extra["tokens"], extra["threads"] = counts[0], counts[1], threads[0]
    return {
        "rows": rows,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **extra,
    }


def _run_once(tool: str, kind: FileKind, path: Path) -> dict[str, Any]:
    """Run ``tool`` in a child process; add the child's CPU time from wait4."""
    if tool == "wc -l":
        command = ["wc", "-l", str(path)]
    else:
        command = [sys.executable, "-m", "bench.parser", "--worker", tool, "--kind", kind.value, str(path)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{tool} on {path} failed with exit code {child.returncode}: {output[-2000:]}")
    if tool == "wc -l":
        return {"rows": int(output.split()[0]), "wall_s": wall, "peak_rss_mb": None,
                "process_cpu_s": usage.ru_utime + usage.ru_stime}
    return {**json.loads(output), "process_cpu_s": usage.ru_utime + usage.ru_stime}


def _measure(tool: str, kind: FileKind, path: Path, repeats: int) -> dict[str, Any]:
    """``repeats`` runs of a tool on a file: the median run, with min and max wall time."""
    runs = [_run_once(tool, kind, path) for _ in range(repeats)]
    if len({run["rows"] for run in runs}) != 1:
        raise RuntimeError(f"{tool} on {path} counted different rows across runs: {[r['rows'] for r in runs]}")
    walls = [run["wall_s"] for run in runs]
    median = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
    size = path.stat().st_size
    return {
        "file": path.name, "tool": tool, "bytes": size, **median,
        "wall_s": statistics.median(walls), "min_wall_s": min(walls), "max_wall_s": max(walls),
        "all_wall_s": [round(w, 3) for w in walls], "load_average": machine()["load_average"],
        "mb_per_s": size / 1e6 / statistics.median(walls),
        "rows_per_s": median["rows"] / statistics.median(walls),
    }


def _dataset(megabytes: int, seed: int) -> Path:
    """A generated train-only data set of about ``megabytes``, made once and reused."""
    from taobao_assets.settings import get_settings
    from taobao_assets.source.generate import TRUTH_FILE

    rows = max(1000, megabytes * 2**20 // _BYTES_PER_SAMPLE)
    folder = get_settings().state_dir / "bench" / f"aliccp-{rows}-seed{seed}"
    if not (folder / TRUTH_FILE).exists():
        # A separate process: this one stays small, as every measured child starts from it.
        command = ["-m", "taobao_assets.source.generate", "--rows", str(rows), "--seed", str(seed)]
        command += ["--test-fraction", "0", "--out", str(folder)]
        subprocess.run([sys.executable, *command], check=True)
    return folder


def _summary(measurements: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """MB/s of each tool over all files together (total bytes / total median wall time)."""
    totals: dict[str, dict[str, float]] = {}
    for m in measurements:
        total = totals.setdefault(m["tool"], {"bytes": 0, "rows": 0, "wall_s": 0.0})
        total["bytes"] += m["bytes"]
        total["rows"] += m["rows"]
        total["wall_s"] += m["wall_s"]
    for total in totals.values():
        total["mb_per_s"] = total["bytes"] / 1e6 / total["wall_s"]
        total["rows_per_s"] = total["rows"] / total["wall_s"]
    return totals


def run(folder: Path, repeats: int) -> dict[str, Any]:
    files = [(kind, folder / kind.file_name("train")) for kind in FileKind]
    context = machine()
    measurements = [_measure(tool, kind, path, repeats) for kind, path in files for tool in _TOOLS]
    parsers = [m for m in measurements if m["tool"] not in ("wc -l", "duckdb split", "duckdb tokens")]
    rows = {(m["file"], m["rows"]) for m in measurements if m["tool"] != "wc -l"}
    if len(rows) != len(files) or len({(m["file"], m["quarantined"]) for m in parsers}) != len(files):
        raise RuntimeError(f"the tools disagree on the rows or quarantined lines of a file: {sorted(rows)}")
    totals = _summary(measurements)
    speed = {(m["file"], m["tool"]): m["mb_per_s"] for m in measurements}
    headline = totals[HEADLINE]["mb_per_s"]
    ratios = {reference: headline / totals[reference]["mb_per_s"] for reference in TARGETS}
    return {
        "benchmark": "parser",
        "data": str(folder),
        "repeats": repeats,
        "machine": {**context, "load_average_after": machine()["load_average"]},
        "targets": TARGETS,
        "ratio": ratios,
        "met": {reference: ratios[reference] >= target for reference, target in TARGETS.items()},
        "ratio_per_file": {path.name: {tool: speed[path.name, tool] / speed[path.name, "duckdb split"]
                                       for tool in _TOOLS if tool != "duckdb split"} for _, path in files},
        "totals": totals,
        "measurements": measurements,
    }


def markdown(result: dict[str, Any]) -> str:
    columns = ["file", "tool", "MB", "rows", "wall s (median)", "min-max s", "MB/s", "rows/s", "CPU s (process)",
               "peak RSS MB", "load avg"]
    rows = [
        [
            m["file"], m["tool"], f"{m['bytes'] / 1e6:.1f}", m["rows"], f"{m['wall_s']:.2f}",
            f"{m['min_wall_s']:.2f}-{m['max_wall_s']:.2f}", f"{m['mb_per_s']:.1f}", f"{m['rows_per_s']:.0f}",
            f"{m['process_cpu_s']:.2f}", "-" if m["peak_rss_mb"] is None else m["peak_rss_mb"],
            m["load_average"][0],
        ]
        for m in result["measurements"]
    ]
    totals, ratio, met = result["totals"], result["ratio"], result["met"]
    load = result["machine"]
    lines = [f"{tool}: {totals[tool]['mb_per_s']:.1f} MB/s" for tool in _TOOLS]
    verdicts = [f"**{ratio[ref]:.3f}x** {ref} (target ≥ {target}: {'met' if met[ref] else 'missed'})"
                for ref, target in TARGETS.items()]
    return (
        "## Raw parser vs DuckDB (bench/parser.py)\n\n"
        + markdown_table(columns, rows)
        + f"\nBoth files ({result['repeats']} runs of each tool, medians): " + "; ".join(lines) + ".\n\n"
        + "Compiled batch parser (one thread) against: " + "; ".join(verdicts) + ".\n\n"
        + "The compiled batch tool maps the file into memory, so its peak RSS counts the file's pages "
        "(page cache shared with the kernel) as well as its heap.\n\n"
        + f"Machine: {load['cpus']} CPUs, load average {load['load_average']} before and "
        f"{load['load_average_after']} after.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=1024, help="size of the generated data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool on each file (median reported)")
    parser.add_argument("--data", type=Path, help="folder with raw *_train.csv files instead of generating")
    parser.add_argument("--worker", choices=_TOOLS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=[k.value for k in FileKind], help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_work(args.worker, FileKind(args.kind), args.path)))
        return
    result = run(args.data or _dataset(args.megabytes, args.seed), args.repeats)
    json_path, md_path = write_results("parser", result, markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
