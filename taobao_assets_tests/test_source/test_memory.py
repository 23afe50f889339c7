from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from taobao_assets.source.format import FileKind
from taobao_assets.source.generate import GeneratedDataset

#: Parses files in a fresh interpreter and reports its peak RSS before and after (ru_maxrss, KiB).
_CHILD = """
import json, resource, sys
from taobao_assets.source.parser import QuarantineRecord, parse_file
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
counts = {}
before = peak()
for path in sys.argv[1:]:
    records = quarantined = 0
    for record in parse_file(path):
        records += 1
        quarantined += isinstance(record, QuarantineRecord)
    counts[path] = [records, quarantined]
print(json.dumps({"before_kib": before, "after_kib": peak(), "counts": counts}))
"""


def _repeat(source: Path, target: Path, megabytes: int) -> int:
    """Write ``source`` again and again into ``target`` until it holds ``megabytes``; return lines."""
    data = source.read_bytes()
    copies = -(-megabytes * 2**20 // len(data))
    with target.open("wb") as out:
        for _ in range(copies):
            out.write(data)
    return copies * data.count(b"\n")


def test_parsing_a_200_mb_input_keeps_memory_bounded(clean_dataset: GeneratedDataset, tmp_path: Path):
    common = tmp_path / "common_features_train.csv"
    samples = tmp_path / "sample_skeleton_train.csv"
    lines = {
        str(common): _repeat(clean_dataset.files[FileKind.COMMON_FEATURES.file_name("train")], common, 150),
        str(samples): _repeat(clean_dataset.files[FileKind.SAMPLE_SKELETON.file_name("train")], samples, 50),
    }
    assert common.stat().st_size + samples.stat().st_size >= 200 * 2**20
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(common), str(samples)], capture_output=True, text=True, check=True
    )
    report = json.loads(run.stdout)
    assert report["counts"] == {path: [count, 0] for path, count in lines.items()}
    growth_mib = (report["after_kib"] - report["before_kib"]) / 1024
    # One line at a time plus the parser's bounded caches (entry and value texts, ~45 MiB when full).
    assert growth_mib < 64, f"peak RSS grew by {growth_mib:.0f} MiB while streaming 200 MiB"
