"""The ``--limit N`` slice of a raw folder: the first samples, and exactly the users they reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from taobao_assets.source.format import SPLITS, FileKind
from taobao_assets.source.generate import GeneratedDataset
from taobao_assets.source.subset import MANIFEST, split_quota, write_subset

LIMIT = 1_001


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _silent(_: str) -> None:
    return None


def test_split_quota_keeps_both_splits_and_a_short_one_leaves_its_share() -> None:
    plenty = {"train": 10**6, "test": 10**6}
    assert split_quota(1, plenty) == {"train": 1, "test": 0}
    assert split_quota(LIMIT, plenty) == {"train": 501, "test": 500}
    assert split_quota(LIMIT, {"train": 10**6, "test": 100}) == {"train": 901, "test": 100}
    assert split_quota(LIMIT, {"train": 200, "test": 10**6}) == {"train": 200, "test": 801}
    assert split_quota(LIMIT, {"train": 200, "test": 300}) == {"train": 200, "test": 300}
    with pytest.raises(ValueError, match="positive"):
        split_quota(0, plenty)


def test_slice_holds_the_first_samples_and_exactly_their_common_features(
    malformed_dataset: GeneratedDataset, tmp_path: Path,
) -> None:
    source, out = malformed_dataset.folder, tmp_path / "slice"

    manifest = write_subset(source, out, LIMIT, _silent)

    available = {s: len(_lines(source / FileKind.SAMPLE_SKELETON.file_name(s))) for s in SPLITS}
    for split, quota in split_quota(LIMIT, available).items():
        samples = _lines(out / FileKind.SAMPLE_SKELETON.file_name(split))
        assert samples == _lines(source / FileKind.SAMPLE_SKELETON.file_name(split))[:quota]
        referenced = {line.split(b",")[3] for line in samples}
        original = _lines(source / FileKind.COMMON_FEATURES.file_name(split))
        expected = [line for line in original if line.split(b",", 1)[0] in referenced]
        # byte for byte, in file order; every referenced user that has a row (a malformed sample
        # line may reference none: its fourth column is then whatever the fault left there)
        assert _lines(out / FileKind.COMMON_FEATURES.file_name(split)) == expected
        assert expected
    assert sum(manifest.lines.values()) == sum(len(_lines(p)) for p in out.glob("*.csv"))


def test_slice_is_reused_when_up_to_date_and_rewritten_otherwise(
    malformed_dataset: GeneratedDataset, tmp_path: Path,
) -> None:
    source, out = malformed_dataset.folder, tmp_path / "slice"
    write_subset(source, out, LIMIT, _silent)
    written = (out / MANIFEST).stat().st_mtime_ns

    write_subset(source, out, LIMIT, _silent)
    assert (out / MANIFEST).stat().st_mtime_ns == written

    smaller = write_subset(source, out, 11, _silent)
    assert smaller.limit == 11
    assert len(_lines(out / FileKind.SAMPLE_SKELETON.file_name(SPLITS[0]))) == 6


def test_a_folder_without_raw_files_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"sample_skeleton_train\.csv is missing"):
        write_subset(tmp_path, tmp_path / "slice", LIMIT, _silent)
