"""The label-copy screen's AUC against scikit-learn's (ties included)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from taobao_assets.quality.leakage import auc


def test_rank_auc_equals_scikit_learns_with_ties_and_is_none_for_one_class() -> None:
    rng = np.random.default_rng(6)
    labels = (rng.random(50_000) < 0.04).astype(np.int64)
    scores = np.round(rng.normal(labels * 0.5, 1.0), 1)  # rounded: many ties
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auc(np.zeros(10, np.int64), np.arange(10.0)) is None
