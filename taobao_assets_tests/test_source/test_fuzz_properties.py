"""Property-based fuzz tests (Hypothesis) of the raw format layer: the parser never raises, never
drops or invents a line, and gives back exactly what a writer of the format put in.

Why, next to the fixed corpus of ``test_parser_core.py``: that corpus replays one seeded list of
mutations; Hypothesis searches (grammar-built lines whose every token may be good or bad, bytes of
any value, files with corrupted lines) and shrinks a failure to a minimal input. Every test is
derandomized and keeps no example database, so CI runs the same cases on every run of the same
code; a failure prints its minimal input. (Hypothesis also draws constants it finds in the
project's imported modules, so property b's cases in a run of this file alone can differ from
those in a run of the whole suite; a and c draw only fixed-size bytes, and do not.)

Cost. A Hypothesis example costs about half a millisecond before the test does anything, and a
line built from a few dozen draws a few milliseconds, so 100,000 examples of one line each would
take minutes on the CI machine. Hence:

- property a draws 16 lines per example, and each line is one drawn byte string from which
  :class:`Choices` reads its choices (the FuzzedDataProvider way): far fewer draws, and Hypothesis
  still shrinks the bytes (towards zero, i.e. the first option of every choice), so a failure
  shrinks to a short, simple line, which the assertion message names;
- property c draws its files the same way, one byte string per line (shrunk line by line);
- property b, the format's rules written as strategies, draws every id, field and value.

Cases per run. A case of a is a *line* (16 per Hypothesis example, so counted per line); a case of
b is a line, of c a file (one example each):

==========================================================  ========  ========
test                                                        examples     cases
==========================================================  ========  ========
a. test_any_line_is_one_record_on_every_path                   6,000    96,000
b. test_generated_sample_lines_round_trip                      2,000     2,000
b. test_generated_common_lines_round_trip                      2,000     2,000
c. test_a_corrupted_file_yields_every_line_number_once         4,000     4,000
total                                                          14,000   104,000
==========================================================  ========  ========

Not counted above: the files of c hold 29,095 lines (1-16 each), of which 19,349 are untouched
valid lines checked value for value (a round trip, like b's); and
``test_the_line_generator_reaches_every_outcome`` draws 2 x 2,000 lines of a's generator to check
that it reaches good records and every reason.

Time: about 75 s on the 2-core CI machine while it is busy. The four property tests are marked
``slow``, as the project marks its long tests that need no server (``make test-fast`` promises
the no-server tests in well under a minute and deselects ``slow``); ``make test`` (plain
``pytest``, what CI runs) runs them. The generator check (about 1 s) stays in the fast tier.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from taobao_assets.source.format import (
    COLUMN_SEP,
    ENTRY_SEP,
    FIELD_SEP,
    FIELDS,
    FIELDS_BY_KIND,
    HISTORY_FIELDS,
    KEY_CHARS,
    MAX_ID,
    REASONS_BY_KIND,
    VALUE_CHARS,
    VALUE_SEP,
    FileKind,
    format_common_line,
    format_entry,
    format_sample_line,
    format_value,
    join_entries,
)
from taobao_assets.source.parser import (
    BatchColumn,
    CommonFeaturesRecord,
    Entry,
    QuarantineRecord,
    Record,
    Repeat,
    SampleRecord,
    parse_batch,
    parse_file,
    parse_line,
    parse_lines,
    record_ends,
)
from taobao_assets_tests import parser_reference
from taobao_assets_tests.test_source.fuzz import BYTES, COUNTS, IDS, KEYS, LABELS, VALUES
from taobao_assets_tests.test_source.test_parser_core import _expected_row, _layout

LINE_GROUP_EXAMPLES = 6_000  # of 16 lines each: 96,000 lines
ROUND_TRIP_EXAMPLES = 2_000  # per file kind
FILE_EXAMPLES = 4_000
OUTCOME_EXAMPLES = 125  # per file kind, of 16 lines each; a check of the generator, not counted

#: Deterministic in CI: a seed per test and no example database (a failure found once is not
#: replayed first on the next run: the same seed finds it again); no deadline (the machine may be
#: busy; speed is the benchmarks' business).
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False)

T = TypeVar("T")
S, C = FileKind.SAMPLE_SKELETON, FileKind.COMMON_FEATURES
KINDS = list(FileKind)
SEPARATORS = [COLUMN_SEP, ENTRY_SEP, FIELD_SEP, VALUE_SEP]
FIELD_IDS = {kind: sorted(FIELDS_BY_KIND[kind]) for kind in FileKind}
#: Every column parse_batch can give, per kind: the batch path is compared row for row.
LAYOUTS: dict[FileKind, list[BatchColumn]] = {kind: _layout(kind) for kind in FileKind}


# --- valid lines, as the format's writers write them -------------------------------------------


@dataclass(frozen=True)
class Written:
    """A line as a writer of the format produced it, and the record it must parse to."""

    raw: bytes
    record: SampleRecord | CommonFeaturesRecord


def _first_and_repeats(entries: Sequence[tuple[str, int, float]]) -> tuple[dict[str, Entry], list[Repeat]]:
    """The format's meaning of a single-valued field given more than once: its first entry is the
    value, every later one (in line order) a repeat."""
    features: dict[str, Entry] = {}
    repeats: list[Repeat] = []
    for field_id, feature_id, value in entries:
        if field_id in features:
            repeats.append((field_id, feature_id, value))
        else:
            features[field_id] = (feature_id, value)
    return features, repeats


def _as_written(entries: Sequence[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    """Entries with their values as the file holds them (format_value rounds to 6 decimals)."""
    return [(f, i, float(format_value(v))) for f, i, v in entries]


def write_sample(sample_id: int, labels: tuple[int, int], key: str, entries: Sequence[tuple[str, int, float]],
                 terminator: str) -> Written:
    """A sample_skeleton line by :func:`format_sample_line`, and its record."""
    entries = _as_written(entries)
    line = format_sample_line(sample_id, *labels, key, len(entries), join_entries([format_entry(*e) for e in entries]))
    features, repeats = _first_and_repeats(entries)
    record = SampleRecord("", 0, sample_id, *labels, key, len(entries), features, repeats)
    return Written((line[:-1] + terminator).encode(), record)


def write_common(key: str, entries: Sequence[tuple[str, int, float]], terminator: str) -> Written:
    """A common_features line by :func:`format_common_line`, and its record: profile fields (the
    first entry of each, later ones repeats) and every history entry in line order (a history
    field's entries need not be contiguous)."""
    entries = _as_written(entries)
    line = format_common_line(key, len(entries), join_entries([format_entry(*e) for e in entries]))
    features, repeats = _first_and_repeats([e for e in entries if e[0] not in HISTORY_FIELDS])
    histories = {f: [(i, v) for field_id, i, v in entries if field_id == f] for f in HISTORY_FIELDS}
    record = CommonFeaturesRecord("", 0, key, len(entries), features, histories, repeats)
    return Written((line[:-1] + terminator).encode(), record)


LABEL_PAIRS = [(0, 0), (1, 0), (1, 1)]  # conversion <= click
TERMINATORS = ["\n", "\r\n", ""]  # a complete final line may lack its newline
MOSTLY_NEWLINE = ["\n"] * 5 + ["\r\n"] * 2 + [""]

# --- property b's strategies: every id, field and value drawn by Hypothesis --------------------

ids = st.integers(0, MAX_ID)
keys = st.text(alphabet=KEY_CHARS.decode(), min_size=1, max_size=20)
#: Any finite float (Hypothesis favours 0, integers, huge, tiny and subnormal ones), so the writer
#: gives plain (``0.693147``) and exponent (``1e-05``, ``1e+16``) texts.
values = st.floats(allow_nan=False, allow_infinity=False)


def entries_of(kind: FileKind, max_size: int) -> st.SearchStrategy[list[tuple[str, int, float]]]:
    return st.lists(st.tuples(st.sampled_from(FIELD_IDS[kind]), ids, values), max_size=max_size)


sample_lines = st.builds(write_sample, ids, st.sampled_from(LABEL_PAIRS), keys, entries_of(S, 12),
                         st.sampled_from(TERMINATORS))
common_lines = st.builds(write_common, keys, entries_of(C, 24), st.sampled_from(TERMINATORS))

# --- properties a and c: choices read from drawn bytes ------------------------------------------


class Choices:
    """Choices read from a byte string Hypothesis drew: each takes the next bytes, and once they
    are used up every choice is 0 (the first option, the smallest number). Shrinking the bytes
    towards zero therefore shrinks a line towards a short, simple one."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def below(self, n: int) -> int:
        """A number in ``[0, n)``, from as many bytes as ``n`` needs."""
        at = self.at
        if n <= 256:  # one byte: most choices, so the quick way
            self.at = at + 1
            return self.data[at] % n if at < len(self.data) else 0
        width = ((n - 1).bit_length() + 7) // 8
        self.at = at + width
        return int.from_bytes(self.data[at:at + width], "big") % n

    def spell(self, most: int, table: bytes) -> bytes:
        """Up to ``most`` bytes, each mapped through ``table`` (see :func:`_spelling`)."""
        return self.take(most).translate(table)

    def pick(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def take(self, most: int) -> bytes:
        """Up to ``most`` raw bytes, any values."""
        n = self.below(most + 1)
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def id(self) -> int:
        """A valid id: small, 32-bit, any 63-bit, or at the top of the range."""
        how = self.below(4)
        if how == 0:
            return self.below(1_000)
        if how == 1:
            return self.below(2**32)
        if how == 2:
            return self.below(MAX_ID + 1)
        return MAX_ID - self.below(3)

    def double(self) -> float:
        """Any double, from 8 bytes (NaN and infinities included)."""
        value: float = struct.unpack(">d", self.take(8).rjust(8, b"\0"))[0]
        return value

    def value(self) -> float:
        """A finite value: the files' typical ones, counts, ``ln(1 + count)``, or any double."""
        how = self.below(4)
        if how == 0:
            return self.pick([1.0, 0.693147, 2.484907, 0.0])
        if how == 1:
            return float(self.below(10**6))
        if how == 2:
            return math.log1p(self.below(10**4))
        value = self.double()
        return value if math.isfinite(value) else -0.0

    def key(self) -> str:
        """A valid common_feature_index of 1 to 16 key characters."""
        return (self.pick(KEY_CHARS).to_bytes() + self.spell(15, KEY_SPELLING)).decode()


def _spelling(alphabet: bytes) -> bytes:
    """A bytes.translate table that maps every byte to a byte of ``alphabet``."""
    return bytes(alphabet[b % len(alphabet)] for b in range(256))


def written_line(c: Choices, kind: FileKind, terminators: Sequence[str] = TERMINATORS, most: int = 8) -> Written:
    """A valid line of ``kind`` with up to ``most`` entries (twice that for common features), by
    the same writers as property b."""
    fields = FIELD_IDS[kind]
    if kind is S:
        sample_id, labels, key = c.id(), c.pick(LABEL_PAIRS), c.key()
        entries = [(c.pick(fields), c.id(), c.value()) for _ in range(c.below(most + 1))]
        return write_sample(sample_id, labels, key, entries, c.pick(terminators))
    key = c.key()
    entries = [(c.pick(fields), c.id(), c.value()) for _ in range(c.below(2 * most + 1))]
    return write_common(key, entries, c.pick(terminators))


#: Field id tokens: of either kind (three in four lines), unknown, or near misses.
FIELD_TOKENS = [f.encode() for f in FIELDS] * 3 + [b"999", b"", b"205x", b"10", b"109_1", b"109_140", b"2050",
                                                  b"205 ", b"\xd9\xa1"]
GOOD_LABELS = [b"0", b"1"]
#: Bytes that matter to the format, for corruptions and lines that keep its shape.
FORMAT_BYTES = b",\x01\x02\x03\n\r0123456789.-+eE_ ax\x00\x7f"
KEY_SPELLING, VALUE_SPELLING, FORMAT_SPELLING = map(_spelling, (KEY_CHARS, VALUE_CHARS, FORMAT_BYTES))


def id_token(c: Choices) -> bytes:
    """Id-like, valid five times in eight: or negative, zero-padded (past the 19 digits of the
    core's plain loop), beyond 64 bits, or one of the fixed corpus's bad ids."""
    how = c.below(8)
    if how < 5:
        return str(c.id()).encode()
    if how == 5:
        return b"-" + str(c.id()).encode()
    if how == 6:
        return b"0" * c.below(25) + str(c.id() if c.below(2) else MAX_ID + 1 + c.below(2**66)).encode()
    return c.pick(IDS)


def value_token(c: Choices) -> bytes:
    """Value-like, as written five times in eight: or any mix of the value characters (``.5e3``,
    ``1.``, ``+``), any double as Python prints it (``inf``, ``nan``, ``1e+300``), or one of the
    fixed corpus's bad values."""
    how = c.below(8)
    if how < 5:
        return format_value(c.value()).encode()
    if how == 5:
        return c.spell(14, VALUE_SPELLING)
    if how == 6:
        return repr(c.double()).encode()
    return c.pick(VALUES)


def key_token(c: Choices) -> bytes:
    how = c.below(16)
    if how < 13:
        return c.key().encode()
    return c.pick(KEYS) if how < 15 else c.take(8)


def any_token(c: Choices) -> bytes:
    how = c.below(6)
    if how == 0:
        return id_token(c)
    if how == 1:
        return value_token(c)
    if how == 2:
        return key_token(c)
    if how == 3:
        return c.pick([*LABELS, *FIELD_TOKENS, *COUNTS])
    if how == 4:
        return c.pick([*BYTES, *SEPARATORS, b"\n", b"\r"])
    return c.take(6)


def grammar_line(c: Choices, kind: FileKind) -> bytes:
    """A line built column by column and entry by entry, each token good or bad (mostly good, so
    that a line often gets deep into the checks; choice 0 is always the good one, so that the
    simplest line is a valid one): reaches every check of the parser, and their order, far more
    often than random bytes do."""
    entries = []
    for _ in range(c.below(7)):
        field, feature, value = c.pick(FIELD_TOKENS), id_token(c), value_token(c)
        seps = (FIELD_SEP, VALUE_SEP) if c.below(8) < 7 else (c.pick([b"", *SEPARATORS]), c.pick([b"", *SEPARATORS]))
        entries.append(field + seps[0] + feature + seps[1] + value)
    count = str(len(entries)).encode() if c.below(4) < 3 else c.pick([*COUNTS, id_token(c)])
    key = key_token(c)
    labels = [c.pick(GOOD_LABELS) if c.below(6) < 5 else c.pick(LABELS) for _ in range(2)]
    head = [id_token(c), *labels, key, count] if kind is S else [key, count]
    if c.below(8) == 7:
        head = [any_token(c) for _ in range(c.below(8))]
    entry_sep = ENTRY_SEP if c.below(8) < 7 else c.pick([b"", *SEPARATORS])
    terminator = b"\n" if c.below(8) < 7 else c.pick([b"\r\n", b"", b"\r", b"\n\n", b"\r\r\n"])
    return COLUMN_SEP.join([*head, entry_sep.join(entries)]) + terminator


_TOKEN = re.compile(b"[^" + re.escape(b"".join(SEPARATORS)) + b"\n]+")


def corrupt(c: Choices, line: bytes) -> bytes:
    """``line`` with one corruption: a byte flipped, a cut (terminator kept or not), a separator
    swapped for another, bytes inserted (newlines included) or deleted, a token replaced by a bad
    one, the terminator changed, the second and third columns (a sample's labels) replaced."""
    at = c.below(len(line) + 1)
    how = c.below(9)
    if how == 0 and at < len(line):
        flipped = c.below(256) if c.below(2) else c.pick(FORMAT_BYTES)
        return line[:at] + bytes([flipped]) + line[at + 1:]
    if how == 1:
        return line[:at]
    if how == 2:
        body = line.rstrip(b"\r\n")
        return body[:at] + line[len(body):]
    if how == 3:
        seps = [i for i, b in enumerate(line) if b in b",\x01\x02\x03"]
        if seps:
            i = c.pick(seps)
            return line[:i] + c.pick(SEPARATORS) + line[i + 1:]
    if how == 4:
        inserted = (c.spell(3, FORMAT_SPELLING) or b"\n") if c.below(2) else c.pick(BYTES)
        return line[:at] + inserted + line[at:]
    if how == 5:
        return line[:at] + line[at + 1 + c.below(8):]
    if how == 6:
        spans = [m.span() for m in _TOKEN.finditer(line)]
        if spans:
            start, end = c.pick(spans)
            return line[:start] + any_token(c) + line[end:]
    if how == 7:
        return line.rstrip(b"\r\n") + c.pick([b"", b"\n", b"\r\n", b"\r", b"\n\n"])
    if how == 8:
        columns = line.split(COLUMN_SEP)
        if len(columns) > 3:
            columns[1:3] = [b"0", b"1"] if c.below(2) else [c.pick(LABELS), c.pick(LABELS)]
            return COLUMN_SEP.join(columns)
    return line


def decode_line(data: bytes) -> bytes:
    """A line from the bytes: a grammar-built line (7 in 16), a valid line of either kind (so
    fields in the wrong file too) corrupted once or twice (7 in 16), format bytes in any order, or
    any bytes at all (up to 150)."""
    c = Choices(data)
    how = c.below(16)
    if how < 7:
        return grammar_line(c, c.pick(KINDS))
    if how < 14:
        line = written_line(c, c.pick(KINDS), MOSTLY_NEWLINE).raw
        for _ in range(1 + (c.below(4) == 0)):
            line = corrupt(c, line)
        return line
    if how == 14:
        return c.spell(150, FORMAT_SPELLING)
    return c.take(150)


LINES_PER_EXAMPLE = 16
#: Property a's examples: a file kind and 16 lines, each decoded from 160 drawn bytes (a line
#: reads 75 on average).
line_groups = st.tuples(
    st.sampled_from(KINDS),
    st.lists(st.binary(min_size=160, max_size=160).map(decode_line),
             min_size=LINES_PER_EXAMPLE, max_size=LINES_PER_EXAMPLE),
)

# --- the properties ------------------------------------------------------------------------------


def _assert_one_record(record: Record, kind: FileKind, raw: bytes, line_number: int) -> None:
    """A record of ``kind`` for the line, or its quarantine with a reason of ``kind``, raw kept."""
    assert record.line_number == line_number
    if isinstance(record, QuarantineRecord):
        assert (record.kind, record.raw) == (kind, raw)
        assert record.reason in REASONS_BY_KIND[kind] and record.message
    else:
        assert isinstance(record, SampleRecord if kind is S else CommonFeaturesRecord), record


def _batch_row(kind: FileKind, layout: list[BatchColumn], raw: bytes) -> dict[str, object]:
    """The line as one Kafka record through the batch path (as silver and streaming parse it)."""
    batch = parse_batch(kind, layout, raw, np.array([len(raw)], np.int64))
    assert batch.num_rows == 1
    return batch.to_pylist()[0]


@pytest.mark.slow
@settings(FUZZ, max_examples=LINE_GROUP_EXAMPLES)
@given(line_groups)
def test_any_line_is_one_record_on_every_path(group: tuple[FileKind, list[bytes]]):
    """Property a: any bytes as a line of either kind are exactly one record, never an exception;
    the per-line path, the streamed path, the batch path (the lines as Kafka records, cut at their
    ends, as silver and streaming parse them) and the Python reference agree on each line: good or
    quarantined, and the same values, reason and message."""
    kind, lines = group
    records = list(parse_lines(lines, kind, "f.csv"))
    assert len(records) == len(lines)
    layout = LAYOUTS[kind]
    rows = parse_batch(kind, layout, b"".join(lines), record_ends(np.fromiter(map(len, lines), np.int64))).to_pylist()
    assert len(rows) == len(lines)
    for number, (raw, record, row) in enumerate(zip(lines, records, rows, strict=True), 1):
        _assert_one_record(record, kind, raw, number)
        assert parse_line(raw, kind, "f.csv", number) == record, raw
        assert parser_reference.parse_line(raw, kind, "f.csv", number) == record, raw
        assert row == _expected_row(record, raw, layout), raw


def _assert_round_trip(written: Written, kind: FileKind) -> None:
    note(f"line={written.raw!r}")
    record = parse_line(written.raw, kind)
    assert not isinstance(record, QuarantineRecord), record
    assert record == written.record
    layout = LAYOUTS[kind]
    assert _batch_row(kind, layout, written.raw) == _expected_row(written.record, written.raw, layout)


@pytest.mark.slow
@settings(FUZZ, max_examples=ROUND_TRIP_EXAMPLES)
@given(sample_lines)
def test_generated_sample_lines_round_trip(written: Written):
    """Property b: a sample line written by the format's writers parses good, to exactly the id,
    labels, key and entries written (a field's first entry, later ones as repeats), on the
    per-line and the batch path."""
    _assert_round_trip(written, S)


@pytest.mark.slow
@settings(FUZZ, max_examples=ROUND_TRIP_EXAMPLES)
@given(common_lines)
def test_generated_common_lines_round_trip(written: Written):
    """Property b: a common_features line written by the format's writers parses good, to exactly
    the key, the profile entries (and repeats) and every history entry in line order."""
    _assert_round_trip(written, C)


def decode_file(chunks: list[bytes]) -> tuple[FileKind, list[Written], list[bytes]]:
    """A file kind, one valid line per chunk (each ending in a newline, but perhaps the last), and
    the lines as written to the file: about one in three corrupted one to three times."""
    kind, cut_last = KINDS[chunks[0][-1] % 2], chunks[0][-2] % 2  # two bytes no line reads
    written, lines = [], []
    for chunk in chunks:
        c = Choices(chunk[1:-2])
        line = written_line(c, kind, ["\n", "\r\n"], most=6)
        written.append(line)
        raw = line.raw
        if chunk[0] % 3 == 2:
            for _ in range(1 + c.below(3)):
                raw = corrupt(c, raw)
        lines.append(raw)
    if cut_last:
        last = written[-1]
        written[-1] = Written(last.raw.rstrip(b"\r\n"), last.record)
        lines[-1] = lines[-1].rstrip(b"\r\n") if lines[-1] == last.raw else lines[-1]
    return kind, written, lines


#: Property c's files: 1-16 lines, each from 96 drawn bytes (a line reads 56 on average); Hypothesis
#: shrinks a file line by line.
corrupted_files = st.lists(st.binary(min_size=96, max_size=96), min_size=1, max_size=16).map(decode_file)


@pytest.mark.slow
@settings(FUZZ, max_examples=FILE_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corrupted_files)
def test_a_corrupted_file_yields_every_line_number_once(
    tmp_path: Path, file: tuple[FileKind, list[Written], list[bytes]]
):
    """Property c: a file with corrupted lines gives one record per line of the file: the good
    line numbers and the quarantined ones together are 1..n, without overlap; a corruption never
    reaches a neighbouring line (every untouched line is good, with the values written); and the
    batch path over the whole file (cut after each newline) agrees row for row. (Property a covers
    the batch path cut at each record's end, as Kafka delivers lines.)

    (``tmp_path`` is one directory for all examples of the test; each example overwrites the file.)
    """
    kind, written, lines = file
    data = b"".join(lines)
    note(f"kind={kind.value} file={data!r}")
    path = tmp_path / kind.file_name("train")
    path.unlink(missing_ok=True)  # a new file: rewriting one in place makes ext4 flush it (~2 ms)
    path.write_bytes(data)
    file_lines: list[bytes] = re.findall(rb"[^\n]*\n|[^\n]+$", data)
    n = len(file_lines)

    records = list(parse_file(path))
    good = {r.line_number for r in records if not isinstance(r, QuarantineRecord)}
    quarantined = {r.line_number for r in records if isinstance(r, QuarantineRecord)}
    assert len(records) == n
    assert not good & quarantined
    assert good | quarantined == set(range(1, n + 1))
    for number, (record, raw) in enumerate(zip(records, file_lines, strict=True), 1):
        _assert_one_record(record, kind, raw, number)
        assert record.source == path.name

    offset = 0
    for original, line in zip(written, lines, strict=True):
        if line == original.raw and (offset == 0 or data[offset - 1] == ord("\n")):
            number = data.count(b"\n", 0, offset) + 1
            assert records[number - 1] == replace(original.record, source=path.name, line_number=number)
        offset += len(line)

    layout = LAYOUTS[kind]
    expected_rows = [_expected_row(r, raw, layout) for r, raw in zip(records, file_lines, strict=True)]
    assert parse_batch(kind, layout, data).to_pylist() == expected_rows


@pytest.mark.parametrize("kind", KINDS)
def test_the_line_generator_reaches_every_outcome(kind: FileKind):
    """Property a's cases are only worth their number if its lines reach good records and every
    reason of a kind: checked on a fixed draw of the same lines."""
    seen: set[str] = set()

    @settings(FUZZ, max_examples=OUTCOME_EXAMPLES)
    @given(line_groups)
    def collect(group: tuple[FileKind, list[bytes]]) -> None:
        for raw in group[1]:
            record = parse_line(raw, kind)
            seen.add(record.reason.value if isinstance(record, QuarantineRecord) else "good")

    collect()
    assert seen == {r.value for r in REASONS_BY_KIND[kind]} | {"good"}
