from __future__ import annotations

from pathlib import Path

import pytest

from taobao_assets.source.format import FileKind, Reason
from taobao_assets.source.parser import (
    CommonFeaturesRecord,
    QuarantineRecord,
    SampleRecord,
    parse_file,
    parse_line,
    parse_lines,
)
from taobao_assets_tests.test_source.helpers import reencode

SAMPLE = b"7,1,0,abc123,3,205\x0211\x031.0\x01206\x0222\x031.0\x01508\x0233\x030.693147\n"
COMMON = b"abc123,4,101\x025\x031.0\x01121\x026\x031.0\x01109_14\x027\x032.0\x01109_14\x028\x033.0\n"


@pytest.mark.parametrize("name", ["sample_skeleton_example.csv", "common_features_example.csv"])
def test_format_examples_parse_and_reencode_byte_for_byte(examples: Path, name: str):
    raw_lines = (examples / name).read_bytes().splitlines(keepends=True)
    records = list(parse_file(examples / name))
    assert len(records) == len(raw_lines) > 0
    for line_number, (raw, record) in enumerate(zip(raw_lines, records, strict=True), 1):
        assert not isinstance(record, QuarantineRecord), record
        assert record.line_number == line_number and record.source == name
        assert reencode(record) == raw


def test_example_records_are_typed_and_grouped_by_field(examples: Path):
    sample = next(parse_file(examples / "sample_skeleton_example.csv"))
    assert isinstance(sample, SampleRecord)
    assert (sample.sample_id, sample.click, sample.conversion) == (1, 0, 0)
    assert sample.common_feature_index == "e6c7f0a3b21d4c58"
    assert sample.features["205"] == (3611478, 1.0) and sample.feature_id("206") == 4615577
    assert sample.features["853"] == (1957365, 0.693147)
    common = next(parse_file(examples / "common_features_example.csv"))
    assert isinstance(common, CommonFeaturesRecord)
    assert common.feature_id("101") == 169782 and common.features["129"] == (94, 1.0)
    assert common.histories["109_14"] == [(4888781, 2.0), (4256680, 7.0), (314537, 3.0)]
    assert sum(map(len, common.histories.values())) + len(common.features) == common.num_features == 21


def _replace(line: bytes, old: bytes, new: bytes) -> bytes:
    assert old in line
    return line.replace(old, new, 1)


S, C = FileKind.SAMPLE_SKELETON, FileKind.COMMON_FEATURES
MALFORMED = [
    # (kind, line, reason, words the message must contain)
    (S, _replace(SAMPLE, b"abc123,", b""), Reason.WRONG_COLUMN_COUNT, "expected 6"),
    (S, b"\n", Reason.WRONG_COLUMN_COUNT, "found 1"),
    (C, _replace(COMMON, b",", b";"), Reason.WRONG_COLUMN_COUNT, "expected 3"),
    (
        S,
        _replace(SAMPLE, b",3,", b",4,"),
        Reason.NUM_FEATURES_MISMATCH,
        "num_features is 4 but feature_list has 3",
    ),
    (C, _replace(COMMON, b",4,", b",0,"), Reason.NUM_FEATURES_MISMATCH, "num_features is 0"),
    (S, _replace(SAMPLE, b"22\x03", b"22\x02"), Reason.BAD_SEPARATOR, "entry 2 (field b'206')"),
    (S, _replace(SAMPLE, b"\x01206", b"206"), Reason.BAD_SEPARATOR, "entry 1"),
    (C, _replace(COMMON, b"\x01121", b"\x01\x01121"), Reason.BAD_SEPARATOR, "entry 2"),
    (S, _replace(SAMPLE, b"7,", b"7a,"), Reason.NON_NUMERIC_ID, "sample_id"),
    (S, _replace(SAMPLE, b"\x0222\x03", b"\x022x2\x03"), Reason.NON_NUMERIC_ID, "entry 2 (field b'206')"),
    (S, _replace(SAMPLE, b"\x0222\x03", b"\x02\x03"), Reason.NON_NUMERIC_ID, "feature id"),
    (S, _replace(SAMPLE, b"\x0211\x03", b"\x0218446744073709551616\x03"), Reason.NON_NUMERIC_ID, "64 bits"),
    (S, _replace(SAMPLE, b",3,", b",x,"), Reason.NON_NUMERIC_ID, "num_features"),
    (S, _replace(SAMPLE, b"7,", b"-7,"), Reason.NEGATIVE_ID, "sample_id is negative"),
    (C, _replace(COMMON, b"\x027\x03", b"\x02-7\x03"), Reason.NEGATIVE_ID, "field b'109_14'"),
    (S, _replace(SAMPLE, b"abc123", b""), Reason.BAD_COMMON_FEATURE_INDEX, "common_feature_index"),
    (
        C,
        _replace(COMMON, b"abc123", "ab\u00e9".encode()),
        Reason.BAD_COMMON_FEATURE_INDEX,
        "common_feature_index",
    ),
    (S, _replace(SAMPLE, b"7,1,", b"7,2,"), Reason.BAD_LABEL, "click must be 0 or 1"),
    (S, _replace(SAMPLE, b"7,1,0,", b"7,1,1.0,"), Reason.BAD_LABEL, "conversion"),
    (
        S,
        _replace(SAMPLE, b"7,1,0,", b"7,0,1,"),
        Reason.CONVERSION_WITHOUT_CLICK,
        "conversion is 1 but click is 0",
    ),
    (
        S,
        _replace(SAMPLE, b"\x01508", b"\x01999"),
        Reason.UNKNOWN_FIELD_ID,
        "entry 3: unknown field id b'999'",
    ),
    (C, _replace(COMMON, b"101\x02", b"\x02"), Reason.UNKNOWN_FIELD_ID, "entry 1"),
    (
        S,
        _replace(SAMPLE, b"\x01508", b"\x01101"),
        Reason.FIELD_IN_WRONG_FILE,
        "field 101 (user_id) belongs in",
    ),
    (C, _replace(COMMON, b"\x01121", b"\x01205"), Reason.FIELD_IN_WRONG_FILE, "not common_features"),
    (S, _replace(SAMPLE, b"\x030.693147", b"\x030.69x"), Reason.BAD_VALUE, "entry 3 (field b'508')"),
    (S, _replace(SAMPLE, b"\x030.693147", b"\x03nan"), Reason.BAD_VALUE, "b'nan'"),
    (S, _replace(SAMPLE, b"\x030.693147", b"\x031e999"), Reason.BAD_VALUE, "not a float"),
    (C, _replace(COMMON, b"\x033.0", b"\x033.0.0"), Reason.BAD_VALUE, "entry 4 (field b'109_14')"),
    (C, _replace(COMMON, b"\x033.0", b"\x03"), Reason.BAD_VALUE, "entry 4"),
    (S, _replace(SAMPLE, b"abc123", b"abc\xff123"), Reason.BAD_ENCODING, "not ASCII/UTF-8"),
    (C, _replace(COMMON, b"\x032.0", b"\x032.\xe90"), Reason.BAD_ENCODING, "byte"),
]


@pytest.mark.parametrize(("kind", "line", "reason", "words"), MALFORMED)
def test_each_malformed_kind_is_quarantined_with_its_reason(kind, line, reason, words):
    record = parse_line(line, kind, "f.csv", 42)
    assert isinstance(record, QuarantineRecord)
    assert (record.reason, record.source, record.line_number, record.raw) == (reason, "f.csv", 42, line)
    assert words in record.message


def test_quarantine_keeps_file_line_number_and_exact_bytes(tmp_path: Path):
    bad = _replace(SAMPLE, b"7,1,0,", b"7,0,1,")
    path = tmp_path / "sample_skeleton_train.csv"
    path.write_bytes(SAMPLE + bad + SAMPLE.replace(b"\n", b"\r\n") + b"\xfe\n" + SAMPLE)
    records = list(parse_file(path))
    kinds = [type(r).__name__ if not isinstance(r, QuarantineRecord) else r.reason for r in records]
    assert kinds == [
        "SampleRecord",
        Reason.CONVERSION_WITHOUT_CLICK,
        "SampleRecord",
        Reason.BAD_ENCODING,
        "SampleRecord",
    ]
    quarantined = [r for r in records if isinstance(r, QuarantineRecord)]
    assert [(r.line_number, r.raw, r.source) for r in quarantined] == [
        (2, bad, path.name),
        (4, b"\xfe\n", path.name),
    ]


def test_crlf_lines_are_accepted():
    record = parse_line(SAMPLE.replace(b"\n", b"\r\n"), FileKind.SAMPLE_SKELETON)
    assert isinstance(record, SampleRecord) and record.features["508"] == (33, 0.693147)


def test_complete_final_line_without_newline_is_accepted(tmp_path: Path):
    path = tmp_path / "common_features_test.csv"
    path.write_bytes(COMMON + COMMON.rstrip(b"\n"))
    records = list(parse_file(path))
    assert [type(r) for r in records] == [CommonFeaturesRecord, CommonFeaturesRecord]


@pytest.mark.parametrize("cut", [5, 30, len(SAMPLE) - 9])
def test_incomplete_final_line_is_truncated_last_line(tmp_path: Path, cut: int):
    path = tmp_path / "sample_skeleton_test.csv"
    path.write_bytes(SAMPLE + SAMPLE[:cut])
    first, last = parse_file(path)
    assert isinstance(first, SampleRecord)
    assert isinstance(last, QuarantineRecord)
    assert (last.reason, last.line_number, last.raw) == (Reason.TRUNCATED_LAST_LINE, 2, SAMPLE[:cut])
    assert "final line has no newline" in last.message


def test_a_bad_final_line_keeps_its_own_reason_when_it_is_not_structural():
    record = parse_line(_replace(SAMPLE, b"7,1,", b"7,2,").rstrip(b"\n"), FileKind.SAMPLE_SKELETON)
    assert isinstance(record, QuarantineRecord) and record.reason is Reason.BAD_LABEL


def test_repeated_single_valued_field_keeps_first_value_and_the_repeats():
    line = b"9,0,0,k,3,205\x021\x031.0\x01210\x022\x031.0\x01210\x023\x031.0\n"
    record = parse_line(line, FileKind.SAMPLE_SKELETON)
    assert isinstance(record, SampleRecord)
    assert record.features == {"205": (1, 1.0), "210": (2, 1.0)}
    assert record.repeats == [("210", 3, 1.0)]
    assert record.common_feature_index == "k"


def test_history_entries_are_merged_when_not_contiguous_and_profile_repeats_kept():
    entries = [b"109_14\x021\x032.0", b"101\x029\x031.0", b"109_14\x023\x034.0", b"101\x028\x031.0"]
    line = b"k,5," + b"\x01".join([*entries, b"150_14\x025\x031.0"]) + b"\n"
    record = parse_line(line, FileKind.COMMON_FEATURES)
    assert isinstance(record, CommonFeaturesRecord)
    assert record.histories == {
        "109_14": [(1, 2.0), (3, 4.0)],
        "110_14": [],
        "127_14": [],
        "150_14": [(5, 1.0)],
    }
    assert record.features == {"101": (9, 1.0)} and record.repeats == [("101", 8, 1.0)]


def test_empty_feature_list_is_valid_only_with_zero_features():
    assert isinstance(parse_line(b"1,0,0,k,0,\n", FileKind.SAMPLE_SKELETON), SampleRecord)
    bad = parse_line(b"1,0,0,k,2,\n", FileKind.SAMPLE_SKELETON)
    assert isinstance(bad, QuarantineRecord) and bad.reason is Reason.NUM_FEATURES_MISMATCH


def test_streamed_lines_and_files_share_one_code_path(tmp_path: Path):
    lines = [SAMPLE, _replace(SAMPLE, b"\x01508", b"\x01999"), SAMPLE]
    path = tmp_path / "sample_skeleton_train.csv"
    path.write_bytes(b"".join(lines))
    from_file = list(parse_file(path, source="kafka"))
    from_lines = list(parse_lines(lines, FileKind.SAMPLE_SKELETON, "kafka"))
    one_by_one = [parse_line(raw, FileKind.SAMPLE_SKELETON, "kafka", n) for n, raw in enumerate(lines, 1)]
    assert from_file == from_lines == one_by_one
