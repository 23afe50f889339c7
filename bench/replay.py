"""Kafka replay against Kafka's own producer perf test on the same broker (docs/architecture.md, "Benchmarks").

``python -m bench.replay [--rows 200000]`` generates (once, cached under ``<state_dir>/bench``) a
synthetic data set and measures, in one run on the same broker:

- ``cat``: reading the four files (the floor of any replay);
- ``replay``: ``python -m taobao_assets.source.replay`` into fresh topics (ordering, headers,
  event-time timestamps, checkpoints: everything the real replay does);
- ``ProducerPerformance``: Kafka's own Java producer sending the same number of records of the
  same mean size with the same acks/idempotence/linger/batch settings.

The headline is replay records/s over ProducerPerformance records/s (target >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench import machine, markdown_table, write_results
from deploy.services.kafka import Kafka
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.settings import get_settings
from taobao_assets.source.generate import GeneratorConfig, generate
from taobao_assets.source.replay import total_records

TARGET_RATIO = 0.5
REPO = Path(__file__).resolve().parent.parent


def _dataset(rows: int) -> Path:
    folder = get_settings().state_dir / "bench" / f"replay-{rows}"
    if not (folder / "generator_truth.json").exists():
        generate(GeneratorConfig(rows=rows, seed=11, out=folder, progress=False))
    return folder


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=True)
    return time.perf_counter() - t0, out.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="sample lines to generate")
    args = parser.parse_args(argv)
    settings = get_settings()
    folder = _dataset(args.rows)
    files = sorted(folder.glob("*.csv"))
    size = sum(f.stat().st_size for f in files)
    records = total_records(folder)
    mean_record = size // records
    mb = size / 1e6
    rows: list[dict[str, Any]] = []

    seconds, _ = _timed(["cat", *map(str, files)])
    rows.append({"tool": "cat", "seconds": seconds, "records_per_s": records / seconds, "mb_per_s": mb / seconds})

    prefix = f"bench.{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, TFP_TOPIC_PREFIX=prefix)
    seconds, stdout = _timed([sys.executable, "-m", "taobao_assets.source.replay", "--data", str(folder)], env)
    result = json.loads(stdout.strip().splitlines()[-1])
    # The replay's own clock excludes interpreter start-up; use it, and record the process wall time too.
    rows.append({"tool": "replay", "seconds": result["seconds"], "process_seconds": seconds,
                 "records_per_s": records / result["seconds"], "mb_per_s": mb / result["seconds"]})

    kafka = Kafka(settings)
    topic = f"{prefix}.perf"
    perf = kafka.java_command(
        "org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", str(records),
        "--record-size", str(mean_record), "--throughput", "-1", "--producer-props",
        f"bootstrap.servers={settings.kafka_bootstrap_servers}", "acks=all", "enable.idempotence=true",
        "linger.ms=20", "batch.size=1048576",
    )
    subprocess.run(kafka.java_command("org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                                      settings.kafka_bootstrap_servers, "--create", "--topic", topic,
                                      "--partitions", "3"), capture_output=True, check=True)
    seconds, stdout = _timed(perf)
    final = re.search(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", stdout.splitlines()[-1])
    assert final is not None, stdout[-500:]
    perf_rate = float(final.group(2))
    rows.append({"tool": "ProducerPerformance", "seconds": records / perf_rate, "process_seconds": seconds,
                 "records_per_s": perf_rate, "mb_per_s": perf_rate * mean_record / 1e6})

    # The bench topics hold nothing worth keeping; drop them so repeated runs do not fill the disk.
    asyncio.run(KafkaResource.from_settings(settings).delete_topics(
        [topic, f"{prefix}.samples", f"{prefix}.common_features"]))
    ratio = rows[1]["records_per_s"] / perf_rate
    payload = {"input": {"folder": str(folder), "records": records, "bytes": size, "mean_record_bytes": mean_record},
               "results": rows, "ratio_replay_to_producer_perf": ratio, "target": TARGET_RATIO,
               "machine": machine()}
    table = markdown_table(
        ["tool", "seconds", "records/s", "MB/s"],
        [[r["tool"], f"{r['seconds']:.2f}", f"{r['records_per_s']:,.0f}", f"{r['mb_per_s']:.1f}"] for r in rows],
    )
    markdown = (f"## Kafka replay vs ProducerPerformance (bench/replay.py)\n\n{records:,} records, {mb:.0f} MB, "
                f"mean record {mean_record} B.\n\n{table}\nReplay / ProducerPerformance = **{ratio:.2f}** "
                f"(target >= {TARGET_RATIO}). Machine: {payload['machine']}.\n")
    write_results("replay", payload, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
