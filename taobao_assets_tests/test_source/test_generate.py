from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from taobao_assets.source.event_time import EventTimeConfig
from taobao_assets.source.format import REASONS_BY_KIND, SPLITS, FileKind, Reason
from taobao_assets.source.generate import MALFORMED_FILE, GeneratedDataset, GeneratorConfig, _AucBins, generate
from taobao_assets.source.parser import (
    CommonFeaturesRecord,
    QuarantineRecord,
    Record,
    SampleRecord,
    parse_file,
)
from taobao_assets_tests.test_source.helpers import reencode


def _parse_all(dataset: GeneratedDataset) -> dict[str, list[Record]]:
    return {name: list(parse_file(path)) for name, path in dataset.files.items()}


@pytest.fixture(scope="module")
def clean_records(clean_dataset: GeneratedDataset) -> dict[str, list[Record]]:
    return _parse_all(clean_dataset)


def test_generated_files_parse_cleanly_and_agree_with_the_truth(
    clean_dataset: GeneratedDataset, clean_records: dict[str, list[Record]]
):
    parsed = clean_records
    truth = clean_dataset.truth
    assert not [r for records in parsed.values() for r in records if isinstance(r, QuarantineRecord)]
    timeline = clean_dataset.timeline()
    per_day: Counter[tuple[str, str, str]] = Counter()
    for split in SPLITS:
        samples = parsed[FileKind.SAMPLE_SKELETON.file_name(split)]
        commons = parsed[FileKind.COMMON_FEATURES.file_name(split)]
        assert all(isinstance(r, SampleRecord) for r in samples)
        assert all(isinstance(r, CommonFeaturesRecord) for r in commons)
        realized = truth["realized"][split]
        assert len(samples) == realized["samples"] and len(commons) == realized["common_rows"]
        assert sum(r.click for r in samples) == realized["clicks"]
        assert sum(r.conversion for r in samples) == realized["conversions"]
        keys = {r.common_feature_index for r in commons}
        assert len(keys) == len(commons)
        assert {r.common_feature_index for r in samples} == keys  # every reference resolves, none unused
        for r in samples:
            day = timeline.sample_time(split, r.line_number).day.isoformat()
            per_day[(split, day, "impressions")] += 1
            per_day[(split, day, "clicks")] += r.click
            per_day[(split, day, "conversions")] += r.conversion
    expected = {
        (row["split"], row["day"], measure): row[measure]
        for row in truth["per_day"]
        for measure in ("impressions", "clicks", "conversions")
    }
    assert +per_day == {k: v for k, v in expected.items() if v}
    ids = [r.sample_id for split in SPLITS for r in parsed[FileKind.SAMPLE_SKELETON.file_name(split)]]
    assert ids == list(range(1, truth["config"]["rows"] + 1))


def test_generated_data_has_the_configured_rates_and_shape(clean_dataset: GeneratedDataset):
    truth = clean_dataset.truth
    overall = truth["realized"]["all"]
    assert overall["samples"] == 100_000
    assert 0.035 <= overall["ctr"] <= 0.045
    assert 0.002 <= overall["cvr"] <= 0.01  # ~20 conversions expected at this size
    train, test = truth["realized"]["train"], truth["realized"]["test"]
    assert abs(test["samples"] / overall["samples"] - 0.1) < 0.01
    assert 25 <= train["mean_samples_per_common"] <= 60
    assert 400 <= train["mean_common_entries"] <= 650
    signal = truth["signal"]
    assert signal["oracle_auc"] > 0.65
    # The same click model every day: each day's oracle is near the whole set's (14 k impressions a day).
    by_day = signal["oracle_auc_by_day"]
    assert sorted(by_day) == sorted({row["day"] for row in truth["per_day"]})
    assert all(abs(auc - signal["oracle_auc"]) < 0.03 for auc in by_day.values()), by_day
    assert signal["ctr_with_affinity"] > 1.5 * signal["ctr_without_affinity"]
    assert [row["day"] for row in truth["per_day"] if row["split"] == "test"] == ["2026-11-07"]


def test_generated_lines_are_written_exactly_as_the_format_module_would(clean_dataset: GeneratedDataset):
    for name, path in clean_dataset.files.items():
        with path.open("rb") as f:
            raw_lines = list(islice(f, 300))
        records = list(islice(parse_file(path), 300))
        assert [reencode(r) for r in records] == raw_lines, name


def test_common_rows_are_not_in_sample_order(clean_records: dict[str, list[Record]]):
    samples = clean_records[FileKind.SAMPLE_SKELETON.file_name("train")]
    first_use = list(dict.fromkeys(r.common_feature_index for r in samples if isinstance(r, SampleRecord)))
    commons = clean_records[FileKind.COMMON_FEATURES.file_name("train")]
    file_order = [r.common_feature_index for r in commons if isinstance(r, CommonFeaturesRecord)]
    assert sorted(first_use) == sorted(file_order)
    same_place = sum(a == b for a, b in zip(first_use, file_order, strict=True))
    assert same_place < len(file_order) * 0.05


def test_same_arguments_give_the_same_bytes_from_cli_and_api(tmp_path: Path):
    args = ["--rows", "3000", "--seed", "7", "--days", "3", "--malformed-fraction", "0.01"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "taobao_assets.source.generate",
            *args,
            "--out",
            str(tmp_path / "cli"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "samples 3000" in run.stdout
    api = generate(
        GeneratorConfig(
            rows=3000,
            seed=7,
            out=tmp_path / "api",
            event_time=EventTimeConfig(days=3),
            malformed_fraction=0.01,
            progress=False,
        )
    )
    generate(GeneratorConfig(rows=3000, seed=8, out=tmp_path / "other", progress=False))
    for name in api.files:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes()
        assert (tmp_path / "other" / name).read_bytes() != (tmp_path / "api" / name).read_bytes()
    assert (tmp_path / "cli" / MALFORMED_FILE).read_text() == (tmp_path / "api" / MALFORMED_FILE).read_text()
    cli_truth = json.loads((tmp_path / "cli" / "generator_truth.json").read_text())
    assert cli_truth == api.truth


def test_injected_malformed_lines_are_quarantined_exactly(malformed_dataset: GeneratedDataset):
    assert malformed_dataset.malformed_path is not None
    expected = {
        (m["file"], m["line_number"]): m["reason"]
        for m in json.loads(malformed_dataset.malformed_path.read_text())
    }
    found = {}
    clean = Counter()
    for name, records in _parse_all(malformed_dataset).items():
        for r in records:
            if isinstance(r, QuarantineRecord):
                found[(name, r.line_number)] = r.reason.value
            else:
                clean[name] += 1
    assert found == expected
    for kind in FileKind:
        reasons = {reason for (name, _), reason in expected.items() if name.startswith(kind.value)}
        assert reasons == {r.value for r in REASONS_BY_KIND[kind]}
    truth = malformed_dataset.truth
    for name, stats in truth["files"].items():
        assert clean[name] == stats["good_lines"]
    assert sum(truth["malformed"]["by_reason"].values()) == len(expected)
    last_lines = {name: max(n for (f, n) in expected if f == name) for name in malformed_dataset.files}
    for name, line_number in last_lines.items():
        assert expected[(name, line_number)] == Reason.TRUNCATED_LAST_LINE.value
        assert line_number == truth["files"][name]["lines"]


def test_streamed_auc_bins_equal_the_exact_auc() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(-3, 1, 200_000)
    labels = (rng.random(logits.size) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    bins = _AucBins()
    for part in np.array_split(np.arange(logits.size), 7):
        bins.add(logits[part], labels[part])
    assert bins.auc() == pytest.approx(roc_auc_score(labels, logits), abs=1e-4)
