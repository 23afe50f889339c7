"""The pure-Python reference of the raw parser: what a line means, written for reading.

This was the production parser before the compiled core (``parser_core/``) replaced it; it stays
only as the reference that the differential and fuzz tests hold the core to, record for record
(``test_parser_core.py``). It shares the record classes with :mod:`taobao_assets.source.parser`.

Speed tricks kept from its production days: whole-line bytes operations in C and bounded caches
(value text -> float; sample entry -> typed entry); a rejection is explained by a slow path that
names the first fault in a fixed order (columns, separators, entry count, ids, values, fields).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import groupby
from pathlib import Path

from taobao_assets.source.format import (
    COLUMN_SEP,
    COLUMNS,
    ENTRY_SEP,
    FIELD_SEP,
    FIELDS,
    FIELDS_BY_KIND,
    HISTORY_FIELDS,
    KEY_CHARS,
    MAX_ID,
    STRUCTURAL_REASONS,
    VALUE_CHARS,
    VALUE_SEP,
    FileKind,
    Reason,
)
from taobao_assets.source.parser import (
    CommonFeaturesRecord,
    Entry,
    QuarantineRecord,
    Record,
    Repeat,
    SampleRecord,
)


class _Reject(Exception):
    """Internal: a line breaks the format; turned into a QuarantineRecord by parse_line."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


_SEPARATOR_BYTES = ENTRY_SEP + FIELD_SEP + VALUE_SEP
_NON_SEPARATORS = bytes(b for b in range(256) if bytes([b]) not in _SEPARATOR_BYTES)
_ALL_TO_ENTRY_SEP = bytes.maketrans(FIELD_SEP + VALUE_SEP, ENTRY_SEP * 2)
_ENTRY_PATTERN = FIELD_SEP + VALUE_SEP + ENTRY_SEP
#: Field id token -> field id, per file kind: one lookup converts and checks a field id.
_KEYS: dict[FileKind, dict[bytes, str]] = {
    kind: {fid.encode(): fid for fid in sorted(fids)} for kind, fids in FIELDS_BY_KIND.items()
}
_SAMPLE_KEYS = _KEYS[FileKind.SAMPLE_SKELETON]
_COMMON_KEYS = _KEYS[FileKind.COMMON_FEATURES]
_HISTORY = frozenset(HISTORY_FIELDS)
_SAMPLE_COLUMNS = COLUMNS[FileKind.SAMPLE_SKELETON]
_COMMON_COLUMNS = COLUMNS[FileKind.COMMON_FEATURES]


_LABELS = {b"0": 0, b"1": 1}


def _separator_pattern(entries: int) -> bytes:
    """The only separator sequence a feature list of ``entries`` entries may have."""
    return _ENTRY_PATTERN * (entries - 1) + FIELD_SEP + VALUE_SEP


def _body(raw: bytes) -> bytes:
    body = raw[:-1] if raw.endswith(b"\n") else raw
    if body.endswith(b"\r"):
        body = body[:-1]
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Reject(
                Reason.BAD_ENCODING, f"byte {exc.start} of the line is not ASCII/UTF-8 ({exc.reason})"
            ) from None
    return body


def _columns(body: bytes, names: tuple[str, ...]) -> list[bytes]:
    cols = body.split(COLUMN_SEP)
    if len(cols) != len(names):
        raise _Reject(
            Reason.WRONG_COLUMN_COUNT,
            f"expected {len(names)} comma-separated columns ({', '.join(names)}), found {len(cols)}",
        )
    return cols


def _non_negative_int(token: bytes, what: str) -> int:
    if token.isdigit():
        number = int(token)
        if number <= MAX_ID:
            return number
        raise _Reject(Reason.NON_NUMERIC_ID, f"{what} does not fit in 64 bits: {token!r}")
    if token.startswith(b"-") and token[1:].isdigit():
        raise _Reject(Reason.NEGATIVE_ID, f"{what} is negative: {token!r}")
    raise _Reject(Reason.NON_NUMERIC_ID, f"{what} is not a non-negative integer: {token!r}")


def _label(token: bytes, column: str) -> int:
    label = _LABELS.get(token)
    if label is None:
        raise _Reject(Reason.BAD_LABEL, f"column {column} must be 0 or 1, found {token!r}")
    return label


def _key(token: bytes) -> str:
    if not token or token.translate(None, KEY_CHARS):
        raise _Reject(
            Reason.BAD_COMMON_FEATURE_INDEX,
            f"column common_feature_index must be a non-empty word ([0-9A-Za-z_-]), found {token!r}",
        )
    return token.decode()


def _reject_sample_columns(sid: bytes, click: bytes, conversion: bytes, key: bytes, count: bytes) -> _Reject:
    """The rejection for the first bad leading column of a sample line (in column order)."""
    try:
        _non_negative_int(sid, "column sample_id")
        _label(click, "click")
        _label(conversion, "conversion")
        _key(key)
        _non_negative_int(count, "column num_features")
    except _Reject as rejection:
        return rejection
    raise AssertionError("unreachable: the leading columns failed the fast check")


def _explain_separators(feature_list: bytes) -> str:
    """Name the first entry whose separators are wrong (slow path of a rejection only)."""
    for index, entry in enumerate(feature_list.split(ENTRY_SEP), 1):
        if (
            entry.count(FIELD_SEP) != 1
            or entry.count(VALUE_SEP) != 1
            or (entry.index(FIELD_SEP) > entry.index(VALUE_SEP))
        ):
            field_id = entry.split(FIELD_SEP, 1)[0][:20]
            return (
                f"entry {index} (field {field_id!r}) is not field_id\\x02feature_id\\x03value: {entry[:60]!r}"
            )
    return "the feature list's separators are out of order"


class _Values(dict[bytes, float]):
    """Value text -> float, checked once per distinct text.

    Values repeat heavily (``1.0``, small counts, logs of small counts), so a lookup replaces
    both the strict-character check and ``float()`` on the hot path. Cleared when large so that
    memory stays bounded on data with many distinct values.
    """

    limit = 1 << 16

    def __missing__(self, token: bytes) -> float:
        try:
            if not token or token.translate(None, VALUE_CHARS):
                raise ValueError
            value = float(token)
            if not math.isfinite(value):
                raise ValueError
        except ValueError:
            raise ValueError(token) from None
        if len(self) >= self.limit:
            self.clear()
        self[token] = value
        return value


_VALUES = _Values()


def _reject_field(kind: FileKind, fields: list[bytes]) -> _Reject:
    """The rejection for the first field id of ``fields`` not allowed in ``kind``."""
    allowed = _KEYS[kind]
    index, token = next((i, f) for i, f in enumerate(fields, 1) if f not in allowed)
    spec = FIELDS.get(token.decode("utf-8", "replace"))
    if spec is None:
        return _Reject(Reason.UNKNOWN_FIELD_ID, f"entry {index}: unknown field id {token!r}")
    return _Reject(
        Reason.FIELD_IN_WRONG_FILE,
        f"entry {index}: field {spec.field_id} ({spec.name}) belongs in {spec.kind.value}, not {kind.value}",
    )


class _SampleEntries(dict[bytes, tuple[str, Entry]]):
    """Entry bytes of a sample line -> ``(field_id, (feature_id, value))``, checked once per entry.

    Sample lines repeat entries heavily (an item's five entries, the position, popular
    categories and shops), so one lookup replaces splitting, checking and converting. A miss
    that fails a check raises ValueError and the caller re-parses the line with :func:`_entries`,
    which names the problem. Cleared when large to keep memory bounded.
    """

    limit = 1 << 17

    def __missing__(self, entry: bytes) -> tuple[str, Entry]:
        field, rest = entry.split(FIELD_SEP)
        id_token, value_token = rest.split(VALUE_SEP)
        field_id = _SAMPLE_KEYS.get(field)
        if field_id is None or not id_token.isdigit() or (feature_id := int(id_token)) > MAX_ID:
            raise ValueError(entry)
        item = (field_id, (feature_id, _VALUES[value_token]))
        if len(self) >= self.limit:
            self.clear()
        self[entry] = item
        return item


_SAMPLE_ENTRIES = _SampleEntries()


def _check_structure(feature_list: bytes, num_features: int) -> None:
    """Separators in the only valid order, and as many entries as ``num_features`` says."""
    if not feature_list:
        if num_features:
            raise _Reject(
                Reason.NUM_FEATURES_MISMATCH, f"num_features is {num_features} but feature_list is empty"
            )
        return
    separators = feature_list.translate(None, _NON_SEPARATORS)
    count = separators.count(ENTRY_SEP) + 1
    if separators != _separator_pattern(count):
        raise _Reject(Reason.BAD_SEPARATOR, _explain_separators(feature_list))
    if count != num_features:
        raise _Reject(
            Reason.NUM_FEATURES_MISMATCH,
            f"num_features is {num_features} but feature_list has {count} entries",
        )


def _entries(feature_list: bytes, num_features: int) -> tuple[list[bytes], list[Entry]]:
    """Field id tokens and ``(feature_id, value)`` pairs of a feature list.

    Checks structure, count, ids and values; the field ids are checked by the caller, which
    groups entries by field anyway.
    """
    _check_structure(feature_list, num_features)
    if not feature_list:
        return [], []
    tokens = feature_list.translate(_ALL_TO_ENTRY_SEP).split(ENTRY_SEP)
    fields = tokens[0::3]
    id_tokens = tokens[1::3]
    value_tokens = tokens[2::3]
    try:
        if not b"".join(id_tokens).isdigit():
            raise ValueError
        ids = list(map(int, id_tokens))
        if max(ids) > MAX_ID:
            raise ValueError
    except ValueError:
        for index, (field_token, token) in enumerate(zip(fields, id_tokens, strict=True), 1):
            _non_negative_int(token, f"entry {index} (field {field_token!r}): feature id")
        raise AssertionError("unreachable: some feature id failed the joined check") from None
    try:
        values = list(map(_VALUES.__getitem__, value_tokens))
    except ValueError as exc:
        index = value_tokens.index(exc.args[0]) + 1
        raise _Reject(
            Reason.BAD_VALUE,
            f"entry {index} (field {fields[index - 1]!r}): value {exc.args[0]!r} is not a float",
        ) from None
    return fields, list(zip(ids, values, strict=True))


def _parse_sample(raw: bytes, source: str, line_number: int) -> SampleRecord:
    sid, click_b, conversion_b, key, count, feature_list = _columns(_body(raw), _SAMPLE_COLUMNS)
    click = _LABELS.get(click_b)
    conversion = _LABELS.get(conversion_b)
    # One combined test on the happy path; the slow path names the first bad column.
    if (
        click is None
        or conversion is None
        or not sid.isdigit()
        or not count.isdigit()
        or not key
        or key.translate(None, KEY_CHARS)
        or (sample_id := int(sid)) > MAX_ID
    ):
        raise _reject_sample_columns(sid, click_b, conversion_b, key, count)
    num_features = int(count)
    _check_structure(feature_list, num_features)
    try:
        items = list(map(_SAMPLE_ENTRIES.__getitem__, feature_list.split(ENTRY_SEP))) if feature_list else []
    except ValueError:
        fields, _ = _entries(feature_list, num_features)  # raises the precise reason for a bad id or value
        raise _reject_field(FileKind.SAMPLE_SKELETON, fields) from None
    if conversion > click:
        raise _Reject(
            Reason.CONVERSION_WITHOUT_CLICK,
            "conversion is 1 but click is 0 (a known quirk of the real files; ESMM preprocessing drops it)",
        )
    features = dict(items)
    repeats: list[Repeat] = []
    if len(features) != len(items):
        features = {}
        for field_id, pair in items:
            if field_id in features:
                repeats.append((field_id, *pair))
            else:
                features[field_id] = pair
    return SampleRecord(
        source, line_number, sample_id, click, conversion, key.decode(), num_features, features, repeats
    )


def _parse_common(raw: bytes, source: str, line_number: int) -> CommonFeaturesRecord:
    key, count, feature_list = _columns(_body(raw), _COMMON_COLUMNS)
    common_feature_index = _key(key)
    num_features = _non_negative_int(count, "column num_features")
    fields, pairs = _entries(feature_list, num_features)
    features: dict[str, Entry] = {}
    histories: dict[str, list[Entry]] = {fid: [] for fid in HISTORY_FIELDS}
    repeats: list[Repeat] = []
    start = 0
    # Entries of one field are contiguous in practice, so work per run rather than per entry.
    for token, run in groupby(fields):
        end = start + len(list(run))
        field_id = _COMMON_KEYS.get(token)
        if field_id is None:
            raise _reject_field(FileKind.COMMON_FEATURES, fields)
        if field_id in _HISTORY:
            histories[field_id] += pairs[start:end]
        else:
            first = start
            if field_id not in features:
                features[field_id] = pairs[start]
                first += 1
            repeats += [(field_id, *pair) for pair in pairs[first:end]]
        start = end
    return CommonFeaturesRecord(
        source, line_number, common_feature_index, num_features, features, histories, repeats
    )


_PARSERS: dict[FileKind, Callable[[bytes, str, int], Record]] = {
    FileKind.SAMPLE_SKELETON: _parse_sample,
    FileKind.COMMON_FEATURES: _parse_common,
}


def parse_line(raw: bytes, kind: FileKind, source: str = "", line_number: int = 0) -> Record:
    """Parse one raw line (terminator included, as read) of a ``kind`` file.

    ``source`` and ``line_number`` say where the line came from (file name and 1-based line for
    files; for Kafka, the file and line the replay recorded) and are copied to the record.
    """
    try:
        return _PARSERS[kind](raw, source, line_number)
    except _Reject as rejection:
        reason, message = rejection.reason, rejection.message
        # A final line cut short fails structurally, or (cut right after \x03) on an empty value.
        cut = reason in STRUCTURAL_REASONS or raw.rstrip(b"\r").endswith(VALUE_SEP)
        if cut and not raw.endswith(b"\n"):
            reason, message = (
                Reason.TRUNCATED_LAST_LINE,
                f"final line has no newline and is incomplete: {message}",
            )
        return QuarantineRecord(source, line_number, kind, raw, reason, message)


def parse_file(path: Path, kind: FileKind | None = None) -> Iterator[Record]:
    """The records of a raw file by the reference, lines numbered from 1 and named by the file."""
    with path.open("rb", buffering=1 << 20) as lines:
        file_kind = kind or FileKind.from_file_name(path.name)
        yield from (parse_line(raw, file_kind, path.name, number) for number, raw in enumerate(lines, 1))
