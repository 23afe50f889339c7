"""From Kafka records to what the state store applies: parse, join with the user context, aggregate.

Parsing is the one parser of the batch path (:func:`taobao_assets.source.parser.parse_batch`,
all of a poll's records at once), and a rejected record's dead letter carries the file and line
the replay put in its headers, so it has the same reason and location as in silver's quarantine.
The join is by ``common_feature_index`` against the context map of the state store; a sample whose
context is unknown (or has no user id) still counts for its item, and is counted as such, as
gold's left join does.

A batch becomes :class:`~taobao_assets.streaming.state.Deltas`: for every entity it touches (the
user, the item (field 205) and the user x item category (field 206)) the batch's impressions,
clicks and conversions per minute of event time (the Kafka record timestamp), grouped by numpy
over the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka.structs import ConsumerRecord

from taobao_assets.source.format import FileKind, Reason
from taobao_assets.source.parser import BatchColumn, QuarantineRecord, parse_batch, record_ends
from taobao_assets.source.topics import LINE_HEADER, PRODUCED_AT_HEADER, SOURCE_HEADER, BadHeader, read_headers
from taobao_assets.streaming.counters import Deltas
from taobao_assets.streaming.dead_letter import DeadLetter, RecordFault

USER_FIELD = "101"
ITEM_FIELD = "205"
CATEGORY_FIELD = "206"
#: Entity kinds of the state store, by the key columns of the real-time table they feed.
KINDS = {("user_id",): "u", ("item_id",): "i", ("user_id", "category_id"): "uc"}
MINUTE_MS = 60_000
#: What the context map says of a context it does not know (a user may be ``None``: the row has none).
_UNKNOWN = object()
_REPLAY_HEADERS = (SOURCE_HEADER, LINE_HEADER, PRODUCED_AT_HEADER)


def _where(record: ConsumerRecord) -> tuple[str, int, int | None]:
    """File, line and produce time from the record's headers (:func:`read_headers`).

    Freshness is measured on the records that carry a produce time: the replay sets it on every
    record; another producer may leave it out.
    """
    headers = read_headers(record.headers)
    return headers.source, headers.line, headers.produced_at


@dataclass
class _Screened:
    """The records of a poll the parser can take (with their produce times), and the others' dead letters."""

    usable: list[ConsumerRecord] = field(default_factory=list)
    produced_at: list[int] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def _screen_replayed(records: Sequence[ConsumerRecord], latest_ms: int | None) -> _Screened | None:
    """:func:`_screen` of a poll where every record is as the replay writes it (a value, an event
    time not after ``latest_ms``, and its three headers, well-formed and in order), checked a
    column at a time; ``None`` if any record is otherwise. Reading headers record by record was most
    of the parse step's time, and a poll of foreign records is the exception."""
    headers = [record.headers for record in records]
    try:
        if {(h[0][0], h[1][0], h[2][0]) for h in headers if len(h) == 3} != {_REPLAY_HEADERS} or (
                sum(len(h) == 3 for h in headers) != len(headers)):
            return None
        if any(record.value is None for record in records):
            return None
        b"\n".join(h[0][1] for h in headers).decode()  # every source is UTF-8 (a newline ends any bad sequence)
        np.array([h[1][1] for h in headers]).astype(np.int64)  # every line is an integer
        produced = np.array([h[2][1] for h in headers]).astype(np.int64)
    except (TypeError, ValueError):  # a None header value, a bad source or a number that is not one
        return None
    if latest_ms is not None and records and max(record.timestamp for record in records) > latest_ms:
        return None
    return _Screened(list(records), produced.tolist(), [])


def _screen(records: Sequence[ConsumerRecord], kind: FileKind, latest_ms: int | None = None) -> _Screened:
    """Split off the records that cannot be parsed or applied: bad headers, no value at all, or an
    event time after ``latest_ms``."""
    if (fast := _screen_replayed(records, latest_ms)) is not None:
        return fast
    screened = _Screened()
    for record in records:
        try:
            source, line, produced = _where(record)
        except BadHeader as error:
            screened.dead_letters.append(DeadLetter.fault(record, RecordFault.BAD_HEADER, str(error)))
            continue
        if record.value is None:
            screened.dead_letters.append(DeadLetter.fault(
                record, RecordFault.NULL_VALUE, f"a {kind.value} record without a value", source, line))
            continue
        if latest_ms is not None and record.timestamp > latest_ms:
            ahead = (record.timestamp - latest_ms) / 1000
            screened.dead_letters.append(DeadLetter.fault(
                record, RecordFault.FUTURE_TIMESTAMP,
                f"event time {record.timestamp} ms is {ahead:,.0f} s beyond the latest accepted, {latest_ms} ms "
                f"(the clock plus max_future_skew_seconds)", source, line))
            continue
        screened.usable.append(record)
        if produced is not None:
            screened.produced_at.append(produced)
    return screened


def dead_letter_total(kind: FileKind, letter: DeadLetter) -> str:
    return f"dead_letter.{kind.value}.{letter.reason.value}"


@dataclass
class ParsedContexts:
    """Common-features records of a batch: the user of each context and the contexts deleted (by a
    tombstone; the last record of an index wins), and the rejects."""

    users: dict[str, int | None] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)


_CONTEXT_LAYOUT = (BatchColumn("common_feature_index", "common_feature_index"),
                   BatchColumn("user_id", "id", USER_FIELD))
_SAMPLE_LAYOUT = (BatchColumn("click", "click"), BatchColumn("conversion", "conversion"),
                  BatchColumn("common_feature_index", "common_feature_index"),
                  BatchColumn("item_id", "id", ITEM_FIELD), BatchColumn("category_id", "id", CATEGORY_FIELD))


def _parse(records: Sequence[ConsumerRecord], kind: FileKind, layout: Sequence[BatchColumn]
           ) -> tuple[pa.RecordBatch, list[DeadLetter]]:
    """One parse of all the records' values (Arrow columns), and a dead letter per rejected record.

    Only a rejected record's headers are read here: its file and line go into its dead letter.
    """
    values = [record.value for record in records]
    batch = parse_batch(kind, layout, b"".join(values),
                        record_ends(np.fromiter(map(len, values), np.int64, len(values))))
    reasons, messages = batch.column("reason"), batch.column("message")
    letters = []
    for row in pc.indices_nonzero(reasons.is_valid()).to_pylist() if reasons.null_count < len(reasons) else []:
        record = records[row]
        source, line, _ = _where(record)
        rejected = QuarantineRecord(source, line, kind, record.value, Reason(reasons[row].as_py()),
                                    messages[row].as_py())
        letters.append(DeadLetter.of(record, rejected))
    return batch, letters


def _good(batch: pa.RecordBatch) -> pa.RecordBatch:
    reasons = batch.column("reason")
    return batch if reasons.null_count == len(reasons) else batch.filter(reasons.is_null())


def _tombstone_index(record: ConsumerRecord) -> str | None:
    """The context a tombstone deletes: the key of a record without a value (the compacted topic's
    deletion), if it is text."""
    if record.value is not None or record.key is None:
        return None
    try:
        return str(record.key.decode())
    except UnicodeDecodeError:
        return None


def parse_contexts(records: Sequence[ConsumerRecord]) -> ParsedContexts:
    deletions = {id(record): index for record in records if (index := _tombstone_index(record)) is not None}
    screened = _screen([record for record in records if id(record) not in deletions], FileKind.COMMON_FEATURES)
    batch, letters = _parse(screened.usable, FileKind.COMMON_FEATURES, _CONTEXT_LAYOUT)
    reasons = batch.column("reason")
    users = zip(batch.column("common_feature_index").to_pylist(), batch.column("user_id").to_pylist(), strict=True)
    good = {id(record): user for record, user, reason in zip(screened.usable, users, reasons.is_null().to_pylist(),
                                                             strict=True) if reason}
    parsed = ParsedContexts(dead_letters=[*screened.dead_letters, *letters])
    for record in records:  # in order: the last record of an index wins
        if (index := deletions.get(id(record))) is not None:
            parsed.users.pop(index, None)
            parsed.deleted.add(index)
        elif (row := good.get(id(record))) is not None:
            parsed.users[row[0]] = row[1]
            parsed.deleted.discard(row[0])
    for letter in parsed.dead_letters:
        total = dead_letter_total(FileKind.COMMON_FEATURES, letter)
        parsed.totals[total] = parsed.totals.get(total, 0) + 1
    return parsed


@dataclass
class ParsedSamples:
    """A batch's good sample records as columns (event ms, labels, context, item and category ids
    with their validity), the rejects, and the produce times."""

    event_ms: np.ndarray
    click: np.ndarray
    conversion: np.ndarray
    context: list[str]
    item: np.ndarray
    has_item: np.ndarray
    category: np.ndarray
    has_category: np.ndarray
    dead_letters: list[DeadLetter] = field(default_factory=list)
    produced_at: list[int] = field(default_factory=list)

    @property
    def context_indexes(self) -> list[str]:
        return list(set(self.context))


def _numbers(column: pa.Array) -> np.ndarray:
    """An integer column as int64 (0 where null)."""
    return np.asarray(pc.fill_null(column, 0).to_numpy(zero_copy_only=False), np.int64)


def _valid(column: pa.Array) -> np.ndarray:
    return np.asarray(column.is_valid().to_numpy(zero_copy_only=False), bool)


def parse_samples(records: Sequence[ConsumerRecord], latest_ms: int | None = None) -> ParsedSamples:
    """The samples of ``records``; one with an event time after ``latest_ms`` is a dead letter."""
    screened = _screen(records, FileKind.SAMPLE_SKELETON, latest_ms)
    batch, letters = _parse(screened.usable, FileKind.SAMPLE_SKELETON, _SAMPLE_LAYOUT)
    event_ms = np.fromiter((record.timestamp for record in screened.usable), np.int64, len(screened.usable))
    reasons = batch.column("reason")
    if reasons.null_count < len(reasons):
        event_ms = event_ms[~_valid(reasons)]
    good = _good(batch)
    item, category = good.column("item_id"), good.column("category_id")
    return ParsedSamples(event_ms, _numbers(good.column("click")), _numbers(good.column("conversion")),
                         good.column("common_feature_index").to_pylist(), _numbers(item), _valid(item),
                         _numbers(category), _valid(category), [*screened.dead_letters, *letters],
                         screened.produced_at)


def _deltas(prefix: str, ids: Sequence[np.ndarray], event_ms: np.ndarray, click: np.ndarray,
            conversion: np.ndarray) -> Deltas:
    """The increments of one entity kind (keyed by ``ids``, one column per key), per minute."""
    minute = event_ms // MINUTE_MS
    order = np.lexsort((minute, *reversed(ids)))  # by the ids, then the minute
    ids = [column[order] for column in ids]
    minute, event_ms, click, conversion = minute[order], event_ms[order], click[order], conversion[order]
    rows = len(order)
    if not rows:
        return Deltas([], np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 4), np.int64))
    new_entity = np.ones(rows, bool)
    new_entity[1:] = np.any([column[1:] != column[:-1] for column in ids], axis=0)
    new_group = new_entity.copy()
    new_group[1:] |= minute[1:] != minute[:-1]
    entity_starts, group_starts = np.flatnonzero(new_entity), np.flatnonzero(new_group)
    groups = np.stack([minute[group_starts], np.diff(np.append(group_starts, rows)),
                       np.add.reduceat(click, group_starts), np.add.reduceat(conversion, group_starts)], axis=1)
    counts = np.diff(np.append(np.searchsorted(group_starts, entity_starts), len(group_starts)))
    key_ids = zip(*(column[entity_starts].tolist() for column in ids), strict=True)
    return Deltas([prefix + ":".join(map(str, key)) for key in key_ids],
                  np.maximum.reduceat(event_ms, entity_starts), counts, groups)


def aggregate(parsed: ParsedSamples, users: Mapping[str, int | None], entity_prefix: str
              ) -> tuple[Deltas, dict[str, int]]:
    """Per entity key, the batch's counts per minute; and the stream totals the batch adds."""
    found = [users.get(context, _UNKNOWN) for context in parsed.context]
    rows = len(found)
    resolved = np.fromiter((user is not _UNKNOWN for user in found), bool, rows)
    has_user = np.fromiter((type(user) is int for user in found), bool, rows)
    user = np.fromiter((user if type(user) is int else 0 for user in found), np.int64, rows)
    user_prefix, item_prefix, pair_prefix = (f"{entity_prefix}{kind}:" for kind in KINDS.values())
    columns = parsed.event_ms, parsed.click, parsed.conversion
    parts = []
    for prefix, ids, rows_of in ((item_prefix, [parsed.item], parsed.has_item),
                                 (user_prefix, [user], has_user),
                                 (pair_prefix, [user, parsed.category], has_user & parsed.has_category)):
        parts.append(_deltas(prefix, [column[rows_of] for column in ids], *(c[rows_of] for c in columns)))
    totals = {"impressions": rows, "clicks": int(parsed.click.sum()), "conversions": int(parsed.conversion.sum()),
              "unresolved_context": int((~resolved).sum()), "context_without_user": int((resolved & ~has_user).sum())}
    for letter in parsed.dead_letters:
        total = dead_letter_total(FileKind.SAMPLE_SKELETON, letter)
        totals[total] = totals.get(total, 0) + 1
    return Deltas.concat(parts), {name: n for name, n in totals.items() if n}
