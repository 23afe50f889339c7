"""The whole-pipeline table lists every other benchmark's ratio from its committed results.

``bench.pipeline`` reads each ratio by a path into another benchmark's JSON; when that benchmark's
output changes shape, the path breaks, and the pipeline benchmark would only say so after its runs.
"""

from __future__ import annotations

from bench.pipeline import RATIOS, other_ratios


def test_every_listed_ratio_is_found_in_its_benchmarks_committed_results() -> None:
    rows = other_ratios()
    assert [row[0] for row in rows] == [name for name, *_ in RATIOS]
    assert all(float(value) > 0 for _, _, value, _ in rows), rows
