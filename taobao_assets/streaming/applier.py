"""The engine shared by the sensor's runs and the continuous consumer: consume, join, commit, write online.

An :class:`Applier` holds the stream's lease (one applier at a time; a run waits for it), and:

1. catches the context map up with the common-features topic, to its end offsets as of now. The
   replay writes a context before the first sample that uses it, so once the map has caught up
   past the moment a sample was written, the sample's context is there. A run catches up before
   its samples (whose end offsets the sensor read earlier); any applier catches up again when a
   batch holds a context it does not know, and again until ``context_wait_seconds`` after the
   batch was produced (two topics: a sample may be appended just before its context); only what is
   still unknown then is "unresolved";
2. applies sample records batch by batch, each batch one atomic commit of counters + offsets
   (:mod:`taobao_assets.streaming.state`). Rejected records are sent to the dead-letter topic
   before the commit. A commit that finds the stored offsets moved (another applier got there)
   applies nothing, and the applier resumes from the stored offsets;
3. flushes: writes the committed state of every entity marked dirty to the Feast online store
   (:mod:`taobao_assets.streaming.online`) and measures freshness on the records flushed.

An applier never skips: a run asked for ``[start, end)`` starts from the stored offset when that
is behind ``start`` (an earlier run failed) and skips what is already applied when it is ahead.

Fault injection. The fail points ``streaming.before_commit`` (dead letters sent, nothing
committed), ``streaming.after_commit`` (committed, not yet written online) and
``streaming.after_write`` (written online, the entities not yet unmarked) of
:mod:`taobao_assets.failpoints` let the tests crash an applier there (``TFP_FAILPOINT``) and
prove that what comes after neither double counts nor skips.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from itertools import chain
from types import TracebackType

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata

from taobao_assets import failpoints
from taobao_assets.streaming.counters import Deltas
from taobao_assets.streaming.dead_letter import send_dead_letters
from taobao_assets.streaming.join import aggregate, parse_contexts, parse_samples
from taobao_assets.streaming.online import CtrPrior, OnlineWriter, Prior, streaming_store
from taobao_assets.streaming.resource import StreamingResource
from taobao_assets.streaming.state import Commit, OffsetMove, StreamState, refuse_offsets_beyond

#: A bounded read that gets nothing for this long means the broker lost the records or is down.
FETCH_TIMEOUT_SECONDS = 30.0
CONTEXT_BATCH_RECORDS = 500
CONTEXT_RETRY_SECONDS = 0.2


@dataclass(frozen=True)
class _Prepared:
    deltas: Deltas
    totals: dict[str, int]
    produced_at: list[int]
    #: Completes once the broker has the batch's dead letters: the batch is committed only then.
    dead_letters_sent: asyncio.Future[list[RecordMetadata]]


@dataclass(frozen=True)
class _InFlight:
    commit: asyncio.Future[Commit]
    prepared: _Prepared
    records: int


def percentile(values: Iterable[float], q: float) -> float | None:
    array = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(array, q)) if array.size else None


@dataclass
class ApplyReport:
    """What an applier did (the metadata of a run, the progress of the continuous consumer)."""

    samples_read: int = 0
    samples_committed: int = 0
    contexts_committed: int = 0
    conflicts: int = 0
    context_catch_ups: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)
    rows_written: Counter[str] = field(default_factory=Counter)
    #: Milliseconds from ``produced_at`` to readable online, for records that carry the header.
    freshness_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    offsets: dict[int, int] = field(default_factory=dict)
    prior: Prior | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def freshness(self, q: float) -> float | None:
        return percentile(self.freshness_ms, q)


class Applier:
    """See the module docstring. Use as ``async with Applier(...) as applier``."""

    def __init__(self, streaming: StreamingResource, owner: str, *, flush_seconds: float,
                 ctr_prior: float | None = None, log: Callable[[str], None] | None = None) -> None:
        self.streaming = streaming
        self.owner = owner
        self.flush_seconds = flush_seconds
        self.log = log or (lambda _: None)
        self.topics = streaming.topics
        self.state: StreamState = streaming.state()
        self.prior = CtrPrior(self.state, streaming.feast.postgres, ctr_prior)
        self.writer = OnlineWriter(streaming_store(streaming.feast), self.state)
        self.report = ApplyReport()
        self._stack = AsyncExitStack()
        self._renewed = 0.0
        self._flushed = time.monotonic()
        self._committed_since_flush = False
        self._unflushed_produced_at: list[int] = []
        self.sample_partitions: list[int] = []
        self.context_partitions: list[int] = []
        self.samples: AIOKafkaConsumer
        self.contexts: AIOKafkaConsumer
        self.producer: AIOKafkaProducer

    # --- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> Applier:
        try:
            kafka = self.streaming.kafka
            await kafka.create_topics([self.topics.dead_letter])
            sample_ends = await kafka.end_offsets(self.topics.samples.name)
            context_ends = await kafka.end_offsets(self.topics.common_features.name)
            refuse_offsets_beyond(self.topics.samples.name, self.state.sample_offsets(), sample_ends)
            refuse_offsets_beyond(self.topics.common_features.name, self.state.context_offsets(), context_ends)
            self.state.check_layout()
            self.sample_partitions, self.context_partitions = sorted(sample_ends), sorted(context_ends)
            fetch = {"max_partition_fetch_bytes": 8 << 20, "fetch_max_bytes": 64 << 20}
            self.samples = await self._stack.enter_async_context(kafka.consumer(**fetch))
            self.samples.assign([self._tp(self.topics.samples.name, p) for p in self.sample_partitions])
            self.contexts = await self._stack.enter_async_context(kafka.consumer(**fetch))
            context_topic = self.topics.common_features.name
            self.contexts.assign([self._tp(context_topic, p) for p in self.context_partitions])
            self.producer = await self._stack.enter_async_context(kafka.producer())
            # Connected first, so that a run queued behind another starts applying as soon as it may.
            await self._acquire_lease()
        except BaseException:
            await self._stack.aclose()
            raise
        try:
            self.flush()  # entities a crashed applier committed but did not write online
        except BaseException:
            await self._stack.aclose()
            self.writer.close()
            self.state.release_lease(self.owner)
            raise
        # The process's imports (Dagster, Feast, ...) leave ~400k long-lived objects that every full
        # garbage collection would scan again; the applier allocates fast enough to trigger many, and
        # they cost ~40% of a run. Freezing moves what exists now out of the collector's sight, and
        # leaving unfreezes it. A frozen object is never collected, so the garbage cycles alive now
        # (what the previous run, its Dagster step included, left: ~40 MB a run) are collected first.
        # Frozen at every run's start instead, they were never collected: 30 runs in one process
        # took its heap from 180 to 930 MB (the 10 M demo's pipeline PSS rose by 5 GB over its 200
        # runs); with this collection it stayed at ~100 MB. It costs ~0.25 s a run, once, where the
        # collections the freeze avoids cost ~40% of the run.
        gc.collect()
        gc.freeze()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if exc is None:
                self.flush()
        finally:
            await self._stack.aclose()
            self.writer.close()
            self.state.release_lease(self.owner)
            self.report.finished = time.monotonic()
            gc.unfreeze()

    async def _acquire_lease(self) -> None:
        seconds = self.streaming.lease_seconds
        deadline = time.monotonic() + self.streaming.lease_wait_seconds
        waiting_for = None
        while not self.state.try_lease(self.owner, seconds):
            holder = self.state.lease_holder()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the stream {self.state.stream} stayed leased to {holder!r} for "
                    f"{self.streaming.lease_wait_seconds:g} s; stop it, or wait for its lease to expire")
            if holder != waiting_for:
                self.log(f"waiting for the stream lease held by {holder!r}")
                waiting_for = holder
            await asyncio.sleep(0.5)
        self._renewed = time.monotonic()

    def _renew_lease_if_due(self) -> None:
        seconds = self.streaming.lease_seconds
        if time.monotonic() - self._renewed >= seconds / 3:
            self.state.renew_lease(self.owner, seconds)
            self._renewed = time.monotonic()

    @staticmethod
    def _tp(topic: str, partition: int) -> TopicPartition:
        return TopicPartition(topic, partition)

    # --- contexts -----------------------------------------------------------------------
    async def catch_up_contexts(self) -> int:
        """Apply the common-features topic up to its end offsets as of now; returns records applied."""
        consumer, topic = self.contexts, self.topics.common_features.name
        tps = [self._tp(topic, p) for p in self.context_partitions]
        ends = {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
        stored = self.state.context_offsets()
        positions = {p: stored.get(p, 0) for p in self.context_partitions}
        todo = {p for p in self.context_partitions if positions[p] < ends[p]}
        for p in todo:
            consumer.seek(self._tp(topic, p), positions[p])
        applied = 0
        idle_since = time.monotonic()
        self.report.context_catch_ups += 1
        while todo:
            self._renew_lease_if_due()
            batch = await consumer.getmany(*(self._tp(topic, p) for p in todo), timeout_ms=500,
                                           max_records=CONTEXT_BATCH_RECORDS)
            records = {tp.partition: [m for m in messages if m.offset < ends[tp.partition]]
                       for tp, messages in batch.items()}
            records = {p: messages for p, messages in records.items() if messages}
            if records:
                idle_since = time.monotonic()
                applied += await self._apply_contexts(records, positions)
            elif time.monotonic() - idle_since > FETCH_TIMEOUT_SECONDS:
                raise TimeoutError(f"Kafka returned nothing of {topic} partitions {sorted(todo)} for "
                                   f"{FETCH_TIMEOUT_SECONDS:g} s while catching up to offsets {ends}")
            todo -= await self._reached(consumer, topic, todo, positions, ends)
        return applied

    async def _apply_contexts(self, records: Mapping[int, list[ConsumerRecord]], positions: dict[int, int]
                              ) -> int:
        parsed = parse_contexts(list(chain.from_iterable(records.values())))
        await (await send_dead_letters(self.producer, self.topics.dead_letter.name, parsed.dead_letters))
        moves = [OffsetMove(p, positions[p], messages[-1].offset + 1) for p, messages in records.items()]
        commit = self.state.apply_contexts(moves, parsed.users, parsed.totals, parsed.deleted)
        if not commit.applied:
            self._resume_from(self.contexts, self.topics.common_features.name, commit.stored, positions)
            return 0
        positions.update({m.partition: m.new for m in moves})
        self.report.dead_letters.update(parsed.totals)
        count = sum(len(messages) for messages in records.values())
        self.report.contexts_committed += count
        return count

    async def _reached(self, consumer: AIOKafkaConsumer, topic: str, partitions: set[int],
                       positions: Mapping[int, int], bounds: Mapping[int, int]) -> set[int]:
        """The partitions applied up to their bound, or with nothing left before it (compacted away)."""
        return {p for p in partitions
                if positions[p] >= bounds[p] or await consumer.position(self._tp(topic, p)) >= bounds[p]}

    def _resume_from(self, consumer: AIOKafkaConsumer, topic: str, stored: Mapping[int, int],
                     positions: dict[int, int]) -> None:
        """After a lost compare-and-set: continue from what another applier committed."""
        self.report.conflicts += 1
        self.log(f"{topic}: offsets moved under this applier (now {dict(stored)}); resuming from there")
        positions.update(stored)
        for p, offset in positions.items():  # records fetched after the lost batch are read again too
            consumer.seek(self._tp(topic, p), offset)

    # --- samples ------------------------------------------------------------------------
    async def apply_samples(self, bounds: Mapping[int, int] | None = None, stop: asyncio.Event | None = None,
                            on_tick: Callable[[], None] | None = None) -> None:
        """Apply sample records up to ``bounds`` (end offset per partition), or until ``stop`` is set.

        With ``bounds`` the partitions not named are left alone and the call returns once every
        named one is applied up to its bound; without, it follows all partitions until ``stop``.
        ``on_tick`` is called after every poll (at least every 200 ms).

        While Redis runs a batch's commit (in a thread), the next batch is fetched and
        parsed; it is committed only once the previous commit succeeded, and dropped (and read
        again) if that commit lost its compare-and-set.
        """
        consumer, topic = self.samples, self.topics.samples.name
        stored = self.state.sample_offsets()
        positions = {p: stored.get(p, 0) for p in self.sample_partitions}
        self.report.offsets = positions
        for p in self.sample_partitions:
            consumer.seek(self._tp(topic, p), positions[p])
        limits = {p: bounds[p] for p in self.sample_partitions if p in bounds} if bounds is not None else None
        idle_since = time.monotonic()
        in_flight: _InFlight | None = None
        try:
            while not (stop is not None and stop.is_set()):
                # Recomputed each time: a commit that loses its compare-and-set moves positions back.
                active = set(self.sample_partitions) if limits is None else \
                    set(limits) - await self._reached(consumer, topic, set(limits), positions, limits)
                if not active:
                    if in_flight is None:
                        break
                    await self._settle(in_flight, positions)
                    in_flight = None
                    continue
                self._renew_lease_if_due()
                batch = await consumer.getmany(*(self._tp(topic, p) for p in active), timeout_ms=200,
                                               max_records=self.streaming.batch_records)
                records = {tp.partition: (messages if limits is None else
                                          [m for m in messages if m.offset < limits[tp.partition]])
                           for tp, messages in batch.items()}
                records = {p: messages for p, messages in records.items() if messages}
                if records:
                    idle_since = time.monotonic()
                    prepared = await self._prepare_samples(records)
                    settled = in_flight is None or await self._settle(in_flight, positions)
                    await prepared.dead_letters_sent
                    in_flight = self._submit(prepared, records, positions) if settled else None
                elif limits is not None and time.monotonic() - idle_since > FETCH_TIMEOUT_SECONDS:
                    raise TimeoutError(f"Kafka returned nothing of {topic} partitions {sorted(active)} "
                                       f"for {FETCH_TIMEOUT_SECONDS:g} s while reading up to {limits}")
                flush_due = time.monotonic() - self._flushed >= self.flush_seconds
                # Flushing every commit (the follower) writes a batch as soon as it is committed; with
                # a flush interval (a run), the online write overlaps the commit still running.
                if in_flight is not None and (not records or (flush_due and not self.flush_seconds)):
                    await self._settle(in_flight, positions)
                    in_flight = None
                if self._committed_since_flush and flush_due:
                    self.flush()
                if on_tick is not None:
                    on_tick()
            if in_flight is not None:
                await self._settle(in_flight, positions)
                in_flight = None
        finally:
            if in_flight is not None:  # failing: let the commit finish, its outcome is in Redis either way
                with suppress(Exception):
                    await in_flight.commit

    async def _prepare_samples(self, records: Mapping[int, list[ConsumerRecord]]) -> _Prepared:
        """Parse, join and aggregate a batch, and start sending its dead letters."""
        latest_ms = int((time.time() + self.streaming.max_future_skew_seconds) * 1000)
        parsed = parse_samples(list(chain.from_iterable(records.values())), latest_ms)
        self.report.samples_read += sum(len(messages) for messages in records.values())
        indexes = parsed.context_indexes
        users = self.state.users_of(indexes)
        # Contexts unknown after a catch-up may still be on their way (the other topic) while the
        # batch is recent: catch up again until they come or the batch is context_wait_seconds old.
        wait_until_ms = max(parsed.produced_at, default=0) + self.streaming.context_wait_seconds * 1000
        while len(users) < len(indexes):
            await self.catch_up_contexts()
            users.update(self.state.users_of([i for i in indexes if i not in users]))
            if len(users) == len(indexes) or time.time() * 1000 >= wait_until_ms:
                break
            await asyncio.sleep(CONTEXT_RETRY_SECONDS)
        deltas, totals = aggregate(parsed, users, self.state.entity_prefix)
        sent = await send_dead_letters(self.producer, self.topics.dead_letter.name, parsed.dead_letters)
        return _Prepared(deltas, totals, parsed.produced_at, sent)

    def _submit(self, prepared: _Prepared, records: Mapping[int, list[ConsumerRecord]],
                positions: dict[int, int]) -> _InFlight:
        """Start the batch's commit in a thread; ``positions`` assume it will succeed."""
        failpoints.reached("streaming.before_commit")
        moves = [OffsetMove(p, positions[p], messages[-1].offset + 1) for p, messages in records.items()]
        commit = asyncio.ensure_future(asyncio.to_thread(self.state.apply_samples, moves, prepared.deltas,
                                                         prepared.totals))
        positions.update({m.partition: m.new for m in moves})
        return _InFlight(commit, prepared, sum(len(messages) for messages in records.values()))

    async def _settle(self, in_flight: _InFlight, positions: dict[int, int]) -> bool:
        """Wait for a submitted commit; on a lost compare-and-set, resume from the stored offsets."""
        commit = await in_flight.commit
        if not commit.applied:
            self._resume_from(self.samples, self.topics.samples.name, commit.stored, positions)
            return False
        failpoints.reached("streaming.after_commit")
        totals = in_flight.prepared.totals
        self.report.samples_committed += in_flight.records
        self.report.totals.update(totals)
        self.report.totals.update(commit.late)
        self.report.dead_letters.update({k: v for k, v in totals.items() if k.startswith("dead_letter.")})
        self._unflushed_produced_at += in_flight.prepared.produced_at
        self._committed_since_flush = True
        return True

    # --- online -------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every dirty entity's committed state to the online store; then measure freshness."""
        prior = self.report.prior = self.prior.current()
        for keys in self.state.dirty_chunks():
            # Fencing: an applier that lost the lease must not overwrite newer rows with its older state.
            self.state.renew_lease(self.owner, self.streaming.lease_seconds)
            self._renewed = time.monotonic()
            states = self.state.read_states(keys)
            self.report.rows_written.update(self.writer.write(states, prior.ctr))
            failpoints.reached("streaming.after_write")
            found = {state.key for state in states}
            self.state.clear_dirty(states, expired=[key for key in keys if key not in found])
        now_ms = time.time() * 1000
        self.report.freshness_ms += [now_ms - produced for produced in self._unflushed_produced_at]
        self._unflushed_produced_at.clear()
        self._flushed = time.monotonic()
        self._committed_since_flush = False
