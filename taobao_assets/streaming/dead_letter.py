"""The dead-letter topic: records the parser rejected, byte-exact, with why and where they came from.

A dead letter's value is the original record value (the raw line, terminator included; empty for a
record without one); its headers say the reason code (the parser's
:class:`~taobao_assets.source.format.Reason`, or a :class:`RecordFault` the parser never saw), the message,
the file and line the replay recorded, and the topic, partition and offset it was read from.

Its key is that origin (``<topic>/<partition>/<offset>``). A run that dies after sending a batch's
dead letters but before committing the batch sends them again when the batch is replayed, so the
topic is compacted: copies of one origin share a key and compaction keeps one. Counting is exact
regardless: the count per reason is part of the state the commit script applies.

Replaying. The headers also keep the record's own key and timestamp, so a letter can be sent back
to the topic it came from as the replay had sent it (``python -m taobao_assets.streaming
dead-letters --replay <reason>``, once its cause is fixed: a larger ``max_future_skew_seconds``, a
corrected line). A replayed letter is then deleted from the dead-letter topic by a tombstone of its
key, so it is not replayed twice (a crash between the two steps excepted); it is applied as a new
record, and rejected again (as a new letter) if its cause is still there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata

from taobao_assets.resources.kafka_client import KafkaClients, TopicSpec
from taobao_assets.source.format import Reason
from taobao_assets.source.parser import QuarantineRecord
from taobao_assets.source.topics import LINE_HEADER, SOURCE_HEADER


class RecordFault(StrEnum):
    """Why a record is dead-lettered before the parser sees it (the parser's reasons are ``Reason``)."""

    #: A sample record without a value (a tombstone; on ``common_features`` one deletes a context).
    NULL_VALUE = "null_value"
    #: A ``source`` header that is not UTF-8, or a ``line`` or ``produced_at`` header that is not an integer.
    BAD_HEADER = "bad_header"
    #: A sample whose event time is further ahead of the clock than ``max_future_skew_seconds``: counted,
    #: it would move its entities' day and hour past every real event, which would then count nowhere.
    FUTURE_TIMESTAMP = "future_timestamp"


REASON_HEADER = "reason"
MESSAGE_HEADER = "message"
ORIGIN_HEADERS = ("topic", "partition", "offset")
#: The record's own key (absent: it had none) and timestamp, to send it back as it was.
KEY_HEADER, TIMESTAMP_HEADER = "record_key", "record_timestamp"


def dead_letter_topic(prefix: str) -> TopicSpec:
    """``<prefix>.dead_letter``: one partition keeps the letters in the order they were found."""
    return TopicSpec(f"{prefix}.dead_letter", partitions=1, config={"cleanup.policy": "compact"})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    raw: bytes
    source: str
    line: int
    reason: Reason | RecordFault
    message: str
    record_key: bytes | None
    timestamp_ms: int

    @classmethod
    def of(cls, record: ConsumerRecord, rejected: QuarantineRecord) -> DeadLetter:
        return cls(record.topic, record.partition, record.offset, rejected.raw, rejected.source,
                   rejected.line_number, rejected.reason, rejected.message, record.key, record.timestamp)

    @classmethod
    def fault(cls, record: ConsumerRecord, reason: RecordFault, message: str, source: str = "", line: int = 0
              ) -> DeadLetter:
        """A record the parser never saw; its value is kept as it was (empty for a null one)."""
        return cls(record.topic, record.partition, record.offset, record.value or b"", source, line, reason,
                   message, record.key, record.timestamp)

    @property
    def key(self) -> bytes:
        return f"{self.topic}/{self.partition}/{self.offset}".encode()

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (REASON_HEADER, self.reason.value.encode()), (MESSAGE_HEADER, self.message.encode()),
            (SOURCE_HEADER, self.source.encode()), (LINE_HEADER, str(self.line).encode()),
            *((name, str(value).encode())
              for name, value in zip(ORIGIN_HEADERS, (self.topic, self.partition, self.offset), strict=True)),
            *([] if self.record_key is None else [(KEY_HEADER, self.record_key)]),
            (TIMESTAMP_HEADER, str(self.timestamp_ms).encode()),
        ]


async def send_dead_letters(producer: AIOKafkaProducer, topic: str, letters: Sequence[DeadLetter]
                            ) -> asyncio.Future[list[RecordMetadata]]:
    """Send ``letters``; the future returned completes once the broker has them all.

    The caller awaits it before committing the batch the letters came from, and can do other work
    (wait for the previous commit) meanwhile.
    """
    pending = [await producer.send(topic, letter.raw, key=letter.key, headers=letter.headers())
               for letter in letters]
    return asyncio.gather(*pending)


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as read back from its topic."""

    key: bytes
    value: bytes
    headers: dict[str, bytes]

    @property
    def reason(self) -> str:
        return self.headers[REASON_HEADER].decode()


async def read_dead_letters(kafka: KafkaClients, topic: str) -> list[StoredLetter]:
    """The letters of ``topic`` not yet replayed (a later tombstone of a key deletes its letter)."""
    letters: dict[bytes, StoredLetter] = {}
    end = (await kafka.end_offsets(topic)).get(0, 0)
    async for record in kafka.read_range(topic, 0, 0, end):
        if record.value is None:
            letters.pop(record.key, None)
        else:
            letters[record.key] = StoredLetter(record.key, record.value, dict(record.headers))
    return list(letters.values())


async def replay_dead_letters(kafka: KafkaClients, topic: str, reason: str) -> int:
    """Send the letters of ``reason`` back to their topics as they were first sent (key, timestamp,
    source and line), then delete them from ``topic``; returns how many. Letters of records without
    a value are left: there is nothing to send back."""
    letters = [letter for letter in await read_dead_letters(kafka, topic)
               if letter.reason == reason and letter.reason != RecordFault.NULL_VALUE]
    async with kafka.producer() as producer:
        sent = [await producer.send(
            letter.headers["topic"].decode(), letter.value, key=letter.headers.get(KEY_HEADER),
            timestamp_ms=int(letter.headers[TIMESTAMP_HEADER]),
            headers=[(SOURCE_HEADER, letter.headers[SOURCE_HEADER]), (LINE_HEADER, letter.headers[LINE_HEADER])])
            for letter in letters]
        await asyncio.gather(*sent)
        # Deleted only once every record is back. At least once: a crash between the two steps sends
        # those letters again at the next replay.
        await asyncio.gather(*[await producer.send(topic, None, key=letter.key) for letter in letters])
    return len(letters)
