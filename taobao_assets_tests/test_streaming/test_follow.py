"""The follower's since-start freshness summary (no server needed)."""

from __future__ import annotations

import math

import numpy as np

from taobao_assets.streaming.follow import HISTOGRAM_MS, FreshnessHistogram


def test_the_histogram_gives_numpys_percentiles_to_the_millisecond() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.exponential(80.0, 50_000), rng.uniform(0, 5_000, 500)])
    histogram = FreshnessHistogram()
    for chunk in np.array_split(values, 7):
        histogram.add(chunk.tolist())
    summary = histogram.summary()
    assert summary["records"] == len(values)
    for q in (50, 99):
        assert summary[f"p{q}_ms"] == math.floor(np.percentile(values, q, method="inverted_cdf"))
    assert summary["max_ms"] == round(values.max(), 1)


def test_values_beyond_the_histogram_count_in_its_last_bucket_and_the_max() -> None:
    histogram = FreshnessHistogram()
    histogram.add([10.0, 3.0 * HISTOGRAM_MS])
    assert histogram.summary() == {"records": 2, "p50_ms": 10, "p99_ms": HISTOGRAM_MS, "max_ms": 3.0 * HISTOGRAM_MS}
    assert FreshnessHistogram().summary()["records"] == 0
