"""Replay -> Kafka -> bronze on generated data, through the real Kafka and MinIO.

One data set of 5 days is replayed once per session, with the replay killed halfway and resumed;
every test then checks a property of what landed: nothing lost, nothing duplicated, byte-exact.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from dagster import materialize

from deploy.service import Service
from taobao_assets.assets.bronze import bronze_assets
from taobao_assets.checks.bronze import bronze_checks
from taobao_assets.io_managers.bronze import BronzeIOManager, load_manifest
from taobao_assets.partitions import DAILY, event_time_config
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.settings import Settings
from taobao_assets.source.generate import GeneratorConfig, generate
from taobao_assets.source.replay import ReplayResult, run_replay, total_records
from taobao_assets.source.topics import COMMON_FEATURES, SAMPLES

REPO = Path(__file__).resolve().parents[2]
ROWS = 30_000


def _end_total(kafka: KafkaResource) -> int:
    async def ends() -> int:
        return sum([sum((await kafka.end_offsets(t.name)).values()) for t in (SAMPLES, COMMON_FEATURES)])
    return asyncio.run(ends())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    folder = tmp_path_factory.mktemp("aliccp")
    generate(GeneratorConfig(rows=ROWS, seed=7, out=folder, progress=False,
                             event_time=event_time_config(settings)))
    return folder


@pytest.fixture(scope="module")
def replayed(dataset: Path, settings: Settings, kafka_service: Service, minio_service: Service
             ) -> tuple[ReplayResult, int]:
    """Replay killed (SIGKILL) at about 40 %, then resumed; returns the resume's result and where it died."""
    kafka = KafkaResource.from_settings(settings)
    asyncio.run(kafka.delete_topics([SAMPLES.name, COMMON_FEATURES.name]))
    for old in (settings.state_dir / "replay").glob("replay-*.json"):
        old.unlink()
    total = total_records(dataset)
    child = subprocess.Popen(
        [sys.executable, "-m", "taobao_assets.source.replay", "--data", str(dataset), "--rate", "4000"],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                if _end_total(kafka) >= 0.4 * total:
                    break
            except ValueError:  # topics not created yet
                pass
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = _end_total(kafka)
    assert 0 < killed_at < total, "the replay should have died halfway"
    return run_replay(settings, kafka, dataset), killed_at


@pytest.fixture(scope="module")
def bronze(replayed: tuple[ReplayResult, int], settings: Settings) -> S3Resource:
    s3 = S3Resource.from_settings(settings)
    resources = {"kafka": KafkaResource.from_settings(settings), "s3": s3,
                 "bronze_io_manager": BronzeIOManager(s3=s3)}
    for day in DAILY.get_partition_keys():
        result = materialize([*bronze_assets, *bronze_checks], partition_key=day, resources=resources)
        assert result.success
        failed = [e.asset_check_key for e in result.get_asset_check_evaluations() if not e.passed]
        assert not failed, f"bronze checks failed on {day}: {failed}"
        assert len(result.get_asset_check_evaluations()) == len(bronze_checks)
    return s3


def _bronze_lines(s3: S3Resource, topic: str) -> dict[tuple[str, int], bytes]:
    """Every record of the topic in bronze, by (source file, line), over all days."""
    found: dict[tuple[str, int], bytes] = {}
    for day in DAILY.get_partition_keys():
        manifest = load_manifest(s3, topic, day)
        for part in manifest.parts:
            data = gzip.decompress(s3.get_bytes(manifest.key(part["data_object"])))
            index = gzip.decompress(s3.get_bytes(manifest.key(part["index_object"]))).decode()
            position = 0
            for row in index.splitlines()[1:]:
                _, _, source, line, length = row.split(",")
                key = (source, int(line))
                assert key not in found, f"{key} is in bronze twice"
                found[key] = data[position:position + int(length)]
                position += int(length)
            assert position == len(data)
    return found


def test_replay_resumes_without_duplicates_or_gaps(replayed: tuple[ReplayResult, int], dataset: Path,
                                                   settings: Settings) -> None:
    result, killed_at = replayed
    total = total_records(dataset)
    assert result.resumed
    assert result.records_total == total
    assert _end_total(KafkaResource.from_settings(settings)) == total
    # Exactly what was missing is sent: not a record of what the killed run had written again.
    assert result.records_sent == total - killed_at


def test_replay_again_is_a_no_op(replayed: tuple[ReplayResult, int], dataset: Path,
                                 settings: Settings) -> None:
    kafka = KafkaResource.from_settings(settings)
    before = _end_total(kafka)
    again = run_replay(settings, kafka, dataset)
    assert again.records_sent == 0
    assert _end_total(kafka) == before


def test_bronze_reconciles_byte_for_byte_with_the_source_files(bronze: S3Resource, dataset: Path) -> None:
    for topic in (SAMPLES.name, COMMON_FEATURES.name):
        lines = _bronze_lines(bronze, topic)
        by_file: dict[str, dict[int, bytes]] = defaultdict(dict)
        for (source, line), value in lines.items():
            by_file[source][line] = value
        stem = "sample_skeleton" if topic == SAMPLES.name else "common_features"
        files = sorted(p.name for p in dataset.glob(f"{stem}_*.csv"))
        assert sorted(by_file) == files
        for name, rows in by_file.items():
            original = (dataset / name).read_bytes()
            rebuilt = b"".join(rows[i] for i in range(1, len(rows) + 1))
            assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(original).hexdigest(), name


def test_bronze_rerun_writes_identical_objects(bronze: S3Resource, settings: Settings) -> None:
    day = DAILY.get_partition_keys()[1]
    manifest_before = load_manifest(bronze, SAMPLES.name, day)
    objects_before = {k: bronze.get_bytes(k) for k in bronze.list_keys(manifest_before.prefix)}
    resources = {"kafka": KafkaResource.from_settings(settings), "s3": bronze,
                 "bronze_io_manager": BronzeIOManager(s3=bronze)}
    assert materialize(bronze_assets, partition_key=day, resources=resources).success
    objects_after = {k: bronze.get_bytes(k) for k in bronze.list_keys(manifest_before.prefix)}
    assert objects_after == objects_before
    assert json.loads(objects_after[manifest_before.key("_manifest.json")])["records"] > 0
