"""The main job (``make demo``'s command) end to end on a tiny data set, its summary checked against the stores.

The demo runs as a user runs it (``python -m taobao_assets.cli demo``, a separate process) in a
namespace of its own: topics, bucket, database, Feast project and Dagster instance, so it neither
reads nor overwrites the suite's shared data set. It gets a raw folder and ``--limit``, the path a
user takes with the real files. Then every number of its JSON summary is compared with the
generator's truth about the slice and with the stores queried directly, and its terminal output
is checked for what a person reads: one line per stage, the log file, a failure's cause.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, job, op

from taobao_assets.console import NAME_WIDTH, DemoLog, StageConsole, shown_name, to_log_file
from taobao_assets.demo import StageFailed, Summary
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.partitions import event_time_config
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.trino import TrinoResource
from taobao_assets.settings import Settings
from taobao_assets.source.format import FileKind
from taobao_assets.source.generate import MALFORMED_FILE, GeneratorConfig, generate
from taobao_assets.source.parser import QuarantineRecord, parse_file
from taobao_assets_tests.conftest import REPO, ensure_running

SAMPLES, LIMIT, DAYS = 4_000, 3_000, 3
NAMESPACE = {"topic_prefix": "demo-test.aliccp", "lake_bucket": "lake-demo-test", "postgres_db": "tfp_demo_test",
             "feast_project": "taobao_demo_test", "event_days": DAYS}
STAGES = ["source data", "replay into Kafka", f"bronze -> silver -> gold for {DAYS} days", "Feast apply",
          "online store, training sets, baseline model, Trino analytics", "streaming sensor and runs"]
#: The demo's terminal output: a line naming the log, one per stage, the summary (~25 lines).
MAX_STDOUT_LINES = 40
#: What the driver's JVM prints as it starts, before any logging: Spark's launcher always adds the
#: incubator module, and the JDK says so on stderr with no option to stop it.
JVM_NOTICE = "WARNING: Using incubator modules: jdk.incubator.vector"


@pytest.fixture(scope="module")
def demo_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The demo's namespace on the running stack; Trino points back at the suite's database afterwards."""
    own = dataclasses.replace(settings, **NAMESPACE, dagster_home=tmp_path_factory.mktemp("dagster"))  # type: ignore[arg-type]
    for service in ("postgres", "redis", "kafka", "minio", "trino"):
        ensure_running(service, own)  # creates the namespace's database and bucket; Trino's catalogs
    yield own
    ensure_running("trino", settings)


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "taobao_assets.cli", "demo", "--no-ui", *args]


def namespace_env(settings: Settings) -> dict[str, str]:
    """The environment of a demo process in ``settings``' namespace."""
    return dict(os.environ, **{f"TFP_{k.upper()}": str(getattr(settings, k)) for k in [*NAMESPACE, "dagster_home"]})


@pytest.fixture(scope="module")
def demo_run(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the demo on the first LIMIT of SAMPLES generated samples; the process and its summary's path."""
    folder, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("demo")
    generate(GeneratorConfig(rows=SAMPLES, seed=3, out=folder, progress=False, malformed_fraction=0.002,
                             event_time=event_time_config(demo_settings)))
    result = subprocess.run(
        demo_command("--source", str(folder), "--limit", str(LIMIT), "--summary-json", str(out / "summary.json")),
        cwd=REPO, env=namespace_env(demo_settings), capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, f"demo failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result, out / "summary.json"


@pytest.fixture(scope="module")
def summary(demo_run: tuple[subprocess.CompletedProcess[str], Path], demo_settings: Settings
            ) -> tuple[dict[str, Any], Path]:
    """The demo's JSON summary and the slice's folder."""
    result, summary_json = demo_run
    assert "Dagster UI:" in result.stdout and "example online lookup" in result.stdout
    return json.loads(summary_json.read_text()), demo_settings.state_dir / f"aliccp-first-{LIMIT}"


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


def _log_path(output: str) -> Path:
    """The demo's log file, as its output names it."""
    match = re.search(r"(/\S+/demo-[\d-]+\.log)", output)
    assert match, f"no log file named in:\n{output}"
    return Path(match.group(1))


def test_console_shows_one_line_per_stage_and_the_log(demo_run: tuple[subprocess.CompletedProcess[str], Path]
                                                      ) -> None:
    result, _ = demo_run
    lines = result.stdout.splitlines()
    assert len(lines) <= MAX_STDOUT_LINES, result.stdout
    stage_lines = [line for line in lines if line.startswith("✓ ")]
    assert [line[2:2 + NAME_WIDTH].rstrip() for line in stage_lines] == [shown_name(name) for name in STAGES]
    # the per-day stages count their days
    assert sum(f"{DAYS}/{DAYS} days" in line for line in stage_lines) == 2
    # Dagster's events went to the log file, not to the terminal
    assert " - DEBUG - " not in result.stdout + result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip() and line != JVM_NOTICE] == []
    log = _log_path(result.stdout).read_text()
    assert "daily_batch" in log and "RUN_SUCCESS" in log and "STEP_SUCCESS" in log


def test_a_failing_stage_prints_its_cause_and_the_log(tmp_path: Path) -> None:
    empty = tmp_path / "no-files"
    empty.mkdir()
    # It fails before it needs a server, so its state (and log) can be its own.
    env = dict(os.environ, TFP_STATE_DIR=str(tmp_path / "state"), TFP_DAGSTER_HOME=str(tmp_path / "dagster"))
    result = subprocess.run(demo_command("--source", str(empty)), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1
    assert "✗ source data" in result.stdout
    assert f"FAILED: stage 'source data' failed: FileNotFoundError: {empty} holds no raw Ali-CCP files" in result.stderr
    log = _log_path(result.stderr)
    assert f"log: {log}" in result.stderr and log.parent == tmp_path / "state" / "logs"
    assert "Traceback" in log.read_text()


@op
def fails_on_a_day() -> None:
    raise ValueError("no rows for 2026-11-01")


@job
def broken() -> None:
    fails_on_a_day()


def test_a_failed_run_names_its_step_and_error_and_logs_to_the_file(tmp_path: Path,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    with DemoLog(tmp_path) as log:
        job_def, config = to_log_file(broken, None)
        result = job_def.execute_in_process(run_config=config, instance=DagsterInstance.ephemeral(),
                                            raise_on_error=False)
    summary = Summary(StageConsole(io.StringIO()))
    with pytest.raises(StageFailed, match=r"broken: run \S+ failed in step fails_on_a_day: "
                                          r"ValueError: no rows for 2026-11-01"):
        summary.record(result, "broken")
    out, err = capfd.readouterr()
    assert "STEP_FAILURE" not in out + err
    events = log.path.read_text()
    assert "STEP_FAILURE" in events and "ValueError: no rows for 2026-11-01" in events
