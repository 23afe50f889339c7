"""A deterministic fuzz corpus of raw lines: good lines of both kinds, mutated the ways real files
and real transports break them (cuts, separator swaps, bad bytes, huge or signed ids, non-finite
values, empty and repeated fields, very long lines)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence

from taobao_assets.source.format import (
    COLUMN_SEP,
    ENTRY_SEP,
    FIELD_SEP,
    FIELDS,
    HISTORY_FIELDS,
    VALUE_SEP,
    FileKind,
    format_common_line,
    format_entry,
    format_sample_line,
    join_entries,
)

SEPARATORS = [ENTRY_SEP, FIELD_SEP, VALUE_SEP, COLUMN_SEP]
IDS = [b"0", b"7", b"-5", b"-", b"", b"1a", b"00012", b"9223372036854775807", b"9223372036854775808",
       b"18446744073709551616", b"1" * 30, b"0" * 25 + b"1", b"\xff", b"+3", b" 4"]
VALUES = [b"1.0", b"0.693147", b"nan", b"inf", b"-inf", b"-1.5", b"1e400", b"-1e400", b"1e-400", b"",
          b"1.0.0", b"+.5", b"5.", b".5e3", b"1_0", b"1e", b"e5", b".", b"+", b"-", b" 1", b"1E+2",
          b"0x10", b"12345678901234567890.5", b"1e-5", b"NaN", b"--1", b"1e5.5"]
COUNTS = [b"0", b"-1", b"", b"x", b"007", b"99999999999999999999999", b"9223372036854775808", b"00"]
LABELS = [b"0", b"1", b"2", b"", b"01", b"-1", b"1.0"]
KEYS = [b"", b"a b", b"\xc3\xa9t\xc3\xa9", b"x" * 100, b"k-_9", b"'q'", b'"', b"\\"]
BYTES = [b"\x80", b"\xff", b"\xc3", b"\xe4\xb8", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"\xc3\xa9", b"\x00",
         b"\t", b"\r", b"'", b'"']


def _sample(rng: random.Random) -> bytes:
    fields = [f for f, spec in FIELDS.items() if spec.kind is FileKind.SAMPLE_SKELETON]
    entries = [format_entry(f, rng.randrange(1, 10**rng.randrange(1, 12)), rng.choice([1.0, 0.693147, 2.484907]))
               for f in rng.sample(fields, rng.randrange(0, len(fields) + 1))]
    click = rng.random() < 0.3
    line = format_sample_line(rng.randrange(10**9), int(click), int(click and rng.random() < 0.3),
                              f"{rng.getrandbits(64):016x}", len(entries), join_entries(entries))
    return line.encode()


def _common(rng: random.Random, entries_wanted: int) -> bytes:
    profile = [f for f, spec in FIELDS.items()
               if spec.kind is FileKind.COMMON_FEATURES and f not in HISTORY_FIELDS]
    entries = [format_entry(f, rng.randrange(1, 10**6), 1.0) for f in rng.sample(profile, rng.randrange(len(profile)))]
    while len(entries) < entries_wanted:
        field = rng.choice(HISTORY_FIELDS)
        entries += [format_entry(field, rng.randrange(1, 10**7), float(rng.randrange(1, 40)))
                    for _ in range(rng.randrange(1, 60))]
    return format_common_line(f"{rng.getrandbits(64):016x}", len(entries), join_entries(entries)).encode()


_TOKEN = re.compile(b"[^" + re.escape(b"".join(SEPARATORS)) + b"\n]+")


def _tokens(line: bytes) -> list[tuple[int, int]]:
    """(start, end) of every token between separators (columns, fields, ids, values)."""
    return [match.span() for match in _TOKEN.finditer(line)] or [(0, 0)]


def _replace_token(rng: random.Random, line: bytes, choices: Sequence[bytes]) -> bytes:
    start, end = rng.choice(_tokens(line))
    return line[:start] + rng.choice(choices) + line[end:]


def _replace_column(rng: random.Random, line: bytes, column: int, choices: Sequence[bytes]) -> bytes:
    columns = line.split(COLUMN_SEP)
    if column < len(columns) - 1:
        columns[column] = rng.choice(choices)
    return COLUMN_SEP.join(columns)


def _at(rng: random.Random, line: bytes) -> int:
    return rng.randrange(len(line) + 1)


Mutation = Callable[[random.Random, bytes], bytes]
MUTATIONS: list[Mutation] = [
    lambda rng, line: line[: _at(rng, line)],
    lambda rng, line: line.rstrip(b"\n"),
    lambda rng, line: line.rstrip(b"\n") + rng.choice([b"\r\n", b"\r\r\n", b"\n\n", b"\r"]),
    lambda rng, line: (lambda i: line[:i] + rng.choice(SEPARATORS) + line[i + 1:])(_at(rng, line)),
    lambda rng, line: (lambda i: line[:i] + rng.choice(SEPARATORS) + line[i:])(_at(rng, line)),
    lambda rng, line: (lambda i: line[:i] + line[i + 1:])(_at(rng, line)),
    lambda rng, line: (lambda i: line[:i] + rng.choice(BYTES) + line[i:])(_at(rng, line)),
    lambda rng, line: (lambda i: line[:i] + bytes([rng.randrange(256)]) + line[i + 1:])(_at(rng, line)),
    lambda rng, line: _replace_token(rng, line, IDS),
    lambda rng, line: _replace_token(rng, line, VALUES),
    lambda rng, line: _replace_token(rng, line, [f.encode() for f in FIELDS] + [b"999", b"", b"205x"]),
    lambda rng, line: _replace_token(rng, line, [b""]),
    lambda rng, line: _replace_column(rng, line, rng.randrange(6), COUNTS + LABELS + KEYS),
    lambda rng, line: _replace_column(rng, line, 1, COUNTS),
    lambda rng, line: _replace_column(rng, line, 4, COUNTS),
    lambda rng, line: _replace_column(rng, line, 0, KEYS + IDS),
    lambda rng, line: _repeat_entry(rng, line),
    lambda rng, line: line.replace(b",1,0,", b",0,1,", 1),
]


def _repeat_entry(rng: random.Random, line: bytes) -> bytes:
    """Repeat one entry; half the time also raise num_features so the count still matches."""
    head, _, entries = line.rstrip(b"\n").rpartition(COLUMN_SEP)
    items = entries.split(ENTRY_SEP)
    items.insert(rng.randrange(len(items) + 1), rng.choice(items))
    columns = head.split(COLUMN_SEP)
    if rng.random() < 0.5 and columns[-1].isdigit():
        columns[-1] = str(int(columns[-1]) + 1).encode()
    return COLUMN_SEP.join([*columns, ENTRY_SEP.join(items)]) + b"\n"


def corpus(seed_lines: Sequence[bytes], size: int, seed: int = 2026) -> Iterator[bytes]:
    """``size`` lines: the seed lines, generated good lines (1 % of them ~2,700-entry common rows),
    and each of those mutated one to three times."""
    rng = random.Random(seed)
    for produced in range(size):
        choice = rng.random()
        if choice < 0.3 and seed_lines:
            line = rng.choice(seed_lines)
        elif choice < 0.6:
            line = _sample(rng)
        else:
            line = _common(rng, 2_700 if rng.random() < 0.01 else rng.randrange(0, 40))
        if produced % 10:
            for _ in range(rng.randrange(1, 4)):
                line = rng.choice(MUTATIONS)(rng, line)
        yield line
