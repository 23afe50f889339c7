"""Kafka replay against Kafka's own Java producer sending the same records (docs/architecture.md, "Benchmarks").

``python -m bench.replay [--rows 200000] [--repeat 5]`` generates (once, cached under
``<state_dir>/bench``) a synthetic data set and measures, on the same broker, in rounds that take
each side in turn (so a change of the machine's load falls on every side alike):

- ``cat``: reading the four files (the floor of any replay);
- ``replay``: ``python -m taobao_assets.source.replay`` into fresh topics (ordering, headers,
  event-time timestamps, checkpoints: everything the real replay does);
- ``KafkaProducer`` (the reference): ``bench/java/RecordFileProducer.java``, compiled at benchmark
  time against the broker's own client jars, sends exactly the replay's records (same topics, keys,
  values, timestamps and headers, in the same order, so the same partitions) from a record file
  written beforehand from the replay's own plan;
- ``ProducerPerformance``: Kafka's load generator, for context only. It cannot send keys or
  headers (Kafka 4.3's options: ``--record-size``, ``--payload-file``, ``--payload-monotonic``), so
  it sends the raw lines as values without their ``\\n`` (``--payload-file``: the real size
  distribution, drawn at random), no key (the sticky partitioner fills one partition's batch at a
  time) and no header, to one topic.

Every side uses the replay's producer settings (``PRODUCER_OPTIONS``: acks, idempotence, linger,
batch size, compression), both Java sides the JVM options of ``kafka-producer-perf-test.sh``.

Timers. The headline times each process from launch to exit, the one boundary that is the same on
both sides by construction: start-up (interpreter and imports, or JVM), reading the input, making
the producer, sending, waiting for every acknowledgement. Recorded beside it: each side's own clock,
start-up excluded (the replay's from the start of ``replay()``; ``RecordFileProducer``'s from
``main``, so the Java client's classes load inside it while Python imported its modules before;
ProducerPerformance's only after it loaded its payloads and made its producer), and the client
process's CPU seconds. Every figure is the median over ``--repeat`` runs, with min and max and the
load average; the headline, replay records/s over ``KafkaProducer`` records/s, is compared with
``TARGET_RATIO`` unrounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import machine, markdown_table, write_results
from deploy.services.kafka import JVM_OPTS, KAFKA_VERSION, Kafka
from taobao_assets.partitions import event_time_config
from taobao_assets.resources.kafka import KafkaResource, TopicSpec
from taobao_assets.settings import Settings, get_settings
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.generate import GeneratorConfig, generate
from taobao_assets.source.replay import (
    PRODUCER_OPTIONS,
    checkpoint_file,
    default_checkpoint_dir,
    plan,
    total_records,
)
from taobao_assets.source.topics import RawTopics

#: Replay records/s at least this fraction of Kafka's Java producer's, sending the same records.
TARGET_RATIO = 0.8
REPO = Path(__file__).resolve().parent.parent
PRODUCER_SOURCE = Path(__file__).resolve().parent / "java" / "RecordFileProducer.java"
#: ``PRODUCER_OPTIONS`` (aiokafka's names) in the Java client's names; a new option fails here, loudly.
JAVA_NAMES = {"acks": "acks", "enable_idempotence": "enable.idempotence", "linger_ms": "linger.ms",
              "max_batch_size": "batch.size", "compression_type": "compression.type"}
#: What kafka-producer-perf-test.sh runs Java with: a 512 MB heap and the launcher's GC flags.
CLIENT_JVM_OPTS = ["-Xmx512M", *(option for option in JVM_OPTS if not option.startswith("-Xm"))]
#: ProducerPerformance holds its payloads as Java strings in a 512 MB heap: at most this many.
PAYLOADS_MAX = 250_000
#: The sides, in the order each round runs them; the first two make the headline.
SIDES = ("replay", "KafkaProducer", "ProducerPerformance", "cat")


@dataclass(frozen=True)
class Process:
    """A finished command: wall seconds from launch to exit, CPU seconds (user + system), what it printed."""

    seconds: float
    cpu_seconds: float
    stdout: str


@dataclass(frozen=True)
class Run:
    """One run of one side: ``seconds`` by the side's own clock, ``process_seconds`` from launch to
    exit (the headline's boundary), ``load`` the 1-minute load average just before it."""

    side: str
    records: int
    seconds: float
    process_seconds: float
    cpu_seconds: float
    load: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.process_seconds

    @property
    def records_per_s_own_clock(self) -> float:
        return self.records / self.seconds


@dataclass(frozen=True)
class Inputs:
    """What every side sends, prepared before any timer: the record file, the payload file, their sizes."""

    folder: Path
    record_file: Path
    payload_file: Path
    records: int
    value_bytes: int
    value_sizes: dict[str, dict[str, int]]


def _dataset(rows: int) -> Path:
    folder = get_settings().state_dir / "bench" / f"replay-{rows}"
    if not (folder / "generator_truth.json").exists():
        generate(GeneratorConfig(rows=rows, seed=11, out=folder, progress=False))
    return folder


def _size_summary(sizes: list[int]) -> dict[str, int]:
    ordered = sorted(sizes)
    return {"records": len(ordered), "min": ordered[0], "median": ordered[len(ordered) // 2],
            "mean": sum(ordered) // len(ordered), "p99": ordered[len(ordered) * 99 // 100], "max": ordered[-1]}


def write_inputs(folder: Path, settings: Settings, out: Path) -> Inputs:
    """The replay's records, from its own ``plan``, as a record file for ``RecordFileProducer`` (format in
    its docstring) and their values as a ``\\n``-separated payload file for ProducerPerformance (every
    ``stride``-th value: it draws from them at random, so a systematic sample keeps the size distribution)."""
    stride = -(-total_records(folder) // PAYLOADS_MAX)
    topics = RawTopics.of("plan")
    index = {topics.samples.name: 0, topics.common_features.name: 1}
    short_names = {t.name: RawTopics.short_name(t) for t in topics.all}
    sizes: dict[str, list[int]] = {name: [] for name in short_names.values()}
    record_file, payload_file = out / "records.bin", out / "payloads.txt"
    with record_file.open("wb") as records, payload_file.open("wb") as payloads:
        timeline = Timeline.from_folder(folder, event_time_config(settings))
        for i, r in enumerate(plan(folder, timeline, topics)):
            source = r.source.encode()
            records.write(struct.pack(">BqiB", index[r.topic], r.timestamp_ms, r.line, len(source)) + source
                          + struct.pack(">i", len(r.key)) + r.key + struct.pack(">i", len(r.value)) + r.value)
            if i % stride == 0:
                payloads.write(r.value if r.value.endswith(b"\n") else r.value + b"\n")
            sizes[short_names[r.topic]].append(len(r.value))
    return Inputs(folder, record_file, payload_file, sum(map(len, sizes.values())),
                  sum(map(sum, sizes.values())), {name: _size_summary(s) for name, s in sizes.items() if s})


def java_properties(settings: Settings) -> list[str]:
    """The replay's producer settings, as ``name=value`` properties of Kafka's Java producer (its sign-in
    is in the broker's client properties file, given apart: it holds the password)."""
    def java_value(value: object) -> str:
        return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return [f"bootstrap.servers={settings.kafka_bootstrap_servers}",
            *(f"{JAVA_NAMES[name]}={java_value(value)}" for name, value in PRODUCER_OPTIONS.items())]


def compile_producer(kafka: Kafka, out: Path) -> Path:
    """Compile ``RecordFileProducer`` against the broker's client jars; returns the classes folder."""
    javac = shutil.which("javac")
    if javac is None:
        raise SystemExit("javac not found on PATH: the benchmark compiles bench/java/RecordFileProducer.java; "
                         "install a JDK (apt-get install openjdk-17-jdk-headless)")
    classes = out / "classes"
    subprocess.run([javac, "-cp", f"{kafka.libs}/*", "-d", str(classes), str(PRODUCER_SOURCE)], check=True)
    return classes


def _cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process(cmd: list[str], env: Mapping[str, str] | None = None) -> Process:
    """Run ``cmd`` to its end, timed from launch to exit (interpreter or JVM start-up included)."""
    cpu = _cpu_seconds_of_children()
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {done.returncode}:\n{done.stderr[-2000:]}")
    return Process(seconds, _cpu_seconds_of_children() - cpu, done.stdout)


def _records_held(kafka: KafkaResource, topics: list[str]) -> dict[str, dict[int, int]]:
    """End offsets per partition of fresh ``topics``: the records each side really wrote."""
    async def ends() -> dict[str, dict[int, int]]:
        return {topic: await kafka.end_offsets(topic) for topic in topics}
    return asyncio.run(ends())


class Bench:
    """One benchmark run: the inputs, the compiled producer and the runs so far."""

    def __init__(self, settings: Settings, inputs: Inputs, classes: Path) -> None:
        self.settings, self.inputs, self.classes = settings, inputs, classes
        self.kafka = Kafka(settings)
        self.resource = KafkaResource.from_settings(settings)
        self.runs: list[Run] = []
        #: Per topic kind, partition -> records of the first keyed side: the other must match it.
        self.partition_counts: dict[str, dict[int, int]] = {}

    @staticmethod
    def _topics(side: str, prefix: str) -> list[TopicSpec]:
        """The fresh topics a side writes: the replay's two (so also ``KafkaProducer``'s), one, or none."""
        if side == "cat":
            return []
        if side == "ProducerPerformance":
            return [TopicSpec(f"{prefix}.perf")]
        return list(RawTopics.of(prefix).all)

    def _check(self, side: str, topics: list[TopicSpec]) -> None:
        """Every record written; a keyed side's records in the same partitions as the other's."""
        held = _records_held(self.resource, [t.name for t in topics])
        total = sum(sum(parts.values()) for parts in held.values())
        if total != self.inputs.records:
            raise RuntimeError(f"{side} wrote {total:,} records, {self.inputs.records:,} expected")
        if side == "ProducerPerformance":  # no keys: its partitions are its own
            return
        by_kind = {RawTopics.short_name(t): held[t.name] for t in topics}
        if self.partition_counts and by_kind != self.partition_counts:
            raise RuntimeError(f"{side} put {by_kind} records per partition, the other keyed side "
                               f"{self.partition_counts}: not the same records")
        self.partition_counts = by_kind

    def _timed(self, side: str, run: Callable[[str], tuple[float, Process]]) -> Run:
        """Run a side into topics of its own (created before, deleted after its clock); record the figure."""
        prefix = f"bench.replay.{uuid.uuid4().hex[:8]}"
        topics = self._topics(side, prefix)
        if topics:
            asyncio.run(self.resource.create_topics(topics))
        load = os.getloadavg()[0]
        try:
            seconds, process = run(prefix)
            if topics:
                self._check(side, topics)
        finally:
            if topics:
                asyncio.run(self.resource.delete_topics([t.name for t in topics]))
        figure = Run(side, self.inputs.records, seconds, process.seconds, process.cpu_seconds, load)
        self.runs.append(figure)
        print(f"  {side:<20} {figure.records_per_s:>12,.0f} records/s  process {process.seconds:6.2f} s "
              f"(own clock {seconds:5.2f} s, CPU {process.cpu_seconds:5.2f} s)  load {load:.2f}", flush=True)
        return figure

    def _cat(self, _prefix: str) -> tuple[float, Process]:
        files = sorted(self.inputs.folder.glob("*.csv"))
        process = _process(["sh", "-c", 'cat "$@" > /dev/null', "cat", *map(str, files)])
        return process.seconds, process

    def _replay(self, prefix: str) -> tuple[float, Process]:
        # Each run replays into topics of its own, deleted after it: so is its checkpoint.
        checkpoint = checkpoint_file(default_checkpoint_dir(self.settings), RawTopics.of(prefix), self.inputs.folder,
                                     event_time_config(self.settings))
        try:
            process = _process(
                [sys.executable, "-m", "taobao_assets.source.replay", "--data", str(self.inputs.folder)],
                dict(os.environ, TFP_TOPIC_PREFIX=prefix))
        finally:
            checkpoint.unlink(missing_ok=True)
        result = json.loads(process.stdout.strip().splitlines()[-1])
        if result["records_sent"] != self.inputs.records:
            raise RuntimeError(f"the replay sent {result['records_sent']:,} records, {self.inputs.records:,} expected")
        return result["seconds"], process

    def _kafka_producer(self, prefix: str) -> tuple[float, Process]:
        topics = RawTopics.of(prefix)
        process = _process(self.kafka.java_command(
            "RecordFileProducer", self.inputs.record_file, topics.samples.name, topics.common_features.name,
            *java_properties(self.settings), f"@{self.kafka.client_config}", jvm_opts=CLIENT_JVM_OPTS,
            classpath=[self.classes]))
        return json.loads(process.stdout.strip().splitlines()[-1])["seconds"], process

    def _producer_performance(self, prefix: str) -> tuple[float, Process]:
        process = _process(self.kafka.java_command(
            "org.apache.kafka.tools.ProducerPerformance", "--topic", f"{prefix}.perf",
            "--num-records", str(self.inputs.records), "--throughput", "-1",
            "--payload-file", self.inputs.payload_file,
            "--command-config", self.kafka.client_config,
            "--command-property", *java_properties(self.settings), jvm_opts=CLIENT_JVM_OPTS))
        final = re.search(r"(\d+) records sent, ([\d.]+) records/sec", process.stdout.strip().splitlines()[-1])
        if final is None:
            raise RuntimeError(f"no summary line in ProducerPerformance's output:\n{process.stdout[-1000:]}")
        return self.inputs.records / float(final.group(2)), process

    def round(self) -> None:
        sides = {"replay": self._replay, "KafkaProducer": self._kafka_producer,
                 "ProducerPerformance": self._producer_performance, "cat": self._cat}
        for side in SIDES:
            self._timed(side, sides[side])


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summary(runs: list[Run]) -> dict[str, Any]:
    """One side's runs: records/s (process boundary, the headline; own clock), CPU seconds and load average."""
    return {"runs": len(runs), "records_per_s": _spread([r.records_per_s for r in runs]),
            "records_per_s_own_clock": _spread([r.records_per_s_own_clock for r in runs]),
            "process_seconds": _spread([r.process_seconds for r in runs]),
            "cpu_seconds": _spread([r.cpu_seconds for r in runs]), "load": _spread([r.load for r in runs])}


def _ratio(sides: dict[str, Any], reference: str, figure: str) -> float:
    return float(sides["replay"][figure]["median"] / sides[reference][figure]["median"])


def report(bench: Bench, repeat: int) -> tuple[dict[str, Any], str]:
    inputs = bench.inputs
    sides = {side: summary([r for r in bench.runs if r.side == side]) for side in SIDES}
    ratio = _ratio(sides, "KafkaProducer", "records_per_s")
    ratio_own_clock = _ratio(sides, "KafkaProducer", "records_per_s_own_clock")
    ratio_pp = _ratio(sides, "ProducerPerformance", "records_per_s_own_clock")
    met = ratio >= TARGET_RATIO
    payload = {
        "input": {"folder": str(inputs.folder), "records": inputs.records, "value_bytes": inputs.value_bytes,
                  "value_sizes": inputs.value_sizes},
        "producer_properties": java_properties(bench.settings)[1:], "client_jvm_options": CLIENT_JVM_OPTS,
        "kafka_version": KAFKA_VERSION,
        "partition_counts": bench.partition_counts, "sides": sides, "runs": [asdict(r) for r in bench.runs],
        "ratio_replay_to_kafka_producer": ratio, "ratio_replay_to_kafka_producer_own_clock": ratio_own_clock,
        "ratio_replay_to_producer_performance_own_clock": ratio_pp,
        "target": TARGET_RATIO, "met": met, "machine": machine(),
    }

    def spread(figure: dict[str, float], form: str) -> str:
        return f"{figure['median']:{form}} ({figure['min']:{form}}-{figure['max']:{form}})"

    table = markdown_table(
        ["side", "records/s, process", "seconds, process", "records/s, own clock", "CPU s", "load (1 min)"],
        [[side, spread(s["records_per_s"], ",.0f"), spread(s["process_seconds"], ".2f"),
          spread(s["records_per_s_own_clock"], ",.0f"), spread(s["cpu_seconds"], ".2f"), spread(s["load"], ".2f")]
         for side, s in sides.items()],
    )
    runs = markdown_table(["side", *(f"run {i + 1}" for i in range(repeat))],
                          [[side, *(f"{r.records_per_s:,.0f} (load {r.load:.2f})" for r in bench.runs
                                    if r.side == side)] for side in SIDES])
    samples, common = (inputs.value_sizes[name] for name in ("samples", "common_features"))
    markdown = (
        f"## Kafka replay vs Kafka's Java producer, same records (bench/replay.py)\n\n"
        f"{inputs.records:,} records, {inputs.value_bytes / 1e6:.0f} MB of values: {samples['records']:,} "
        f"samples (median {samples['median']} B) and {common['records']:,} common-features rows (median "
        f"{common['median']:,} B, max {common['max']:,} B), each with a key and three headers. Kafka "
        f"{KAFKA_VERSION}; producer settings on every side: {', '.join(java_properties(bench.settings)[1:])}; "
        f"JVM options of both Java sides: {' '.join(CLIENT_JVM_OPTS)}. Each cell: median (min-max) of {repeat} "
        f"runs, sides interleaved. *Process*: launch to exit, interpreter or JVM start-up included (the headline); "
        f"*own clock*: the side's work only (ProducerPerformance's starts after loading its payloads and making "
        f"its producer); CPU s: the client process, start-up included; load: 1-minute load average before each "
        f"run.\n\n"
        f"{table}\n"
        f"Replay / KafkaProducer, same records = **{ratio:.3f}** (target >= {TARGET_RATIO}: "
        f"**{'met' if met else 'missed'}**); by own clocks {ratio_own_clock:.3f}. Replay / ProducerPerformance by "
        f"own clocks = {ratio_pp:.3f}: it sends the same values without keys or headers, context only.\n\n"
        f"Each run, records/s (process) and the load average before it:\n\n{runs}\n"
        f"Machine: {payload['machine']}.\n"
    )
    return payload, markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="sample lines to generate")
    parser.add_argument("--repeat", type=int, default=5, help="runs per side (at least 3)")
    args = parser.parse_args(argv)
    if args.repeat < 3:
        parser.error("--repeat must be at least 3: the figure is a median")
    settings = get_settings()
    folder = _dataset(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        inputs = write_inputs(folder, settings, Path(tmp))
        bench = Bench(settings, inputs, compile_producer(Kafka(settings), Path(tmp)))
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat}", flush=True)
            bench.round()
    payload, markdown = report(bench, args.repeat)
    write_results("replay", payload, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
