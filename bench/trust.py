"""The trust layer's overhead: what its checks, assets and timers cost inside the main job's own runs.

``python -m bench.trust [--rows 1000000] [--repeats 3]`` runs the main job (``python -m
taobao_assets.cli demo --no-ui``) ``repeats`` times on one generated data set of ``rows`` samples
(cached under ``.state/bench/trust``), each run in a namespace of its own (topics, bucket, database,
Feast project, Dagster instance), so every run does the whole work; a run's namespace is dropped
once it finished (``bench/namespace.py``), so no run walks an earlier one's data. From each run's Dagster event
log it sums the trust layer's cost:

- its steps: the gold checks (contract, keys, rates, counters in one step; totals; drift), the training-set
  audit (point in time and label copies in one step) and the ``quality/*`` assets (streaming = batch, freshness),
  each from its ``STEP_SUCCESS`` duration;
- its timers inside other steps: ``stats_seconds`` of every gold write, ``entries_seconds`` of
  every silver day.

The pipeline's time is the sum of the demo's stages but the first (generating the data, which only
the first run does). The overhead is the layer's seconds over the pipeline's seconds without
them; reported as the median of the runs with min and max. Results: ``bench/results/trust.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance

from bench import machine, markdown_table, write_results
from bench.namespace import drop_namespace
from bench.pipeline import stack_up
from taobao_assets.settings import REPO_ROOT, get_settings

TARGET = 0.10
#: Asset checks of the layer, by name (their steps end with it; ``contract``: the gold tables' four
#: contract checks, one step per table and day; ``training_set_leakage``: the training set's point-in-time
#: audit and label-copy screen, one step per day).
LAYER_CHECKS = ("schema_matches_contract", "totals_match_silver", "features_stable", "training_set_leakage",
                "contract")
#: Timers of the layer inside other steps (output metadata).
LAYER_TIMERS = ("stats_seconds", "entries_seconds")


def _namespace(run: str, work: Path, rows: int) -> dict[str, str]:
    """A namespace no earlier run used (an interrupted one leaves its topics), on the cached data set."""
    return {"TFP_TOPIC_PREFIX": f"bench-trust-{run}.aliccp", "TFP_LAKE_BUCKET": f"lake-bench-trust-{run}",
            "TFP_POSTGRES_DB": f"tfp_bench_trust_{run}", "TFP_FEAST_PROJECT": f"bench_trust_{run}",
            "TFP_EVENT_DAYS": "7", "TFP_SOURCE_DIR": str(work / f"aliccp-{rows}"),
            "TFP_DAGSTER_HOME": str(work / f"dagster-{rows}-{run}")}


def layer_seconds(home: Path) -> dict[str, float]:
    """Seconds of the layer per component, from the event log of every run of the instance in ``home``."""
    os.environ["DAGSTER_HOME"] = str(home)
    spent: dict[str, float] = {}
    with DagsterInstance.get() as instance:
        for run in instance.get_runs():
            for record in instance.all_logs(run.run_id, of_type={DagsterEventType.STEP_SUCCESS,
                                                                 DagsterEventType.ASSET_MATERIALIZATION}):
                event = record.dagster_event
                if event is None:
                    continue
                if event.event_type == DagsterEventType.STEP_SUCCESS:
                    step = event.step_key or ""
                    name = next((c for c in LAYER_CHECKS if step.endswith(c)), None)
                    if name is None and step.startswith("quality__"):
                        name = step.removeprefix("quality__")
                    if name is not None:
                        duration = event.event_specific_data.duration_ms  # type: ignore[union-attr]
                        spent[name] = spent.get(name, 0.0) + duration / 1000
                else:
                    metadata = event.step_materialization_data.materialization.metadata
                    for timer in LAYER_TIMERS:
                        if timer in metadata:
                            name = timer.removesuffix("_seconds")
                            spent[name] = spent.get(name, 0.0) + float(str(metadata[timer].value))
    return spent


def run_once(run: str, rows: int, work: Path) -> dict[str, Any]:
    env = dict(os.environ, **_namespace(run, work, rows))
    stack_up(env)
    summary, log = work / f"summary-{rows}-{run}.json", work / f"demo-{rows}-{run}.log"
    print(f"== run {run}: {rows:,} samples, log {log}", flush=True)
    started = time.monotonic()
    try:
        with log.open("w") as out:
            code = subprocess.call([sys.executable, "-m", "taobao_assets.cli", "demo", "--no-ui", "--rows", str(rows),
                                    "--summary-json", str(summary)], cwd=REPO_ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
        wall = time.monotonic() - started
        if code != 0:
            raise RuntimeError(f"the demo failed (exit {code}); see {log}")
    finally:
        drop_namespace(env)  # the next run's data-set switch would otherwise walk this run's Redis keys
    result = json.loads(summary.read_text())
    pipeline = sum(stage["seconds"] for stage in result["stages"][1:])
    spent = layer_seconds(Path(env["TFP_DAGSTER_HOME"]))
    layer = sum(spent.values())
    return {"run": run, "wall_s": round(wall, 1), "pipeline_s": round(pipeline, 1),
            "layer_s": round(layer, 1), "overhead": layer / (pipeline - layer),
            "components_s": {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])},
            "checks_failed": result["checks_failed"], "checks_warned": result["checks_warned"]}


def markdown(payload: dict[str, Any]) -> str:
    runs = payload["runs"]
    overheads = [r["overhead"] for r in runs]
    median = statistics.median(overheads)
    verdict = "met" if median <= TARGET else "missed"
    components = sorted({c for r in runs for c in r["components_s"]},
                        key=lambda c: -statistics.median(r["components_s"].get(c, 0.0) for r in runs))

    def seconds(component: str) -> list[float]:
        return [r["components_s"].get(component, 0.0) for r in runs]

    table = markdown_table(["component", "seconds (median)", "min-max"],
                           [[c, f"{statistics.median(seconds(c)):.1f}", f"{min(seconds(c)):.1f}-{max(seconds(c)):.1f}"]
                            for c in components])
    return "\n".join([
        "## Trust layer overhead (bench/trust.py)", "",
        f"{payload['rows']:,} samples, 7 days, {len(runs)} of {payload['repeats_asked']} run(s) of the main job, "
        f"each in its own namespace.", "",
        table, "",
        f"Layer {statistics.median(r['layer_s'] for r in runs):.1f} s of a pipeline of "
        f"{statistics.median(r['pipeline_s'] for r in runs):.1f} s (median). Overhead (layer / pipeline without it) "
        f"median **{median:.3f}** (min {min(overheads):.3f}, max {max(overheads):.3f}); target <= {TARGET}: {verdict}.",
        "", f"Machine: {payload['machine']}.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trust", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="sample lines of the generated data set")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the main job (median reported)")
    parser.add_argument("--work", type=Path, default=get_settings().state_dir / "bench" / "trust")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = machine()["load_average"]
    runs: list[dict[str, Any]] = []
    try:
        session = uuid.uuid4().hex[:6]
        for run in range(args.repeats):
            runs.append(run_once(f"{session}{run}", args.rows, args.work))
            # Written after every run, so an interrupted benchmark still leaves what it measured.
            payload = {"rows": args.rows, "runs": runs, "repeats_asked": args.repeats, "target": TARGET,
                       "machine": {**machine(), "load_average_before": load_before}}
            write_results("trust", payload, markdown(payload))
    finally:
        stack_up(dict(os.environ))  # Trino's catalogs back on the default namespace
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
