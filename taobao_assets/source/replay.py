"""Replay a folder of raw Ali-CCP files into Kafka, in event-time order, resumable without gaps or duplicates.

What is produced. Every line of the four files becomes one Kafka record, its value the raw line
exactly as read (terminator included, so bronze can rebuild the bytes of the files), its
timestamp the simulated event time (:mod:`taobao_assets.source.event_time`) and its headers the
source file and line and ``produced_at``, the wall-clock time the replay sent it on its way (the
record timestamp carries event time, so the streaming path measures freshness from this header). Samples go to
``aliccp.samples`` keyed by ``sample_id``; common-features rows go to the compacted
``aliccp.common_features`` keyed by ``common_feature_index``. Bronze stores values only, so it
stays byte-exact whatever the headers say.

Order. Per split (train, then test): first the common-features rows no sample references, at the
split's first timestamp; then the samples in file order, each preceded by the common-features
rows it is the first to reference, at its own timestamp. So a consumer always sees a user context
before the impressions that need it, and timestamps never decrease along the stream, which is
what lets bronze find a day's records with ``offsets_for_times``.

Sending. Records are gathered into one batch per partition and handed to the producer whole
(:mod:`taobao_assets.source.partition_batches`: per-record sends cost the replay half its speed),
at least every ``CHECKPOINT_EVERY`` records and, in a paced replay, before every pause, so a paced
record waits no longer than the producer's linger would have kept it.

Resuming. The records form one deterministic sequence. After every ``CHECKPOINT_EVERY`` records
are acknowledged a checkpoint (records done + end offsets per partition) is written atomically.
The next records are already on their way meanwhile, so a replay that died after a checkpoint may
have written part of the next ``2 * CHECKPOINT_EVERY``; on resume the records after the
checkpoint's offsets are read back and their (file, line) are skipped, so nothing is written twice
and nothing is missed. Along a partition the records written are always a prefix of those sent
(the idempotent producer keeps a partition's batches in order and rules out duplicates from its
retries), so what a resume sends follows them in plan order.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aiokafka import TopicPartition
from tqdm import tqdm

from taobao_assets import failpoints
from taobao_assets.atomic_file import write_atomic
from taobao_assets.resources.kafka_client import KafkaClient, KafkaClients
from taobao_assets.settings import Settings, command_settings
from taobao_assets.source.event_time import EventTimeConfig, Timeline, count_lines, event_time_config
from taobao_assets.source.format import COLUMN_SEP, SPLITS, FileKind, raw_files
from taobao_assets.source.partition_batches import Delivery, PartitionBatches
from taobao_assets.source.topics import (
    LINE_HEADER,
    PRODUCED_AT_HEADER,
    SOURCE_HEADER,
    BadHeader,
    RawTopics,
    read_headers,
)

#: Records per checkpoint.
CHECKPOINT_EVERY = 5_000
#: The replay's producer (aiokafka's names): every replica acknowledges, idempotent so a retry never
#: writes twice, batches of up to 1 MiB, and a 20 ms linger that also bounds how long a paced replay
#: holds a record back. bench/replay.py gives Kafka's Java producer the same settings.
PRODUCER_OPTIONS: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 20,
                                    "max_batch_size": 1 << 20, "compression_type": None}
LINGER_S = PRODUCER_OPTIONS["linger_ms"] / 1000


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int
    source: str
    line: int

    def headers(self) -> list[tuple[str, bytes]]:
        """Source file, line and ``produced_at`` = now: call it as the record is sent."""
        return [(SOURCE_HEADER, self.source.encode()), (LINE_HEADER, str(self.line).encode()),
                (PRODUCED_AT_HEADER, str(time.time_ns() // 1_000_000).encode())]


def _column(raw: bytes, index: int) -> bytes:
    """The ``index``-th column of a raw line (b"" when the line has fewer columns)."""
    parts = raw.split(COLUMN_SEP, index + 1)
    return parts[index] if len(parts) > index else b""


def _index_common(path: Path) -> dict[bytes, list[tuple[int, int]]]:
    """``common_feature_index`` -> [(byte offset, line number)] of its rows, in file order."""
    index: dict[bytes, list[tuple[int, int]]] = {}
    offset = 0
    with path.open("rb", buffering=1 << 20) as f:
        for line_number, raw in enumerate(f, 1):
            index.setdefault(_column(raw, 0), []).append((offset, line_number))
            offset += len(raw)
    return index


def _read_line_at(f: BinaryIO, offset: int) -> bytes:
    f.seek(offset)
    return f.readline()


def plan(folder: Path, timeline: Timeline, topics: RawTopics) -> Iterator[ReplayRecord]:
    """The full, deterministic sequence of records a replay of ``folder`` into ``topics`` produces."""
    raw_files(folder)
    for split in SPLITS:
        yield from _plan_split(split, folder / FileKind.SAMPLE_SKELETON.file_name(split),
                               folder / FileKind.COMMON_FEATURES.file_name(split), timeline, topics)


def _plan_split(
    split: str, samples_path: Path, common_path: Path, timeline: Timeline, topics: RawTopics
) -> Iterator[ReplayRecord]:
    common_index = _index_common(common_path)
    with samples_path.open("rb", buffering=1 << 20) as f:
        referenced = {_column(raw, 3) for raw in f}
    with common_path.open("rb") if common_index else nullcontext(None) as common:

        def common_records(key: bytes, timestamp_ms: int) -> Iterator[ReplayRecord]:
            assert common is not None  # only called for keys of a non-empty index
            for offset, line in common_index[key]:
                yield ReplayRecord(topics.common_features.name, key, _read_line_at(common, offset),
                                   timestamp_ms, common_path.name, line)

        first = timeline.split_start_ordinal(split)
        for key in common_index:
            if key not in referenced:
                yield from common_records(key, timeline.timestamp_ms(first))
        emitted: set[bytes] = set()
        # This loop runs once per sample: what does not change per line is looked up once, and one
        # split of the line gives both the key (column 0) and the common-features key (column 3).
        samples_topic, samples_name = topics.samples.name, samples_path.name
        with samples_path.open("rb", buffering=1 << 20) as f:
            for ordinal, raw in enumerate(f, first):
                timestamp_ms = timeline.timestamp_ms(ordinal)
                columns = raw.split(COLUMN_SEP, 4)
                key = columns[3] if len(columns) > 3 else b""
                if key in common_index and key not in emitted:
                    emitted.add(key)
                    yield from common_records(key, timestamp_ms)
                yield ReplayRecord(samples_topic, columns[0], raw, timestamp_ms, samples_name, ordinal - first + 1)


def total_records(folder: Path) -> int:
    return sum(count_lines(p) for p in raw_files(folder))


def fingerprint(folder: Path, config: EventTimeConfig) -> str:
    """Identity of a replay: the files (name, size, mtime) and the time line they are mapped to."""
    h = hashlib.sha256(f"{folder.resolve()}|{config.start_date}|{config.days}".encode())
    for p in raw_files(folder):
        st = p.stat()
        h.update(f"|{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_checkpoint_dir(settings: Settings) -> Path:
    """Where ``run_replay`` (and so the CLI and the replay job) keeps its checkpoints."""
    return settings.state_dir / "replay"


def checkpoint_file(checkpoint_dir: Path, topics: RawTopics, folder: Path, config: EventTimeConfig) -> Path:
    """The checkpoint of a replay of ``folder`` on ``config``'s time line into ``topics``.

    Named after the topics as well as the data set: its offsets are those topics' offsets, and the
    same files replayed into other topics (a test's, a benchmark's namespace) is another replay.
    """
    return checkpoint_dir / f"{checkpoint_prefix(topics)}{fingerprint(folder, config)}.json"


def checkpoint_prefix(topics: RawTopics) -> str:
    """Start of the name of every checkpoint of replays into ``topics`` (what ``reset`` deletes)."""
    return f"replay-{topics.samples.name}-"


@dataclass
class Checkpoint:
    records_done: int
    end_offsets: dict[str, dict[int, int]]

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps({"records_done": self.records_done, "end_offsets": self.end_offsets}))

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        offsets = {t: {int(p): o for p, o in parts.items()} for t, parts in raw["end_offsets"].items()}
        return cls(raw["records_done"], offsets)


@dataclass(frozen=True)
class ReplayResult:
    records_total: int
    records_sent: int
    records_skipped_on_resume: int
    seconds: float
    resumed: bool

    @property
    def records_per_second(self) -> float:
        return self.records_sent / self.seconds if self.seconds else 0.0


Progress = Callable[[int, int, float], None]


async def _written_after(kafka: KafkaClients, offsets: dict[str, dict[int, int]]) -> set[tuple[str, int]]:
    """(source, line) of the records written after the checkpoint's offsets (a died batch's part)."""
    found: set[tuple[str, int]] = set()
    async with kafka.consumer() as consumer:
        for topic, start in offsets.items():
            end = await kafka.end_offsets(topic)
            pending = {p: end[p] for p in end if end[p] > start.get(p, 0)}
            if not pending:
                continue
            consumer.assign([TopicPartition(topic, p) for p in pending])
            for p in pending:
                consumer.seek(TopicPartition(topic, p), start.get(p, 0))
            while pending:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batches.items():
                    for m in messages:
                        # A record another producer wrote, headers or no, is no line of this replay.
                        with suppress(BadHeader):
                            origin = read_headers(m.headers)
                            found.add((origin.source, origin.line))
                        if m.offset + 1 >= pending.get(tp.partition, 0):
                            pending.pop(tp.partition, None)
    return found


async def replay(
    folder: Path,
    kafka: KafkaClients,
    *,
    topics: RawTopics,
    config: EventTimeConfig,
    checkpoint_dir: Path,
    rate: float | None = None,
    on_progress: Progress | None = None,
    reset: bool = False,
) -> ReplayResult:
    """Replay ``folder`` into Kafka (see the module docstring); returns what was done.

    ``reset`` first deletes the topics and the checkpoints of replays into them, for a new data set.
    """
    if rate is not None and not (0 < rate < math.inf):
        raise ValueError(f"replay rate {rate!r}: give a positive number of events per second, or none to "
                         f"replay as fast as possible")
    t0 = time.monotonic()
    total = total_records(folder)
    timeline = Timeline.from_folder(folder, config)
    if reset:
        await kafka.delete_topics([t.name for t in topics.all])
        for old in checkpoint_dir.glob(f"{checkpoint_prefix(topics)}*.json"):
            old.unlink()
    await kafka.create_topics(list(topics.all))
    checkpoint_path = checkpoint_file(checkpoint_dir, topics, folder, config)
    checkpoint = Checkpoint.load(checkpoint_path)
    current = {t.name: await kafka.end_offsets(t.name) for t in topics.all}
    skip: set[tuple[str, int]] = set()
    if checkpoint is None:
        held = sum(offset for parts in current.values() for offset in parts.values())
        if held:
            # Another data set's records before ours would break the non-decreasing event time
            # along each partition, and with it bronze's day ranges.
            raise RuntimeError(
                f"Kafka topics {topics.samples.name} and {topics.common_features.name} already hold {held:,} "
                f"records that "
                f"no checkpoint of this data set ({folder}) accounts for; replay with --reset (deletes the "
                f"topics and replay checkpoints) or use other topics (TFP_TOPIC_PREFIX)"
            )
        # Saved before the first send, so a replay killed within its first batch resumes too.
        checkpoint = Checkpoint(0, current)
        checkpoint.save(checkpoint_path)
    else:
        for topic, parts in checkpoint.end_offsets.items():
            if any(current[topic].get(p, 0) < off for p, off in parts.items()):
                raise RuntimeError(
                    f"Kafka topic {topic} holds fewer records than the replay checkpoint "
                    f"{checkpoint_path} says were written (was it deleted?); remove the checkpoint "
                    f"to replay from the start"
                )
        skip = await _written_after(kafka, checkpoint.end_offsets)
    resumed = checkpoint.records_done > 0
    done, sent, skipped = checkpoint.records_done, 0, 0
    ends = {t: dict(parts) for t, parts in checkpoint.end_offsets.items()}
    if done >= total:
        return ReplayResult(total, 0, 0, time.monotonic() - t0, resumed)

    async with kafka.producer(**PRODUCER_OPTIONS) as producer:
        batches = PartitionBatches(producer, {t.name: t.partitions for t in topics.all},
                                   upstream=topics.common_features.name)
        position = 0
        in_flight: tuple[int, list[Delivery]] | None = None

        async def checkpoint_when_acknowledged(group: tuple[int, list[Delivery]]) -> None:
            records_done, deliveries = group
            for delivery in deliveries:
                parts = ends.setdefault(delivery.topic, {})
                parts[delivery.partition] = max(parts.get(delivery.partition, 0), await delivery.end_offset())
            Checkpoint(records_done, ends).save(checkpoint_path)
            failpoints.reached("replay.checkpoint_saved")
            if on_progress is not None:
                on_progress(records_done, total, sent / max(time.monotonic() - t0, 1e-9))

        for record in plan(folder, timeline, topics):
            position += 1
            if position <= done:
                continue
            if skip and (record.source, record.line) in skip:
                skipped += 1
                continue
            await batches.add(record.topic, record.key, record.value, record.timestamp_ms, record.headers())
            sent += 1
            if sent % CHECKPOINT_EVERY == 0:
                # The previous records' acknowledgements are awaited only now that these are on
                # their way, so the producer never idles at a checkpoint (see "Resuming" above).
                await batches.hand_over()
                previous, in_flight = in_flight, (position, batches.handed())
                if previous is not None:
                    await checkpoint_when_acknowledged(previous)
            if rate is not None:
                ahead = sent / rate - (time.monotonic() - t0)
                # Pausing only once a linger's worth ahead keeps a paced replay's batches as full,
                # and its records as prompt, as the producer's linger would.
                if ahead >= LINGER_S:
                    await batches.hand_over()
                    await asyncio.sleep(ahead)
        await batches.hand_over()
        last = (position, batches.handed())
        if in_flight is not None:
            await checkpoint_when_acknowledged(in_flight)
        await checkpoint_when_acknowledged(last)
    return ReplayResult(total, sent, skipped, time.monotonic() - t0, resumed)


def run_replay(settings: Settings, kafka: KafkaClients, folder: Path | None = None,
               rate: float | None = None, on_progress: Progress | None = None, reset: bool = False) -> ReplayResult:
    """Replay ``folder`` (default: the configured source folder) with the configured time line."""
    return asyncio.run(replay(
        folder or settings.source_dir, kafka, topics=RawTopics.of(settings.topic_prefix),
        config=event_time_config(settings),
        checkpoint_dir=default_checkpoint_dir(settings), rate=rate, on_progress=on_progress, reset=reset,
    ))


def _events_per_second(text: str) -> float:
    """``--rate``: a positive, finite number. 0 divides by zero in the pacing, and a negative or
    infinite rate would quietly mean "as fast as possible", which leaving ``--rate`` out says."""
    wrong = argparse.ArgumentTypeError(f"{text!r} is not a positive number of events per second: "
                                       f"give e.g. --rate 5000, or leave --rate out to replay as fast as possible")
    try:
        rate = float(text)
    except ValueError:
        raise wrong from None
    if not 0 < rate < float("inf"):
        raise wrong
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taobao_assets.source.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder with the raw files (default: TFP_SOURCE_DIR)")
    parser.add_argument("--rate", type=_events_per_second, help="events per second (default: as fast as possible)")
    parser.add_argument("--reset", action="store_true",
                        help="delete the topics and replay checkpoints first (a new data set)")
    args = parser.parse_args(argv)
    settings = command_settings(parser)
    bar = tqdm(unit="rec", unit_scale=True, desc="replay", file=sys.stderr)

    def progress(done: int, total: int, _rate: float) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = run_replay(settings, KafkaClient.from_settings(settings), args.data, args.rate, progress,
                        reset=args.reset)
    bar.close()
    print(json.dumps({**result.__dict__, "records_per_second": round(result.records_per_second)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
