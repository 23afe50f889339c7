"""Data fixtures of the source tests: small synthetic data sets, generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from taobao_assets.source.generate import GeneratedDataset, GeneratorConfig, generate
from taobao_assets_tests.conftest import EXAMPLES


@pytest.fixture(scope="session")
def examples() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def clean_dataset(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDataset:
    """100 K samples: enough clicks (~4 K) and conversions (~20) to check the configured rates."""
    out = tmp_path_factory.mktemp("clean")
    return generate(GeneratorConfig(rows=100_000, seed=11, out=out, progress=False))


@pytest.fixture(scope="session")
def malformed_dataset(tmp_path_factory: pytest.TempPathFactory) -> GeneratedDataset:
    out = tmp_path_factory.mktemp("malformed")
    return generate(GeneratorConfig(rows=20_000, seed=5, out=out, malformed_fraction=0.002, progress=False))
