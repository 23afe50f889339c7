"""From Kafka records to what the state store applies: parse, join with the user context, aggregate.

Parsing is the one parser of the batch path (:func:`taobao_assets.source.parser.parse_line`),
given the file and line the replay put in the record headers, so a rejected record carries the
same reason and location as in silver's quarantine. The join is by ``common_feature_index``
against the context map of the state store; a sample whose context is unknown (or has no user id)
still counts for its item, and is counted as such, as gold's left join does.

A batch becomes one :class:`~taobao_assets.streaming.state.EntityDelta` per entity it touches:
the user, the item (field 205) and the user x item category (field 206), each with the batch's
impressions, clicks and conversions per minute of event time (the Kafka record timestamp).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka.structs import ConsumerRecord

from taobao_assets.source.format import FileKind
from taobao_assets.source.parser import CommonFeaturesRecord, QuarantineRecord, SampleRecord, parse_line
from taobao_assets.source.replay import PRODUCED_AT_HEADER
from taobao_assets.source.topics import LINE_HEADER, SOURCE_HEADER
from taobao_assets.streaming.dead_letter import DeadLetter
from taobao_assets.streaming.state import EntityDelta

USER_FIELD = "101"
ITEM_FIELD = "205"
CATEGORY_FIELD = "206"
#: Entity kinds of the state store, by the key columns of the real-time table they feed.
KINDS = {("user_id",): "u", ("item_id",): "i", ("user_id", "category_id"): "uc"}
MINUTE_MS = 60_000


def _where(record: ConsumerRecord) -> tuple[str, int, int | None]:
    """File, line and produce time from the record headers (absent: empty file, line 0, no time).

    Freshness is measured on the records that carry a produce time: the replay sets it on every
    record; another producer may leave it out.
    """
    source, line, produced = "", 0, None
    for name, value in record.headers:
        if name == SOURCE_HEADER:
            source = value.decode()
        elif name == LINE_HEADER:
            line = int(value)
        elif name == PRODUCED_AT_HEADER:
            produced = int(value)
    return source, line, produced


def dead_letter_total(kind: FileKind, letter: DeadLetter) -> str:
    return f"dead_letter.{kind.value}.{letter.reason.value}"


@dataclass
class ParsedContexts:
    """Common-features records of a batch: the user of each context (last row wins) and the rejects."""

    users: dict[str, int | None] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)


def parse_contexts(records: Iterable[ConsumerRecord]) -> ParsedContexts:
    parsed = ParsedContexts()
    for record in records:
        source, line, _ = _where(record)
        row = parse_line(record.value, FileKind.COMMON_FEATURES, source, line)
        if isinstance(row, CommonFeaturesRecord):
            parsed.users[row.common_feature_index] = row.feature_id(USER_FIELD)
        elif isinstance(row, QuarantineRecord):
            letter = DeadLetter.of(record, row)
            parsed.dead_letters.append(letter)
            total = dead_letter_total(FileKind.COMMON_FEATURES, letter)
            parsed.totals[total] = parsed.totals.get(total, 0) + 1
    return parsed


@dataclass
class ParsedSamples:
    """A batch's sample records: ``(event ms, record)`` of the good ones, the rejects, the produce times."""

    samples: list[tuple[int, SampleRecord]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    produced_at: list[int] = field(default_factory=list)

    @property
    def context_indexes(self) -> list[str]:
        return list({record.common_feature_index for _, record in self.samples})


def parse_samples(records: Iterable[ConsumerRecord]) -> ParsedSamples:
    parsed = ParsedSamples()
    samples, letters, produced_at = parsed.samples, parsed.dead_letters, parsed.produced_at
    for record in records:
        source, line, produced = _where(record)
        if produced is not None:
            produced_at.append(produced)
        row = parse_line(record.value, FileKind.SAMPLE_SKELETON, source, line)
        if isinstance(row, SampleRecord):
            samples.append((record.timestamp, row))
        elif isinstance(row, QuarantineRecord):
            letters.append(DeadLetter.of(record, row))
    return parsed


def aggregate(parsed: ParsedSamples, users: Mapping[str, int | None], entity_prefix: str
              ) -> tuple[dict[str, EntityDelta], dict[str, int]]:
    """Per entity key, the batch's counts per minute; and the stream totals the batch adds."""
    deltas: dict[str, EntityDelta] = {}

    def count(key: str, event_ms: int, minute: int, click: int, conversion: int) -> None:
        delta = deltas.get(key)
        if delta is None:
            deltas[key] = EntityDelta(event_ms, {minute: [1, click, conversion]})
            return
        if event_ms > delta.latest_ms:
            delta.latest_ms = event_ms
        counts = delta.minutes.get(minute)
        if counts is None:
            delta.minutes[minute] = [1, click, conversion]
        else:
            counts[0] += 1
            counts[1] += click
            counts[2] += conversion

    user_prefix, item_prefix, pair_prefix = (f"{entity_prefix}{kind}:" for kind in KINDS.values())
    clicks = conversions = unresolved = without_user = 0
    for event_ms, record in parsed.samples:
        minute = event_ms // MINUTE_MS
        click, conversion = record.click, record.conversion
        clicks += click
        conversions += conversion
        features = record.features
        item = features.get(ITEM_FIELD)
        if item is not None:
            count(f"{item_prefix}{item[0]}", event_ms, minute, click, conversion)
        user = users.get(record.common_feature_index, -1)
        if user == -1:
            unresolved += 1
        elif user is None:
            without_user += 1
        else:
            count(f"{user_prefix}{user}", event_ms, minute, click, conversion)
            category = features.get(CATEGORY_FIELD)
            if category is not None:
                count(f"{pair_prefix}{user}:{category[0]}", event_ms, minute, click, conversion)
    totals = {"impressions": len(parsed.samples), "clicks": clicks, "conversions": conversions,
              "unresolved_context": unresolved, "context_without_user": without_user}
    for letter in parsed.dead_letters:
        total = dead_letter_total(FileKind.SAMPLE_SKELETON, letter)
        totals[total] = totals.get(total, 0) + 1
    return deltas, {name: n for name, n in totals.items() if n}
