"""Streaming throughput against a bare aiokafka consume loop, and freshness in both modes (docs/architecture.md).

``python -m bench.streaming [--rows 1000000] [--rates 1000,10000,25000] [--sensor-rate 1000]
[--seconds 60] [--interval 30] [--repeats 3] [--profile]`` generates (once, cached under
``<state_dir>/bench``) a synthetic data set, and in one run, on its own topics, state and Feast
project:

Throughput (the whole data set already in Kafka, as the replay writes it):

- ``aiokafka consume loop``: the reference, a bare loop reading both topics with the applier's
  fetch settings and doing nothing with the records;
- ``consume + parse``: the same loop handing each poll's records to the streaming run's parse
  step (:func:`~taobao_assets.streaming.join.parse_samples` / ``parse_contexts``: one compiled
  batch parse per poll, the good rows' columns as arrays, a dead letter per reject);
- ``streaming run``: :func:`taobao_assets.streaming.run.apply_ranges` over everything, as one
  sensor run would (contexts caught up, samples joined, counters committed, Feast rows written).

Every timer covers the same boundaries: from asking the end offsets, through starting the
consumers, to the last record handled (for the run: committed and written online). The three
alternate (``--repeats`` rounds, 3 by default) and each figure is the median run, with min and max
beside it. The headline is streaming run records/s over the consume loop's (target >= 0.5);
consume + parse has its own target (>= 200,000 records/s).

Freshness (event produced -> readable from Feast online), events produced carrying a
``produced_at`` header for ``--seconds`` each:

- ``continuous``: ``python -m taobao_assets.streaming follow`` in its own process, once per rate of
  ``--rates``; the figures are the follower's own since-start summary (produced_at to the return
  of the write that made the record's counters readable: p50, p99, max over every record), taken
  from the progress it publishes. The rate the producer achieved is reported too: the target (p99
  <= 250 ms at >= 25,000 events/s) counts only where it kept up;
- ``sensor, runs in process``: the real sensor ticked every ``--interval`` seconds by this process
  and its runs executed in process (``execute_in_process``), at ``--sensor-rate``: what the sensor
  and the runs cost without the launch of a run process;
- ``sensor, daemon``: ``dagster-daemon run`` on the project's workspace and instance configuration
  (:mod:`taobao_assets.instance`, in a folder of its own): the sensor ticks on its own interval
  (30 s) and its runs go through the run queue and the default launcher (a process per run), as in
  a deployment. Each run's event log gives where the time between the tick and the online write
  went (queue, process start, step, ...).

In both sensor modes the runs' metadata give the p50 (record-weighted median of the runs' p50) and
an upper bound of the p99 (the largest run p99).

``--profile`` also runs the streaming run under cProfile and reports where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    SensorResult,
    build_sensor_context,
)
from dagster._core.scheduler.instigation import InstigatorType

from bench import machine, markdown_table, peak_rss_mb, write_results
from deploy.service import stop_process_group
from taobao_assets.assets.serving import create_push_tables
from taobao_assets.feast_repo import generated_repo
from taobao_assets.instance import prepare_home
from taobao_assets.jobs import OBSERVED_AT_TAG, streaming_job
from taobao_assets.partitions import event_time_config
from taobao_assets.realtime_tables import REALTIME_TABLES, SCHEMA
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource
from taobao_assets.sensors.streaming import IN_FLIGHT, streaming_sensor
from taobao_assets.settings import Settings, get_settings
from taobao_assets.source.event_time import Timeline
from taobao_assets.source.generate import GeneratorConfig, generate
from taobao_assets.source.replay import ReplayRecord, plan
from taobao_assets.source.topics import RawTopics
from taobao_assets.streaming.join import parse_contexts, parse_samples
from taobao_assets.streaming.online import drop_online_rows, drop_project
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets.streaming.run import OffsetRange, apply_ranges

TARGET_RATIO = 0.5
TARGET_PARSE_RECORDS_PER_S = 200_000
#: Continuous freshness: p99 at most this at TARGET_CONTINUOUS_RATE events/s or more, sustained.
TARGET_CONTINUOUS_P99_MS = 250
TARGET_CONTINUOUS_RATE = 25_000
REPO = Path(__file__).resolve().parent.parent
FEAST_PROJECT = "bench_streaming"
FETCH = {"max_partition_fetch_bytes": 8 << 20, "fetch_max_bytes": 64 << 20}


def _dataset(rows: int, settings: Settings) -> tuple[Path, list[ReplayRecord]]:
    folder = settings.state_dir / "bench" / f"streaming-{rows}"
    if not (folder / "generator_truth.json").exists():
        generate(GeneratorConfig(rows=rows, seed=13, out=folder, progress=False, malformed_fraction=0.001,
                                 event_time=event_time_config(settings)))
    return folder, list(plan(folder, Timeline.from_folder(folder, event_time_config(settings)),
                             RawTopics.of(settings.topic_prefix)))


def _stream(settings: Settings, feast: FeastResource, **pacing: Any) -> StreamingResource:
    """A stream of the bench's own. Built field by field: Dagster rebuilds a resource it is given from
    the arguments it was constructed with, so a ``model_copy`` would silently run on the defaults."""
    streaming = StreamingResource(kafka=KafkaResource.from_settings(settings),
                                  redis=RedisResource.from_settings(settings), feast=feast,
                                  topic_prefix=f"bench.stream.{uuid.uuid4().hex[:8]}", **pacing)
    topics = streaming.topics
    asyncio.run(streaming.kafka.create_topics([topics.samples, topics.common_features]))
    return streaming


def _register(feast: FeastResource) -> None:
    """The project's views in the bench's Feast project, with the tables the streaming run writes
    its rows to offline (what the ``feast_registry`` asset does)."""
    repo = generated_repo()
    create_push_tables(feast.postgres, repo)
    feast.apply(repo.contents())


def _drop(streaming: StreamingResource) -> None:
    _reset(streaming)
    topics = streaming.topics
    asyncio.run(streaming.kafka.delete_topics([topics.samples.name, topics.common_features.name,
                                               topics.dead_letter.name]))


async def _produce(streaming: StreamingResource, records: list[ReplayRecord], rate: float | None = None,
                   seconds: float | None = None) -> tuple[int, int, float]:
    """Send ``records`` as the replay does (``produced_at`` header included), at ``rate`` per second
    for at most ``seconds`` (going round the records again if they run out first); returns the
    records sent, the sample records among them and the seconds it took."""
    samples_topic = RawTopics.of(get_settings().topic_prefix).samples.name
    started, sent, samples = time.monotonic(), 0, 0
    again = itertools.cycle(records) if seconds is not None else iter(records)
    async with streaming.kafka.producer(linger_ms=5) as producer:
        pending = []
        for record in again:
            if seconds is not None and time.monotonic() - started > seconds:
                break
            is_sample = record.topic == samples_topic
            topic = streaming.topics.samples.name if is_sample else streaming.topics.common_features.name
            pending.append(await producer.send(topic, record.value, key=record.key,
                                               timestamp_ms=record.timestamp_ms, headers=record.headers()))
            sent += 1
            samples += is_sample
            if rate is not None and (ahead := sent / rate - (time.monotonic() - started)) > 0:
                await asyncio.gather(*pending)
                pending.clear()
                await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    return sent, samples, time.monotonic() - started


async def _consume(streaming: StreamingResource, parse: bool) -> tuple[float, int, int]:
    """Read both topics to their end offsets; returns (seconds, records, bytes). The timer covers
    what the streaming run's does: asking the end offsets, starting the consumer, reading."""
    kafka = streaming.kafka
    parsers: dict[str, Callable[[list[ConsumerRecord]], object]] = {
        streaming.topics.samples.name: parse_samples, streaming.topics.common_features.name: parse_contexts}
    started = time.perf_counter()
    ends = {TopicPartition(topic, p): end
            for topic in parsers for p, end in (await kafka.end_offsets(topic)).items()}
    async with kafka.consumer(**FETCH) as consumer:
        consumer.assign(list(ends))
        for tp in ends:
            consumer.seek(tp, 0)
        left = {tp for tp, end in ends.items() if end}
        records = size = 0
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=5000)
            for tp, messages in batch.items():
                records += len(messages)
                size += sum(len(message.value) for message in messages)
                if parse:
                    parsers[tp.topic](messages)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return time.perf_counter() - started, records, size


def _everything(streaming: StreamingResource) -> list[OffsetRange]:
    ends = asyncio.run(streaming.kafka.end_offsets(streaming.topics.samples.name))
    return [OffsetRange(p, 0, end) for p, end in ends.items()]


def throughput(settings: Settings, feast: FeastResource, records: list[ReplayRecord], repeats: int,
               profile: bool) -> dict[str, Any]:
    """The reference loop, consume + parse and the streaming run in turn, ``repeats`` times; each
    figure is the median run, and the headline is the ratio of the medians."""
    streaming = _stream(settings, feast, max_records_per_run=len(records))
    try:
        asyncio.run(_produce(streaming, records))
        bare, parsed, runs = [], [], []
        for _ in range(repeats):
            bare.append(asyncio.run(_consume(streaming, parse=False)))
            parsed.append(asyncio.run(_consume(streaming, parse=True)))
            _reset(streaming)
            started = time.perf_counter()  # as the loop's: end offsets, consumers, everything applied
            report = apply_ranges(streaming, _everything(streaming), owner="bench").report
            runs.append({"seconds": time.perf_counter() - started,
                         "rows_written": sum(report.rows_written.values()), "conflicts": report.conflicts,
                         "samples_committed": report.samples_committed,
                         "contexts_committed": report.contexts_committed})
        _, count, size = bare[0]
        median_run = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
        rows: list[dict[str, Any]] = [
            {"tool": "aiokafka consume loop", "records": count, **_spread([b[0] for b in bare])},
            {"tool": "consume + parse", "records": count, **_spread([p[0] for p in parsed])},
            {"tool": "streaming run", "records": count, **median_run, **_spread([r["seconds"] for r in runs]),
             "peak_rss_mb": round(peak_rss_mb(), 1)},
        ]
        for row in rows:
            row["records_per_s"] = row["records"] / row["seconds"]
            row["mb_per_s"] = size / 1e6 / row["seconds"]
        breakdown = _profile(streaming) if profile else None
        return {"rows": rows, "bytes": size, "ratio": rows[2]["records_per_s"] / rows[0]["records_per_s"],
                "profile": breakdown}
    finally:
        _drop(streaming)


def _spread(seconds: list[float]) -> dict[str, Any]:
    """The median of several runs' seconds, with min, max and every run."""
    return {"seconds": statistics.median(seconds), "min_seconds": min(seconds), "max_seconds": max(seconds),
            "all_seconds": [round(s, 3) for s in seconds]}


def _reset(streaming: StreamingResource) -> None:
    """Forget what the stream applied (state and online rows), keeping its topics."""
    drop_online_rows(streaming.state(), streaming.feast)
    streaming.state().reset()


def _profile(streaming: StreamingResource) -> str:
    """The streaming run again from scratch under cProfile: the top functions by own time."""
    _reset(streaming)
    profiler = cProfile.Profile()
    profiler.enable()
    apply_ranges(streaming, _everything(streaming), owner="bench-profile")
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    return out.getvalue()


def freshness_continuous(settings: Settings, feast: FeastResource, records: list[ReplayRecord], rate: float,
                         seconds: float) -> dict[str, Any]:
    """A follower of its own while events are produced at ``rate`` for ``seconds``; the freshness of
    every record it applied, from its since-start summary."""
    streaming = _stream(settings, feast)
    env = dict(os.environ, TFP_TOPIC_PREFIX=streaming.topic_prefix, TFP_FEAST_PROJECT=feast.project)
    state = streaming.state()
    with tempfile.TemporaryDirectory(prefix="bench-follow-") as folder:
        log = Path(folder) / "follow.log"
        with log.open("wb") as out:
            follower = subprocess.Popen([sys.executable, "-m", "taobao_assets.streaming", "follow"], cwd=REPO,
                                        env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait(lambda: (state.lease_holder() or "").startswith("follow:"), 120, follower, log,
                  "the follower did not start")
            sent, samples, produce_seconds = asyncio.run(_produce(streaming, records, rate=rate, seconds=seconds))
            _wait(lambda: (state.progress() or {}).get("samples_committed", 0) >= samples, 600, follower, log,
                  f"the follower did not apply the {samples} sample records")
            time.sleep(3)  # one more progress report, covering the last records
            progress = state.progress()
            assert progress is not None
            since_start = progress["freshness_since_start"]
            return {"mode": "continuous", "records_produced": sent, "rate": rate,
                    "achieved_rate": sent / produce_seconds, "freshness_records": since_start["records"],
                    **{f"freshness_{k}": since_start[k] for k in ("p50_ms", "p99_ms", "max_ms")},
                    "follower_peak_rss_mb": _peak_rss_of(follower.pid)}
        finally:
            follower.send_signal(signal.SIGTERM)
            follower.wait(timeout=60)
            _drop(streaming)


def _peak_rss_of(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def freshness_sensor(settings: Settings, feast: FeastResource, records: list[ReplayRecord], rate: float,
                     seconds: float, interval: float) -> dict[str, Any]:
    streaming = _stream(settings, feast)
    instance = DagsterInstance.ephemeral()
    produced: list[int] = []
    producer = threading.Thread(target=lambda: produced.append(
        asyncio.run(_produce(streaming, records, rate=rate, seconds=seconds))[0]))
    metadata: list[dict[str, Any]] = []
    cursor = None
    try:
        producer.start()
        next_tick = time.monotonic() + interval
        while True:
            time.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += interval
            done = not producer.is_alive()
            resources = {"streaming": streaming}
            with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = streaming_sensor(context)
            assert isinstance(result, SensorResult)
            cursor = result.cursor
            for request in result.run_requests or []:
                run = streaming_job.execute_in_process(run_config=request.run_config, instance=instance,
                                                       tags=request.tags, resources={"streaming": streaming})
                (event, *_) = run.get_asset_materialization_events()
                metadata.append({k: v.value for k, v in event.materialization.metadata.items()})
            if done and not result.run_requests:
                break
        return {"mode": "sensor, runs in process", "records_produced": produced[0], "rate": rate,
                "interval_s": interval, **_runs_freshness(metadata)}
    finally:
        producer.join()
        _drop(streaming)


def _runs_freshness(metadata: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Freshness over the records of several runs, from each run's own p50 and p99 (see the docstring)."""
    runs = [m for m in metadata if m["freshness_records"]]
    weights = np.array([m["freshness_records"] for m in runs], dtype=float)
    p50s = np.array([m["freshness_p50_ms"] for m in runs])
    order = np.argsort(p50s)
    median = float(p50s[order][np.searchsorted(np.cumsum(weights[order]), weights.sum() / 2)])
    return {"runs": len(metadata), "freshness_records": int(weights.sum()), "freshness_p50_ms": median,
            "freshness_p99_ms_upper_bound": max(m["freshness_p99_ms"] for m in runs),
            "run_seconds": [m["seconds"] for m in metadata]}


#: Phases of a launched run, each between two events of its log (the tick: the run's observed-at tag).
PHASES = {
    "tick_to_queued": ("tick", DagsterEventType.RUN_ENQUEUED),
    "queued": (DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING),  # dequeued: launching
    "run_process_start": (DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START),
    "run_start_to_step": (DagsterEventType.RUN_START, DagsterEventType.STEP_START),
    "step": (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS),
}


def _phases(instance: DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds per phase of a run (:data:`PHASES`), from its event log."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    at: dict[Any, float] = {"tick": int(run.tags[OBSERVED_AT_TAG]) / 1000}
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is not None:
            at.setdefault(entry.dagster_event.event_type, entry.timestamp)
    return {name: round(at[end] - at[start], 2) for name, (start, end) in PHASES.items()
            if start in at and end in at}


def freshness_daemon(settings: Settings, feast: FeastResource, records: list[ReplayRecord], rate: float,
                     seconds: float) -> dict[str, Any]:
    """The sensor and its runs under a real ``dagster-daemon``; see the module docstring."""
    streaming = _stream(settings, feast)
    with tempfile.TemporaryDirectory(prefix="bench-dagster-") as home:
        prepare_home(settings, Path(home))
        env = dict(os.environ, DAGSTER_HOME=home, TFP_TOPIC_PREFIX=streaming.topic_prefix,
                   TFP_FEAST_PROJECT=feast.project)
        log = Path(home) / "daemon.log"
        with log.open("wb") as out:
            daemon = subprocess.Popen([Path(sys.executable).parent / "dagster-daemon", "run", "-w",
                                       str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with DagsterInstance.from_config(home) as instance:
                return _daemon_runs(instance, streaming, records, rate, seconds, daemon, log)
        finally:
            stop_process_group(daemon, wait=60)
            _drop(streaming)


def _daemon_runs(instance: DagsterInstance, streaming: StreamingResource, records: list[ReplayRecord], rate: float,
                 seconds: float, daemon: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """Produce once the daemon's sensor ticks, wait until its runs applied everything, read their logs."""
    # Produced from the first tick on, so no record waits for the daemon to load the code.
    _wait(lambda: _sensor_ticked(instance), 180, daemon, log, "the streaming sensor never ticked")
    sent, _, _ = asyncio.run(_produce(streaming, records, rate=rate, seconds=seconds))
    ends = asyncio.run(streaming.kafka.end_offsets(streaming.topics.samples.name))
    state = streaming.state()

    def applied() -> bool:
        offsets = state.sample_offsets()
        return all(offsets.get(p, 0) >= end for p, end in ends.items()) and not instance.get_runs(_runs(IN_FLIGHT))

    _wait(applied, 300, daemon, log, f"the daemon's runs did not apply the samples up to {ends}")
    key = AssetKey([SCHEMA, REALTIME_TABLES[0].name])
    events = instance.fetch_materializations(key, limit=1000).records
    metadata = [{k: v.value for k, v in e.asset_materialization.metadata.items()}
                for e in events if e.asset_materialization is not None]
    phases = [_phases(instance, e.run_id) for e in events]
    return {"mode": "sensor, daemon", "records_produced": sent, "rate": rate,
            "interval_s": streaming_sensor.minimum_interval_seconds, **_runs_freshness(metadata),
            "failed_runs": len(instance.get_runs(_runs([DagsterRunStatus.FAILURE]))),
            "phases_max_s": {name: max(p[name] for p in phases if name in p)
                             for name in PHASES if any(name in p for p in phases)},
            "seconds_from_tick_to_online": [m.get("seconds_from_sensor_tick_to_online") for m in metadata]}


def _runs(statuses: Sequence[DagsterRunStatus]) -> RunsFilter:
    return RunsFilter(job_name=streaming_job.name, statuses=list(statuses))


def _sensor_ticked(instance: DagsterInstance) -> bool:
    return any(instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=1)
               for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR))


def _wait(done: Callable[[], bool], seconds: float, process: subprocess.Popen[bytes], log: Path, what: str
          ) -> None:
    """Until ``done()``; fails with the end of ``process``'s log if it exits or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while not done():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} in {seconds:g} s; the end of its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="sample lines to generate")
    parser.add_argument("--rates", default="1000,10000,25000",
                        help="events/s of the continuous freshness runs, comma-separated")
    parser.add_argument("--sensor-rate", type=float, default=1_000, help="events/s of the sensor freshness runs")
    parser.add_argument("--seconds", type=float, default=60, help="how long each freshness run produces")
    parser.add_argument("--interval", type=float, default=streaming_sensor.minimum_interval_seconds,
                        help="tick interval of the in-process sensor mode (the daemon keeps the sensor's own)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the throughput test (median reported)")
    parser.add_argument("--profile", action="store_true", help="also profile the streaming run")
    args = parser.parse_args(argv)
    settings = get_settings()
    folder, records = _dataset(args.rows, settings)
    feast = FeastResource(postgres=PostgresResource.from_settings(settings),
                          redis=RedisResource.from_settings(settings), project=FEAST_PROJECT)
    _register(feast)
    try:
        load_before = machine()["load_average"]
        speed = throughput(settings, feast, records, args.repeats, args.profile)
        continuous = [freshness_continuous(settings, feast, records, float(rate), args.seconds)
                      for rate in args.rates.split(",")]
        sensor = freshness_sensor(settings, feast, records, args.sensor_rate, args.seconds, args.interval)
        daemon = freshness_daemon(settings, feast, records, args.sensor_rate, args.seconds)
    finally:
        drop_project(feast)
    payload = {"input": {"folder": str(folder), "records": len(records), "bytes": speed["bytes"]},
               "throughput": speed["rows"], "ratio_streaming_to_consume_loop": speed["ratio"],
               "target": TARGET_RATIO, "freshness": [*continuous, sensor, daemon],
               "machine": {**machine(), "load_average_before": load_before}}
    if speed["profile"]:
        payload["profile"] = speed["profile"]
    write_results("streaming", payload, _markdown(payload, speed["profile"]))
    print(_markdown(payload, speed["profile"]))
    return 0


def _seconds(values: Sequence[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


def _verdict(value: float, target: float) -> str:
    return "met" if value >= target else "missed"


def _at_most(value: float, target: float) -> str:
    return "met" if value <= target else "missed"


def _sensor_verdict(row: dict[str, Any]) -> str:
    return _at_most(row["freshness_p99_ms_upper_bound"], (row["interval_s"] + 10) * 1000)


def _continuous_note(row: dict[str, Any]) -> str:
    """The target: p99 at most TARGET_CONTINUOUS_P99_MS at TARGET_CONTINUOUS_RATE events/s or more. A p99
    above it is missed at whatever rate the producer reached; one within it counts only at that rate."""
    if row["rate"] < TARGET_CONTINUOUS_RATE:
        return ""
    target = f"target p99 <= {TARGET_CONTINUOUS_P99_MS} ms at >= {TARGET_CONTINUOUS_RATE:,} events/s"
    achieved = row["achieved_rate"]
    if row["freshness_p99_ms"] > TARGET_CONTINUOUS_P99_MS:
        return f"{target}: missed (producer at {achieved:,.1f} events/s)"
    if achieved < TARGET_CONTINUOUS_RATE:
        return f"{target}: not shown, the producer reached {achieved:,.1f} events/s"
    return f"{target}: met"


def _markdown(payload: dict[str, Any], profile: str | None) -> str:
    speed = markdown_table(
        ["tool", "records", "seconds (median)", "min-max s", "records/s", "MB/s"],
        [[r["tool"], f"{r['records']:,}", f"{r['seconds']:.2f}", f"{r['min_seconds']:.2f}-{r['max_seconds']:.2f}",
          f"{r['records_per_s']:,.0f}", f"{r['mb_per_s']:.1f}"] for r in payload["throughput"]],
    )
    parse = next(r for r in payload["throughput"] if r["tool"] == "consume + parse")["records_per_s"]
    ratio = payload["ratio_streaming_to_consume_loop"]
    continuous = [f for f in payload["freshness"] if f["mode"] == "continuous"]
    sensors = [f for f in payload["freshness"] if f["mode"] != "continuous"]
    fresh = markdown_table(
        ["mode", "events/s asked (achieved)", "records", "p50 ms", "p99 ms", "max ms", "note"],
        [*(["continuous (follow)", f"{c['rate']:,.0f} ({c['achieved_rate']:,.0f})", f"{c['freshness_records']:,}",
            f"{c['freshness_p50_ms']:,}", f"{c['freshness_p99_ms']:,}", f"{c['freshness_max_ms']:,.0f}",
            _continuous_note(c)] for c in continuous),
         *([s["mode"], f"{s['rate']:,.0f}", f"{s['freshness_records']:,}", f"{s['freshness_p50_ms']:,.0f}",
            f"<= {s['freshness_p99_ms_upper_bound']:,.0f}", "",
            f"interval {s['interval_s']:g} s, {s['runs']} runs of {_seconds(s['run_seconds'])} s; target p99 "
            f"<= {s['interval_s'] + 10:g} s: {_sensor_verdict(s)}"
            + (f"; slowest phases of a run (s): {s['phases_max_s']}" if "phases_max_s" in s else "")]
           for s in sensors)],
    )
    size = payload["input"]["bytes"] / 1e6
    text = (f"## Streaming run vs a bare aiokafka consume loop (bench/streaming.py)\n\n"
            f"{payload['input']['records']:,} records ({size:.0f} MB) of both topics.\n\n"
            f"{speed}\nStreaming run / consume loop = **{ratio:.3f}** (target >= {payload['target']}: "
            f"{_verdict(ratio, payload['target'])}); consume + parse {parse:,.0f} records/s (target >= "
            f"{TARGET_PARSE_RECORDS_PER_S:,}: {_verdict(parse, TARGET_PARSE_RECORDS_PER_S)}).\n\n"
            "### Freshness: produced -> readable from Feast online\n\n"
            f"{fresh}\nMachine: {payload['machine']}.\n")
    if profile:
        text += f"\n### Where the streaming run's time goes (cProfile, own time)\n\n```\n{profile}\n```\n"
    return text


if __name__ == "__main__":
    sys.exit(main())
