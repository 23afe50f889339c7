"""A poll's records become parsed columns and dead letters; no record, whatever it holds, stops it
(no server needed: the records are built here)."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from taobao_assets.source.format import format_common_line, format_entry, format_sample_line, join_entries
from taobao_assets.source.replay import PRODUCED_AT_HEADER
from taobao_assets.source.topics import LINE_HEADER, SOURCE_HEADER
from taobao_assets.streaming.dead_letter import RecordFault
from taobao_assets.streaming.join import _screen_replayed, parse_contexts, parse_samples

SAMPLE = format_sample_line(1, 1, 0, "ctx1", 2, join_entries([format_entry("205", 11, 1.0),
                                                               format_entry("206", 22, 1.0)])).encode()
CONTEXT = format_common_line("ctx1", 1, format_entry("101", 7, 1.0)).encode()
HEADERS = [(SOURCE_HEADER, b"sample_skeleton_train.csv"), (LINE_HEADER, b"12"), (PRODUCED_AT_HEADER, b"1700")]


def record(offset: int, value: bytes | None, headers: list[tuple[str, bytes]] = HEADERS, key: bytes | None = None,
           topic: str = "t.samples") -> ConsumerRecord:
    return ConsumerRecord(topic, 0, offset, 1_000 + offset, 0, key, value, None, 0, len(value or b""), headers)


def test_null_values_and_bad_headers_are_dead_lettered_and_the_rest_is_parsed() -> None:
    records = [
        record(0, SAMPLE),
        record(1, None, key=b"x"),
        record(2, SAMPLE, [(SOURCE_HEADER, b"\xff\xfe"), (LINE_HEADER, b"3")]),
        record(3, SAMPLE, [(SOURCE_HEADER, b"f"), (LINE_HEADER, b"three")]),
        record(4, SAMPLE, [(PRODUCED_AT_HEADER, b"soon")]),
        record(5, SAMPLE, [(LINE_HEADER, None)]),  # type: ignore[list-item]
        record(6, SAMPLE),
    ]
    parsed = parse_samples(records)
    assert parsed.event_ms.tolist() == [1_000, 1_006] and parsed.item.tolist() == [11, 11]
    assert parsed.category.tolist() == [22, 22] and parsed.has_item.all() and parsed.has_category.all()
    assert parsed.produced_at == [1700, 1700]
    letters = {letter.offset: letter for letter in parsed.dead_letters}
    assert sorted(letters) == [1, 2, 3, 4, 5]
    assert letters[1].reason == RecordFault.NULL_VALUE and letters[1].raw == b""
    assert (letters[1].source, letters[1].line) == ("sample_skeleton_train.csv", 12)
    assert {letters[o].reason for o in (2, 3, 4, 5)} == {RecordFault.BAD_HEADER}
    assert "header source is b'\\xff\\xfe', not UTF-8 text" in letters[2].message
    assert "header line is b'three', not an integer" in letters[3].message
    assert "header produced_at is b'soon'" in letters[4].message
    assert letters[3].raw == SAMPLE, "a dead letter keeps the record's value byte for byte"


def test_a_tombstone_deletes_its_context_and_the_last_record_of_an_index_wins() -> None:
    other = format_common_line("ctx2", 1, format_entry("101", 8, 1.0)).encode()
    records = [
        record(0, CONTEXT, key=b"ctx1", topic="t.cf"),
        record(1, None, key=b"ctx1", topic="t.cf"),      # deletes ctx1
        record(2, other, key=b"ctx2", topic="t.cf"),
        record(3, None, key=b"ctx3", topic="t.cf"),      # deletes a context this poll never set
        record(4, None, key=b"ctx2", topic="t.cf"),
        record(5, other, key=b"ctx2", topic="t.cf"),     # set again after its deletion
        record(6, None, key=None, topic="t.cf"),         # a tombstone of no context: a dead letter
        record(7, CONTEXT, [(LINE_HEADER, b"?")], key=b"ctx1", topic="t.cf"),
    ]
    parsed = parse_contexts(records)
    assert parsed.users == {"ctx2": 8}
    assert parsed.deleted == {"ctx1", "ctx3"}
    assert [(letter.offset, letter.reason) for letter in parsed.dead_letters] == [
        (6, RecordFault.NULL_VALUE), (7, RecordFault.BAD_HEADER)]
    assert parsed.totals == {"dead_letter.common_features.null_value": 1,
                             "dead_letter.common_features.bad_header": 1}


def test_a_poll_as_the_replay_writes_it_is_screened_a_column_at_a_time_and_any_other_record_is_not() -> None:
    good = [record(i, SAMPLE) for i in range(5)]
    fast = _screen_replayed(good, latest_ms=2_000)
    assert fast is not None and fast.usable == good and fast.produced_at == [1700] * 5 and not fast.dead_letters
    for odd in (record(9, None), record(9, SAMPLE, HEADERS[:2]), record(9, SAMPLE, HEADERS[::-1]),
                record(9, SAMPLE, [HEADERS[0], (LINE_HEADER, b"x"), HEADERS[2]]),
                record(9, SAMPLE, [(SOURCE_HEADER, b"\xff"), *HEADERS[1:]]),
                record(9, SAMPLE, [*HEADERS[:2], (PRODUCED_AT_HEADER, None)]),  # type: ignore[list-item]
                record(3_000, SAMPLE)):  # its event time is after latest_ms
        assert _screen_replayed([*good, odd], latest_ms=2_000) is None, odd
    # Such a poll goes record by record: the same good records, and a dead letter for the odd one.
    parsed = parse_samples([*good, record(9, SAMPLE, [HEADERS[0], (LINE_HEADER, b"x"), HEADERS[2]])])
    assert parsed.event_ms.tolist() == [1_000 + i for i in range(5)] and len(parsed.dead_letters) == 1
