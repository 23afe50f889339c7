"""``bench.disk`` counts a file by the blocks it occupies, so Kafka's sparse index files do not inflate it."""

from __future__ import annotations

import os
from pathlib import Path

from bench.disk import _on_disk


def test_a_sparse_file_counts_its_written_blocks_not_its_length(tmp_path: Path) -> None:
    dense = tmp_path / "topic-0" / "00000000000000000000.log"
    dense.parent.mkdir()
    dense.write_bytes(os.urandom(1 << 20))
    sparse = dense.parent / "00000000000000000000.index"
    with sparse.open("wb") as out:
        out.truncate(10 << 20)  # as Kafka preallocates an index: 10 MB long, nothing written

    assert sparse.stat().st_size == 10 << 20
    # The written MiB takes its 256 blocks of 4 KiB (a file system may add a block of its own).
    assert 1 << 20 <= _on_disk(tmp_path) <= (1 << 20) + 64 * 1024
    assert _on_disk(tmp_path / "missing") == 0
