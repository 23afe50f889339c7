"""The compiled parser core against the pure-Python reference, record for record.

The reference (``taobao_assets_tests/parser_reference.py``) is the line-by-line parser the core
replaced; the core must give the same record for every line (same typed values; for a rejected
line the same reason, message and bytes), one at a time and in batches.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from taobao_assets.source.format import FIELDS, REASONS_BY_KIND, FileKind, Reason
from taobao_assets.source.generate import GeneratedDataset
from taobao_assets.source.parser import (
    BatchColumn,
    CommonFeaturesRecord,
    QuarantineRecord,
    Record,
    SampleRecord,
    parse_batch,
    parse_line,
    record_ends,
)
from taobao_assets_tests import parser_reference
from taobao_assets_tests.test_source.fuzz import corpus

FUZZ_LINES = 100_000


def _differences(lines: Iterable[bytes], kind: FileKind) -> tuple[list[tuple[bytes, Record, Record]], Counter[str]]:
    """Lines on which the core and the reference disagree, and the reference's outcomes."""
    differences, outcomes = [], Counter[str]()
    for number, raw in enumerate(lines, 1):
        expected = parser_reference.parse_line(raw, kind, "f.csv", number)
        actual = parse_line(raw, kind, "f.csv", number)
        outcomes[expected.reason.value if isinstance(expected, QuarantineRecord) else "good"] += 1
        if actual != expected:
            differences.append((raw, expected, actual))
    return differences, outcomes


def _assert_same(lines: Sequence[bytes], kind: FileKind) -> Counter[str]:
    differences, outcomes = _differences(lines, kind)
    assert not differences, f"{len(differences)} of {len(lines)} lines differ, first: {differences[:3]}"
    return outcomes


@pytest.fixture(scope="module")
def fuzz_lines(malformed_dataset: GeneratedDataset) -> list[bytes]:
    seeds = [line for path in malformed_dataset.files.values()
             for line in path.read_bytes().splitlines(keepends=True)[:2_000]]
    return list(corpus(seeds, FUZZ_LINES))


def test_core_equals_reference_on_generated_lines_with_every_injected_fault(malformed_dataset: GeneratedDataset):
    for name, path in malformed_dataset.files.items():
        kind = FileKind.from_file_name(name)
        outcomes = _assert_same(path.read_bytes().splitlines(keepends=True), kind)
        injected = {r.value for r in REASONS_BY_KIND[kind] if r is not Reason.TRUNCATED_LAST_LINE}
        assert injected <= set(outcomes), f"{name}: the generator injected only {sorted(outcomes)}"


def test_core_equals_reference_on_the_format_examples(examples: Path):
    for path in sorted(examples.glob("*.csv")):
        outcomes = _assert_same(path.read_bytes().splitlines(keepends=True), FileKind.from_file_name(path.name))
        assert outcomes["good"] > 0


@pytest.mark.parametrize("kind", list(FileKind))
def test_core_equals_reference_on_the_fuzz_corpus(fuzz_lines: list[bytes], kind: FileKind):
    outcomes = _assert_same(fuzz_lines, kind)
    # The corpus is only worth its size if it reaches every outcome of the kind, often.
    assert {r.value for r in REASONS_BY_KIND[kind]} | {"good"} == set(outcomes)
    assert min(outcomes.values()) >= 20, outcomes


def _layout(kind: FileKind) -> list[BatchColumn]:
    """Every column parse_batch can give for ``kind``."""
    fields = [f for f, spec in FIELDS.items() if spec.kind is kind]
    head: list[BatchColumn] = [BatchColumn("common_feature_index", "common_feature_index")]
    if kind is FileKind.SAMPLE_SKELETON:
        head = [BatchColumn(name, name) for name in ("sample_id", "click", "conversion")] + head  # type: ignore[misc]
    single = [BatchColumn(f"{what}_{f}", what, f) for f in fields if not FIELDS[f].multi_valued
              for what in ("id", "value")]
    return head + single + [BatchColumn(f"history_{f}", "history", f) for f in fields if FIELDS[f].multi_valued]


def _expected_row(record: Record, raw: bytes, layout: Sequence[BatchColumn]) -> dict[str, Any]:
    if isinstance(record, QuarantineRecord):
        return {**{c.name: None for c in layout}, "reason": record.reason.value, "message": record.message,
                "raw": raw}
    assert isinstance(record, SampleRecord | CommonFeaturesRecord)
    row: dict[str, Any] = {}
    for column in layout:
        entry = record.features.get(column.field_id)
        if column.what == "id":
            row[column.name] = None if entry is None else entry[0]
        elif column.what == "value":
            row[column.name] = None if entry is None else entry[1]
        elif column.what == "history":
            assert isinstance(record, CommonFeaturesRecord)
            row[column.name] = [{"id": i, "count": v} for i, v in record.histories[column.field_id]]
        else:
            row[column.name] = getattr(record, column.name)
    return {**row, "reason": None, "message": None, "raw": None}


@pytest.mark.parametrize("kind", list(FileKind))
def test_batches_equal_the_reference_row_for_row(fuzz_lines: list[bytes], kind: FileKind):
    layout = _layout(kind)
    step = 7_919  # batches that start and end anywhere in the corpus
    for start in range(0, len(fuzz_lines), step):
        lines = fuzz_lines[start:start + step]
        batch = parse_batch(kind, layout, b"".join(lines), record_ends(np.fromiter(map(len, lines), np.int64)))
        expected = [_expected_row(parser_reference.parse_line(raw, kind), raw, layout) for raw in lines]
        actual = batch.to_pylist()
        wrong = [(raw, e, a) for raw, e, a in zip(lines, expected, actual, strict=True) if e != a]
        assert not wrong, f"{len(wrong)} rows differ, first: {wrong[:2]}"


def test_an_empty_batch_has_the_layout_and_no_rows():
    batch = parse_batch(FileKind.SAMPLE_SKELETON, _layout(FileKind.SAMPLE_SKELETON), b"", np.zeros(0, np.int64))
    assert batch.num_rows == 0 and batch.schema.names[-3:] == ["reason", "message", "raw"]


@pytest.mark.parametrize(("layout", "ends", "error"), [
    ([BatchColumn("x", "id", "101")], [3], 'field "101" is not a field of sample_skeleton'),
    ([BatchColumn("x", "history", "205")], [3], 'no column "history"'),
    ([], [4], "ends must be non-decreasing offsets within data"),
    ([], [2, 1], "ends must be non-decreasing offsets within data"),
])
def test_batch_refuses_a_wrong_layout_or_cut(layout: list[BatchColumn], ends: list[int], error: str):
    with pytest.raises(ValueError, match=error):
        parse_batch(FileKind.SAMPLE_SKELETON, layout, b"abc", np.array(ends, np.int64))


def test_a_batch_without_ends_is_cut_after_each_newline(malformed_dataset: GeneratedDataset):
    for name, path in malformed_dataset.files.items():
        kind = FileKind.from_file_name(name)
        data = path.read_bytes() + b"a,final,line,without,newline"
        lines = re.findall(rb"[^\n]*\n|[^\n]+$", data)
        layout = _layout(kind)
        expected = [_expected_row(parser_reference.parse_line(raw, kind), raw, layout) for raw in lines]
        assert parse_batch(kind, layout, data).to_pylist() == expected
