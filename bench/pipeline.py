"""The whole pipeline at several sizes: ``make demo``'s command, timed stage by stage.

``python -m bench.pipeline [--sizes 100000 1000000 10000000]`` runs, for each size, the main job
(``python -m taobao_assets.cli demo --no-ui``) on a freshly generated data set of that many
samples, in a namespace of its own (topics, bucket, database, Feast project, Dagster instance), on
the running stack. The namespace is dropped and created again before each size, so no run starts
on an earlier one's tables (deleting a 10 M run's gold days made a 100 k run's batch stage twice
as long) or measures its leftovers as disk. Each run is a fresh process, so every size pays the
same start-up costs a user pays. Reported per size:

- seconds and samples/s of each stage (generate, replay, bronze -> silver -> gold, Feast apply,
  serving + Trino, streaming), from the demo's own JSON summary;
- end-to-end seconds per million samples, and the total the demo projected after its first day of
  bronze -> silver -> gold (how far off a long run's first estimate is);
- peak memory of the pipeline's process tree (the demo's Python process, its Spark JVM and Python
  workers; sampled every 0.5 s), and of the stack's servers (sum over the service processes at
  their peak sample), both in MB, as summed RSS and as summed PSS (sampled every 5 s;
  :class:`PeakMemory` says why both, and why PSS less often): over the whole run and within each
  stage (the summary gives each stage's end time); with the pipeline's PSS peak, which of its
  processes held it (the driver, Spark's JVM, Spark's Python workers), so a peak names its owner;
- what each layer holds once the run is over, in MB per million samples (``bench/disk.py``): the
  whole data set's needs are these times 85.

The markdown also lists the side-by-side ratio of every other benchmark from its latest
``bench/results/<name>.json``, so one table shows all the figures. Results go to
``bench/results/pipeline.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from bench import RESULTS_DIR, machine, markdown_table, write_results
from bench.disk import layer_bytes
from bench.namespace import drop_namespace
from deploy.services import SERVICES
from taobao_assets.demo import replayed_marker
from taobao_assets.settings import REPO_ROOT, Settings, get_settings, load_settings

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
EVENT_DAYS = 7
#: The benchmark's namespace on the shared servers: never a demo's or the tests' data.
NAMESPACE = {"TFP_TOPIC_PREFIX": "bench-pipeline.aliccp", "TFP_LAKE_BUCKET": "lake-bench-pipeline",
             "TFP_POSTGRES_DB": "tfp_bench_pipeline", "TFP_FEAST_PROJECT": "bench_pipeline",
             "TFP_EVENT_DAYS": str(EVENT_DAYS)}
#: (benchmark, what the ratio compares, path to it in that benchmark's JSON, target).
RATIOS = [
    ("parser", "compiled parser (1 core) vs DuckDB read+split", ("ratio", "duckdb split"), ">= 1.0"),
    ("replay", "replay vs Kafka's Java producer, same records", ("ratio_replay_to_kafka_producer",), ">= 0.8"),
    ("silver_gold", "Spark silver+gold vs DuckDB", ("ratio",), ">= 1.0"),
    ("online_lookup", "lookup API p99 / raw Redis p99", ("lean_vs_redis", "p99"), "<= 1.5"),
    ("pit_retrieval", "platform's PIT 1M rows / DuckDB ASOF", ("ratio_platform_vs_duckdb",), "<= 1.5"),
    ("materialize", "engine rows/s / raw pipelined HSET rows/s", ("ratio_engine_to_raw",), "-"),
    ("streaming", "streaming run vs bare aiokafka loop", ("ratio_streaming_to_consume_loop",), ">= 0.5"),
    ("trino_scan", "Trino scan vs DuckDB on the same files", ("ratio", "aggregate", "trino_vs_duckdb"), "-"),
]


class Sample(NamedTuple):
    """One sampling of memory, MB: summed RSS, and on some samples summed PSS, of the process tree
    and of the servers."""

    at: float
    tree_rss: float
    servers_rss: float
    tree_pss: float | None = None
    servers_pss: float | None = None
    #: On PSS samples: the tree's PSS (MB) by process role, largest first (see :func:`_role`).
    tree_roles: tuple[tuple[str, float], ...] = ()


class PeakMemory:
    """Peak memory (MB) of a process tree and of the stack's servers, sampled in a background thread.

    Two sums. RSS counts a shared page once in every process that maps it (each Postgres backend maps
    the shared buffers, Spark's Python workers are forked, Redis forks to rewrite its append-only
    file), so its sum overstates what the processes use together; PSS divides each shared page among
    the processes that map it, so its sum is what they hold. RSS is read every ``interval`` seconds;
    PSS on every ``pss_every``-th sample only, because the kernel walks a process's pages to count it
    (about 0.4 s of CPU for the whole stack, 0.12 s of it Spark's JVM), which every 0.5 s would take a
    good part of a core from the run it measures; a PSS peak shorter than ``interval * pss_every`` can
    be missed. Every sample is kept with its time, so the peak within each stage can be read afterwards.
    """

    def __init__(self, root: int, servers: list[int], interval: float = 0.5, pss_every: int = 10) -> None:
        self.root, self.servers, self.interval, self.pss_every = root, servers, interval, pss_every
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sums_mb(self, processes: list[psutil.Process], pss: bool
                 ) -> tuple[float, float | None, tuple[tuple[str, float], ...]]:
        rss_sum = pss_sum = 0
        roles: dict[str, float] = {}
        for process in processes:
            with suppress(psutil.Error):  # exited between listing and reading
                if pss:
                    info = process.memory_full_info()
                    rss_sum, pss_sum = rss_sum + info.rss, pss_sum + info.pss
                    role = _role(process, self.root)
                    roles[role] = roles.get(role, 0.0) + info.pss / 1e6
                else:
                    rss_sum += process.memory_info().rss
        by_size = tuple(sorted(roles.items(), key=lambda item: -item[1]))
        return rss_sum / 1e6, (pss_sum / 1e6 if pss else None), by_size

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        servers = []
        for pid in self.servers:
            with suppress(psutil.Error):
                server = psutil.Process(pid)
                servers += [server, *server.children(recursive=True)]
        pss = len(self.samples) % self.pss_every == 0
        tree_rss, tree_pss, roles = self._sums_mb(tree, pss)
        servers_rss, servers_pss, _ = self._sums_mb(servers, pss)
        self.samples.append(Sample(time.time(), tree_rss, servers_rss, tree_pss, servers_pss, roles))

    def peaks(self, start: float = 0.0, end: float = float("inf")) -> dict[str, Any]:
        """Each sum's peak over the samples taken between ``start`` and ``end`` (0 without any), and
        ``tree_roles``: the tree's PSS by process role at its PSS peak."""
        within = [sample for sample in self.samples if start <= sample.at <= end]
        peaks: dict[str, Any] = {
            name: max((value for sample in within if (value := getattr(sample, name)) is not None), default=0.0)
            for name in Sample._fields[1:5]}
        at_peak = max((s for s in within if s.tree_pss is not None), key=lambda s: s.tree_pss or 0.0, default=None)
        peaks["tree_roles"] = at_peak.tree_roles if at_peak else ()
        return peaks

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @contextmanager
    def sampling(self) -> Iterator[PeakMemory]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def _role(process: psutil.Process, root: int) -> str:
    """What a process of the pipeline's tree is: the demo's driver, Spark's JVM, or another program."""
    if process.pid == root:
        return "driver (Python)"
    name = process.name()
    if name == "java":
        return "Spark JVM"
    if name.startswith("python"):
        return "Spark Python workers"
    return name


def server_pids(settings: Settings) -> list[int]:
    return [pid for cls in SERVICES if (pid := cls(settings).pid()) is not None]


def stack_up(env: dict[str, str], *services: str) -> None:
    """The stack manager's idempotent ``up``: with the namespace's settings it creates the database
    and bucket and points Trino's catalogs at them; with the caller's it points them back."""
    subprocess.run([sys.executable, "-m", "deploy.stack", "up", *services], cwd=REPO_ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def run_size(rows: int, work: Path, settings: Settings) -> dict[str, Any]:
    """One end-to-end run on a new data set of ``rows`` samples; its stages, totals and memory."""
    summary = work / f"summary-{rows}.json"
    env = dict(os.environ, **NAMESPACE, TFP_SOURCE_DIR=str(work / f"aliccp-{rows}"),
               TFP_DAGSTER_HOME=str(work / f"dagster-{rows}"))
    log = work / f"demo-{rows}.log"
    namespace = load_settings(env)
    # The demo resumes a data set its namespace already replayed (a no-op); a run of the same size
    # again would measure nothing, so every run replays from scratch, into an empty namespace.
    replayed_marker(namespace).unlink(missing_ok=True)
    # Trino's Iceberg catalog would keep pooled connections to the dropped database, and its queries
    # then fail ("Cannot check and eventually update SQL schema"): its catalogs are pointed away
    # first (a restart), and back at the new database after.
    stack_up(dict(os.environ), "trino")
    drop_namespace(env)
    shutil.rmtree(env["TFP_DAGSTER_HOME"], ignore_errors=True)
    stack_up(env)
    print(f"== {rows:,} samples: log {log}", flush=True)
    t0 = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "taobao_assets.cli", "demo", "--no-ui", "--rows", str(rows),
             "--summary-json", str(summary)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        with PeakMemory(process.pid, server_pids(settings)).sampling() as memory:
            code = process.wait()
    wall = time.monotonic() - t0
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"the demo on {rows:,} samples failed (exit {code}); see {log}:\n{tail}")
    result = json.loads(summary.read_text())
    stages = [{"stage": s["name"], "seconds": s["seconds"], "samples_per_s": round(rows / s["seconds"]),
               **_peak_fields(memory.peaks(s["ended_at"] - s["seconds"], s["ended_at"]))}
              for s in result["stages"]]
    whole = memory.peaks()
    disk = layer_bytes(namespace)
    return {
        "samples": rows,
        "wall_s": round(wall, 1),
        "stages": stages,
        "s_per_million": round(wall / (rows / 1e6), 1),
        "projected_s": result["projected_seconds"],
        "peak_pipeline_mb": round(whole["tree_rss"]),
        "peak_servers_mb": round(whole["servers_rss"]),
        "peak_pss_pipeline_mb": round(whole["tree_pss"]),
        "peak_pss_servers_mb": round(whole["servers_pss"]),
        "disk_mb_per_million": {layer: round(size / 1e6 / (rows / 1e6), 1) for layer, size in disk.items()},
        "checks_passed": result["checks_passed"],
        "checks_failed": result["checks_failed"],
        "rows": result["rows"],
    }


def _peak_fields(peaks: dict[str, Any]) -> dict[str, Any]:
    """``peak_mb`` (RSS) and ``peak_pss_mb``, each [pipeline, servers], and ``peak_pss_by_process``
    (the pipeline's PSS peak by process role, MB): the results' shape for a span."""
    return {"peak_mb": [round(peaks["tree_rss"]), round(peaks["servers_rss"])],
            "peak_pss_mb": [round(peaks["tree_pss"]), round(peaks["servers_pss"])],
            "peak_pss_by_process": {role: round(mb) for role, mb in peaks["tree_roles"]}}


def _peak_cell(peak: list[int]) -> str:
    """A span's [pipeline, servers] peak; none of a span no sample fell in (a stage shorter than
    the PSS interval), whose peaks would read 0, which no running process holds."""
    return "no sample in the stage" if not any(peak) else f"{peak[0]:,.0f} / {peak[1]:,.0f} MB"


def other_ratios() -> list[list[str]]:
    """The side-by-side ratio of each other benchmark, from its latest results."""
    rows = []
    for name, what, path, target in RATIOS:
        source = RESULTS_DIR / f"{name}.json"
        if not source.exists():
            rows.append([name, what, "not run", target])
            continue
        value: Any = json.loads(source.read_text())
        for key in path:
            value = value[key]
        rows.append([name, what, f"{value:.2f}", target])
    return rows


def markdown(results: list[dict[str, Any]], context: dict[str, Any]) -> str:
    # Every stage of any size, in run order: a size measured by an older build may lack a stage.
    stage_names = list(dict.fromkeys(s["stage"] for r in results for s in r["stages"]))
    columns = ["stage", *(f"{r['samples']:,} samples: s (samples/s)" for r in results)]
    by_size = [{s["stage"]: s for s in r["stages"]} for r in results]
    rows: list[list[Any]] = [
        [name, *(f"{stages[name]['seconds']:.1f} ({stages[name]['samples_per_s']:,})" if name in stages
                 else "not in that build" for stages in by_size)]
        for name in stage_names
    ]
    for measure, key in (("RSS", "peak_mb"), ("PSS", "peak_pss_mb")):  # older builds measured less
        rows += [
            [f"peak {measure} pipeline / servers: {name}",
             *(_peak_cell(stages[name][key]) if key in stages.get(name, {}) else "not measured"
               for stages in by_size)]
            for name in stage_names
        ]
    rows += [
        [f"pipeline's PSS peak by process: {name}",
         *(", ".join(f"{role} {mb:,}" for role, mb in stages[name]["peak_pss_by_process"].items()) + " MB"
           if stages.get(name, {}).get("peak_pss_by_process") else "not measured" for stages in by_size)]
        for name in stage_names
    ]
    rows += [
        ["end to end (wall)", *(f"{r['wall_s']:.0f} s" for r in results)],
        ["projected after the first batch day", *(f"{r['projected_s']:.0f} s" if r.get("projected_s") is not None
                                                  else "not in that build" for r in results)],
        ["seconds per million samples", *(f"{r['s_per_million']:,.0f}" for r in results)],
        ["peak RSS pipeline (driver + Spark)", *(f"{r['peak_pipeline_mb']:,} MB" for r in results)],
        ["peak RSS servers", *(f"{r['peak_servers_mb']:,} MB" for r in results)],
        ["peak PSS pipeline (driver + Spark)", *(f"{r['peak_pss_pipeline_mb']:,} MB" if "peak_pss_pipeline_mb" in r
                                                 else "not measured" for r in results)],
        ["peak PSS servers", *(f"{r['peak_pss_servers_mb']:,} MB" if "peak_pss_servers_mb" in r
                               else "not measured" for r in results)],
        ["asset checks passed / failed", *(f"{r['checks_passed']} / {len(r['checks_failed'])}" for r in results)],
    ]
    disk = [r.get("disk_mb_per_million", {}) for r in results]  # sizes run before it was measured have none
    rows += [[f"disk: {layer}, MB per million samples",
              *(f"{d[layer]:,.1f}" if layer in d else "not measured" for d in disk)]
             for layer in dict.fromkeys(layer for d in disk for layer in d)]
    loads = ", ".join(f"{r['samples']:,}: {r['machine']['load_average']}" for r in results)
    head = (f"Whole pipeline (`python -m bench.pipeline`), {EVENT_DAYS} days, on {context['cpus']} cores, "
            f"{context['memory_gb']} GB RAM, {context['platform']}; load average after each size: {loads}.\n\n")
    ratios = markdown_table(["benchmark", "side by side", "ratio", "target"], other_ratios())
    return head + markdown_table(columns, rows) + "\nSide-by-side ratios (latest run of each benchmark):\n\n" + ratios


def merged(previous: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The new results plus the latest earlier result of every other size, smallest first.

    Sizes can be run separately (the largest takes the longest), so the table keeps the latest
    figures of each; every result carries the machine load it ran under.
    """
    earlier = json.loads(previous.read_text())["results"] if previous.exists() else []
    sizes = {r["samples"] for r in new}
    return sorted([r for r in earlier if r["samples"] not in sizes] + new, key=lambda r: r["samples"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--work", type=Path, help="folder for data sets and logs (default: a temporary one)")
    args = parser.parse_args(argv)
    settings = get_settings()
    other_ratios()  # a wrong path into another benchmark's results fails now, not after the runs
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=settings.state_dir) as tmp:
        work = (args.work or Path(tmp)).resolve()  # Dagster refuses a relative DAGSTER_HOME
        work.mkdir(parents=True, exist_ok=True)
        try:
            for rows in args.sizes:  # written after each size: the largest may take an hour
                measured = run_size(rows, work, settings)
                context = {**machine(), "memory_gb": round(psutil.virtual_memory().total / 2**30)}  # load after it
                result = {**measured, "machine": context}
                results = merged(RESULTS_DIR / "pipeline.json", [result])
                payload = {"benchmark": "pipeline", "event_days": EVENT_DAYS, "results": results, "machine": context}
                table = markdown(results, context)
                write_results("pipeline", payload, table)
                print(table, flush=True)
        finally:
            stack_up(dict(os.environ), "trino")
    return 0


if __name__ == "__main__":
    sys.exit(main())
