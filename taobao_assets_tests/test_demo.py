"""The main job (``make demo``'s command) end to end on a tiny data set, its summary checked against the stores.

The demo runs as a user runs it (``python -m taobao_assets.cli demo``, a separate process) in a
namespace of its own: topics, bucket, database, Feast project and Dagster instance, so it neither
reads nor overwrites the suite's shared data set. It gets a raw folder and ``--limit``, the path a
user takes with the real files. Then every number of its JSON summary is compared with the
generator's truth about the slice and with the stores queried directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.partitions import event_time_config
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.trino import TrinoResource
from taobao_assets.settings import Settings
from taobao_assets.source.format import FileKind
from taobao_assets.source.generate import MALFORMED_FILE, GeneratorConfig, generate
from taobao_assets.source.parser import QuarantineRecord, parse_file
from taobao_assets_tests.conftest import REPO, ensure_running

pytestmark = pytest.mark.stack  # the demo starts its own namespace's services
SAMPLES, LIMIT, DAYS = 4_000, 3_000, 3
NAMESPACE = {"topic_prefix": "demo-test.aliccp", "lake_bucket": "lake-demo-test", "postgres_db": "tfp_demo_test",
             "feast_project": "taobao_demo_test", "event_days": DAYS}
STAGES = ["source data", "replay into Kafka", f"bronze -> silver -> gold for {DAYS} days", "Feast apply",
          "online store, training sets, baseline model, Trino analytics", "streaming sensor and runs"]


@pytest.fixture(scope="module")
def demo_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The demo's namespace on the running stack; Trino points back at the suite's database afterwards."""
    own = dataclasses.replace(settings, **NAMESPACE, dagster_home=tmp_path_factory.mktemp("dagster"))  # type: ignore[arg-type]
    for service in ("postgres", "redis", "kafka", "minio", "trino"):
        ensure_running(service, own)  # creates the namespace's database and bucket; Trino's catalogs
    yield own
    ensure_running("trino", settings)


@pytest.fixture(scope="module")
def summary(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """Run the demo on the first LIMIT of SAMPLES generated samples; its summary and the slice's folder."""
    folder, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("demo")
    generate(GeneratorConfig(rows=SAMPLES, seed=3, out=folder, progress=False, malformed_fraction=0.002,
                             event_time=event_time_config(demo_settings)))
    env = dict(os.environ, **{f"TFP_{k.upper()}": str(getattr(demo_settings, k))
                              for k in [*NAMESPACE, "dagster_home"]})
    result = subprocess.run(
        [sys.executable, "-m", "taobao_assets.cli", "demo", "--no-ui", "--source", str(folder),
         "--limit", str(LIMIT), "--summary-json", str(out / "summary.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, f"demo failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "Dagster UI:" in result.stdout and "example online lookup" in result.stdout
    return json.loads((out / "summary.json").read_text()), demo_settings.state_dir / f"aliccp-first-{LIMIT}"


def _records(folder: Path, kind: FileKind) -> tuple[int, int]:
    """Lines of ``kind`` in the slice, and how many of them parse (the rest are quarantined)."""
    lines = good = 0
    for split in ("train", "test"):
        for record in parse_file(folder / kind.file_name(split)):
            lines += 1
            good += not isinstance(record, QuarantineRecord)
    return lines, good


def test_demo_runs_every_stage_with_every_check_passing(summary: tuple[dict[str, Any], Path]) -> None:
    result, _ = summary
    assert [s["name"] for s in result["stages"]] == STAGES
    assert result["checks_passed"] > 0 and result["checks_failed"] == []
    # the baseline is scored on the last day after training on the ones before it
    model = result["model"]
    assert model["trained_on_days"] == DAYS - 1 and 0.0 <= model["auc"] <= 1.0


def test_summary_rows_equal_the_slice_and_the_stores(
    summary: tuple[dict[str, Any], Path], demo_settings: Settings,
) -> None:
    result, folder = summary
    rows = result["rows"]
    samples, good_samples = _records(folder, FileKind.SAMPLE_SKELETON)
    common, good_common = _records(folder, FileKind.COMMON_FEATURES)
    assert samples == LIMIT
    assert not (folder / MALFORMED_FILE).exists()  # the slice is cut from raw lines, not from the truth
    prefix = demo_settings.topic_prefix
    assert rows[f"bronze {prefix}.samples records"] == samples
    assert rows[f"bronze {prefix}.common_features records"] == common
    assert rows["silver impressions rows"] == good_samples
    assert rows["silver user_context rows"] == good_common
    assert rows["silver quarantine rows"] == samples - good_samples + common - good_common

    trino = TrinoResource.from_settings(demo_settings)
    for table in ("impressions", "user_context", "quarantine"):
        assert trino.query(f"SELECT count(*) FROM iceberg.silver.{table}")[0][0] == rows[f"silver {table} rows"]
    with PostgresResource.from_settings(demo_settings).connect() as conn, conn.cursor() as cur:
        for gold in GOLD_TABLES:
            cur.execute(f"SELECT count(*) FROM {gold.qualified_name}")
            assert cur.fetchone()[0] == rows[f"gold {gold.name} rows"] > 0


def test_summary_lookup_equals_the_latest_gold_rows(
    summary: tuple[dict[str, Any], Path], demo_settings: Settings,
) -> None:
    lookup = summary[0]["lookup"]
    with PostgresResource.from_settings(demo_settings).connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT impressions_7d, ctr_7d FROM gold.user_features WHERE user_id = %s "
                    "ORDER BY event_timestamp DESC LIMIT 1", (lookup["user_id"],))
        impressions_7d, ctr_7d = cur.fetchone()
    values = lookup["values"]
    assert values["user_features__impressions_7d"] == impressions_7d
    assert values["user_features__ctr_7d"] == pytest.approx(ctr_7d)
