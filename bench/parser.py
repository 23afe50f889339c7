"""The Python raw parser against DuckDB ``read_csv`` + split of the same files (docs/architecture.md, "Benchmarks").

``python -m bench.parser [--megabytes 1024] [--data DIR]`` generates (once, cached under
``<state_dir>/bench``) a synthetic data set of about ``--megabytes`` (train split only, so two
files: sample_skeleton and common_features), or uses the raw files in ``--data``, then measures on
each file, in the same run and with a warm page cache:

- ``wc -l``: reading the bytes, the floor;
- ``python parser``: :func:`taobao_assets.source.parser.parse_file`, every line to a typed,
  validated record (one process, one core);
- ``duckdb split``: ``read_csv`` of the columns + ``string_split(feature_list, '\\x01')`` - the
  reference of the target (DuckDB uses every core);
- ``duckdb tokens``: the same with the entries split down to field / id / value
  (``string_split_regex`` on the three separators), closer to the work the parser does.

Each tool runs in its own process: CPU time comes from ``wait4``, peak RSS from the process's
own high-water mark (not measured for ``wc``).
Results go to ``bench/results/parser.json`` and ``parser.md``; the headline is the ratio of the
parser's MB/s to ``duckdb split`` over both files (target >= 0.25).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import machine, markdown_table, peak_rss_mb, write_results
from taobao_assets.source.format import COLUMNS, FileKind

TARGET_RATIO = 0.25
#: Bytes per sample of the generator's output (sample line + its share of a common row), measured.
_BYTES_PER_SAMPLE = 570
_TOOLS = ("wc -l", "python parser", "duckdb split", "duckdb tokens")
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


def _work(tool: str, kind: FileKind, path: Path) -> dict[str, Any]:
    """Run one tool over one file in this process; rows and wall/CPU seconds of the work alone."""
    wall, cpu = time.perf_counter(), time.process_time()
    extra: dict[str, Any] = {}
    if tool == "python parser":
        from taobao_assets.source.parser import QuarantineRecord, parse_file

        quarantine = Counter(type(record) is QuarantineRecord for record in parse_file(path, kind))
        rows, quarantined = quarantine.total(), quarantine[True]
        extra["quarantined"] = quarantined
    else:
        import duckdb

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


def _measure(tool: str, kind: FileKind, path: Path) -> dict[str, Any]:
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
        result: dict[str, Any] = {"rows": int(output.split()[0]), "wall_s": wall, "peak_rss_mb": None}
    else:
        result = json.loads(output)
    size = path.stat().st_size
    return {
        "file": path.name,
        "tool": tool,
        "bytes": size,
        **result,
        "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "mb_per_s": round(size / 1e6 / result["wall_s"], 1),
        "rows_per_s": round(result["rows"] / result["wall_s"]),
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
    """MB/s of each tool over all files together (total bytes / total wall time)."""
    totals: dict[str, dict[str, float]] = {}
    for m in measurements:
        total = totals.setdefault(m["tool"], {"bytes": 0, "rows": 0, "wall_s": 0.0})
        total["bytes"] += m["bytes"]
        total["rows"] += m["rows"]
        total["wall_s"] += m["wall_s"]
    for total in totals.values():
        total["mb_per_s"] = round(total["bytes"] / 1e6 / total["wall_s"], 1)
        total["rows_per_s"] = round(total["rows"] / total["wall_s"])
    return totals


def run(folder: Path) -> dict[str, Any]:
    files = [(kind, folder / kind.file_name("train")) for kind in FileKind]
    context = machine()
    measurements = [_measure(tool, kind, path) for kind, path in files for tool in _TOOLS]
    totals = _summary(measurements)
    parser = totals["python parser"]["mb_per_s"]
    ratios = {
        "parser_vs_duckdb_split": round(parser / totals["duckdb split"]["mb_per_s"], 3),
        "parser_vs_duckdb_tokens": round(parser / totals["duckdb tokens"]["mb_per_s"], 3),
    }
    per_file = {
        path.name: round(
            next(m for m in measurements if m["file"] == path.name and m["tool"] == "python parser")[
                "mb_per_s"
            ]
            / next(m for m in measurements if m["file"] == path.name and m["tool"] == "duckdb split")[
                "mb_per_s"
            ],
            3,
        )
        for _, path in files
    }
    return {
        "benchmark": "parser",
        "data": str(folder),
        "machine": {**context, "load_average_after": machine()["load_average"]},
        "target": {"parser_vs_duckdb_split": TARGET_RATIO},
        "ratio": ratios,
        "ratio_per_file": per_file,
        "met": ratios["parser_vs_duckdb_split"] >= TARGET_RATIO,
        "totals": totals,
        "measurements": measurements,
    }


def markdown(result: dict[str, Any]) -> str:
    columns = ["file", "tool", "MB", "rows", "wall s", "MB/s", "rows/s", "CPU s (process)", "peak RSS MB"]
    rows = [
        [
            m["file"],
            m["tool"],
            round(m["bytes"] / 1e6, 1),
            m["rows"],
            round(m["wall_s"], 2),
            m["mb_per_s"],
            m["rows_per_s"],
            m["process_cpu_s"],
            "-" if m["peak_rss_mb"] is None else m["peak_rss_mb"],
        ]
        for m in result["measurements"]
    ]
    ratio = result["ratio"]
    load = result["machine"]
    return (
        "## Raw parser vs DuckDB (bench/parser.py)\n\n"
        + markdown_table(columns, rows)
        + f"\nBoth files: parser {result['totals']['python parser']['mb_per_s']} MB/s, "
        f"DuckDB split {result['totals']['duckdb split']['mb_per_s']} MB/s -> ratio "
        f"**{ratio['parser_vs_duckdb_split']}** (target >= {TARGET_RATIO}, "
        f"{'met' if result['met'] else 'missed'}); against DuckDB tokens {ratio['parser_vs_duckdb_tokens']}. "
        f"Per file: {result['ratio_per_file']}.\n"
        f"Machine: {load['cpus']} CPUs, load average {load['load_average']} before and "
        f"{load['load_average_after']} after.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=1024, help="size of the generated data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="folder with raw *_train.csv files instead of generating")
    parser.add_argument("--worker", choices=_TOOLS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=[k.value for k in FileKind], help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_work(args.worker, FileKind(args.kind), args.path)))
        return
    result = run(args.data or _dataset(args.megabytes, args.seed))
    json_path, md_path = write_results("parser", result, markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
