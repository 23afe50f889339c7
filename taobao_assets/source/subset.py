"""The first N samples of a raw data set, with exactly the common-features rows they reference.

Trying the real Ali-CCP files (84 M samples, ~40 GB) on one machine starts with a slice:
``python -m taobao_assets.cli demo --source DIR --limit N`` keeps the first ``ceil(N / 2)`` sample
lines of the train split and the first ``floor(N / 2)`` of the test split (both splits, and so the
whole simulated time line, stay represented; a split with fewer lines leaves the rest of its share
to the other), and from each common-features file exactly the rows those samples reference, byte
for byte and in file order.

Lines are not parsed: a malformed line among the first N stays in the slice and is quarantined
downstream like any other, so the slice shows the real data's faults too. The index is the fourth
column of a sample line and the first of a common-features line; the scan of a common-features file
stops once every referenced index was found (the real files list users roughly in sample order).

The slice goes to its own folder with a ``subset.json`` naming the source files (size, mtime) and
the limit, written last: a re-run with the same source and limit reuses the slice, anything else
(or an interrupted write) rewrites it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from taobao_assets.source.format import COLUMN_SEP, COLUMNS, SPLITS, FileKind, raw_files

MANIFEST = "subset.json"
#: Where the common_feature_index column sits in each file kind (the format module's column lists).
_INDEX_COLUMN = {kind: columns.index("common_feature_index") for kind, columns in COLUMNS.items()}
#: Report progress of the common-features scan every this many bytes.
PROGRESS_BYTES = 256 * 1024 * 1024
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SubsetManifest:
    source: str
    limit: int
    #: name -> [size, mtime_ns] of each source file.
    files: dict[str, list[int]]
    #: name -> lines written.
    lines: dict[str, int]


def split_quota(limit: int, available: dict[str, int]) -> dict[str, int]:
    """Sample lines kept per split: half each (train takes the odd one), a short split's rest to the other.

    ``available`` is the lines each split has (counting up to ``limit`` is enough).
    """
    if limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    train = min(available["train"], max((limit + 1) // 2, limit - available["test"]))
    return {"train": train, "test": min(available["test"], limit - train)}


def _count_lines(path: Path, cap: int) -> int:
    with path.open("rb") as lines:
        return sum(1 for _ in zip(range(cap), lines, strict=False))


def _source_files(source: Path) -> dict[str, list[int]]:
    files = {}
    for path in raw_files(source):
        stat = path.stat()
        files[path.name] = [stat.st_size, stat.st_mtime_ns]
    return files


def _index_of(line: bytes, kind: FileKind) -> bytes | None:
    """The common_feature_index column of a raw line (None when the line is too short to hold one)."""
    position = _INDEX_COLUMN[kind]
    columns = line.split(COLUMN_SEP, position + 1)
    return columns[position] if len(columns) > position else None


def _head(source: Path, out: Path, quota: int) -> tuple[int, set[bytes]]:
    """Copy the first ``quota`` lines of a sample file; return the lines copied and their indexes."""
    indexes: set[bytes] = set()
    copied = 0
    with source.open("rb") as src, out.open("wb") as dst:
        for line in src:
            if copied == quota:
                break
            dst.write(line)
            copied += 1
            index = _index_of(line, FileKind.SAMPLE_SKELETON)
            if index is not None:
                indexes.add(index)
    return copied, indexes


def _referenced(source: Path, out: Path, wanted: set[bytes], progress: Progress) -> int:
    """Copy the common-features lines whose index is in ``wanted``; stop when all were found."""
    missing, copied, scanned, reported, t0 = set(wanted), 0, 0, 0, time.monotonic()
    with source.open("rb") as src, out.open("wb") as dst:
        for line in src:
            if not missing:
                break
            scanned += len(line)
            index = _index_of(line, FileKind.COMMON_FEATURES)
            if index in missing:
                missing.discard(index)
                dst.write(line)
                copied += 1
            if scanned - reported >= PROGRESS_BYTES:
                reported = scanned
                rate = scanned / 1e6 / max(time.monotonic() - t0, 1e-9)
                progress(f"   {source.name}: scanned {scanned / 1e9:.1f} GB ({rate:.0f} MB/s), "
                         f"{len(wanted) - len(missing):,} of {len(wanted):,} users found")
    if missing:
        progress(f"   {source.name}: {len(missing):,} indexes the samples reference have no row in the file")
    return copied


def write_subset(source: Path, out: Path, limit: int, progress: Progress = print) -> SubsetManifest:
    """The first ``limit`` samples of the raw folder ``source`` in ``out`` (reused when up to date)."""
    files = _source_files(source)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        existing = SubsetManifest(**json.loads(manifest_path.read_text()))
        if (existing.source, existing.limit, existing.files) == (str(source.resolve()), limit, files):
            return existing
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    lines: dict[str, int] = {}
    available = {split: _count_lines(source / FileKind.SAMPLE_SKELETON.file_name(split), limit) for split in SPLITS}
    for split, quota in split_quota(limit, available).items():
        samples = FileKind.SAMPLE_SKELETON.file_name(split)
        lines[samples], indexes = _head(source / samples, out / samples, quota)
        common = FileKind.COMMON_FEATURES.file_name(split)
        progress(f"   {split}: first {lines[samples]:,} samples reference {len(indexes):,} users")
        lines[common] = _referenced(source / common, out / common, indexes, progress)
    manifest = SubsetManifest(str(source.resolve()), limit, files, lines)
    manifest_path.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest
