"""The main job end to end: data -> Kafka -> bronze -> silver -> gold -> Feast -> streaming -> Trino -> summary.

``python -m taobao_assets.cli demo`` (``make demo``) runs every stage through Dagster on the
project's own instance (``<state_dir>/dagster``), so each run, materialization and check result
shows up in the Dagster UI afterwards. Each stage prints its name, its rate and its time; a failure
names the stage and where its log is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, SensorResult, build_sensor_context

from taobao_assets.settings import Settings

#: Sample lines of the default synthetic data set: a few minutes end to end on 2 cores.
DEFAULT_ROWS = 300_000


class StageFailed(RuntimeError):
    """A stage of the demo failed; the message names it and where to look."""


@dataclass
class Summary:
    stages: list[tuple[str, float, str]] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, str]]:
        print(f"\n== {name} ...", flush=True)
        note: dict[str, str] = {}
        t0 = time.monotonic()
        try:
            yield note
        except StageFailed:
            raise
        except Exception as exc:
            raise StageFailed(f"stage '{name}' failed: {exc!r}") from exc
        seconds = time.monotonic() - t0
        self.stages.append((name, seconds, note.get("detail", "")))
        print(f"== {name}: done in {seconds:.1f}s {note.get('detail', '')}", flush=True)

    def record(self, result: ExecuteInProcessResult, what: str) -> None:
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                self.checks_passed += 1
            else:
                self.checks_failed.append(f"{what}: {evaluation.asset_key.to_user_string()} {evaluation.check_name}")
        if not result.success:
            raise StageFailed(f"{what}: run {result.run_id} failed; see the Dagster UI or `dagster run logs`")


def _instance(settings: Settings) -> DagsterInstance:
    home = settings.state_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def ensure_data(settings: Settings, rows: int) -> tuple[Path, bool]:
    """The source folder (the configured raw files, or a generated default data set); whether it is new."""
    from taobao_assets.partitions import event_time_config
    from taobao_assets.source.generate import GeneratorConfig, generate

    folder = settings.source_dir
    if (folder / "sample_skeleton_train.csv").exists():
        return folder, False
    generate(GeneratorConfig(rows=rows, seed=42, out=folder, event_time=event_time_config(settings)))
    return folder, True


def run_demo(settings: Settings, defs: Definitions, rows: int = DEFAULT_ROWS) -> Summary:
    """Every stage in order; returns what was produced (the CLI prints it)."""
    from taobao_assets.jobs import batch_job, registry_job, replay_job, serving_job, streaming_job
    from taobao_assets.partitions import DAILY
    from taobao_assets.sensors.streaming import streaming_sensor
    from taobao_assets.streaming.resource import StreamingResource

    instance = _instance(settings)
    summary = Summary()
    days = DAILY.get_partition_keys()

    def run_job(name: str, **kwargs: Any) -> ExecuteInProcessResult:
        result = defs.resolve_job_def(name).execute_in_process(instance=instance, raise_on_error=False, **kwargs)
        summary.record(result, f"{name} {kwargs.get('partition_key', '')}".strip())
        return result

    with summary.stage("source data") as note:
        folder, new = ensure_data(settings, rows)
        note["detail"] = f"({'generated ' + format(rows, ',') + ' samples' if new else 'existing files'} in {folder})"
    with summary.stage("replay into Kafka"):
        # A new data set replaces what the topics held; the same one resumes or is a no-op.
        config = {"source_dir": str(folder), "reset": new}
        run_job(replay_job.name, run_config={"ops": {"replay_raw_files": {"config": config}}})
    with summary.stage(f"bronze -> silver -> gold for {len(days)} days") as note:
        for day in days:
            t0 = time.monotonic()
            run_job(batch_job.name, partition_key=day)
            print(f"   {day}: {time.monotonic() - t0:.1f}s", flush=True)
    with summary.stage("Feast apply"):
        run_job(registry_job.name)
    with summary.stage("online store, training sets, baseline model, Trino analytics"):
        for day in days:
            run_job(serving_job.name, partition_key=day)
    with summary.stage("streaming sensor and runs") as note:
        # Tick the sensor as the daemon would, and run what it requests, until it sees no lag.
        streaming = StreamingResource.from_settings(settings)
        cursor, runs = None, 0
        for _ in range(10_000):
            with build_sensor_context(instance=instance, cursor=cursor, resources={"streaming": streaming}) as ctx:
                result = streaming_sensor(ctx)
            assert isinstance(result, SensorResult), result
            cursor = result.cursor or cursor
            requests = list(result.run_requests or [])
            if not requests:
                break
            for request in requests:
                run_job(request.job_name or streaming_job.name, run_config=request.run_config, tags=request.tags)
                runs += 1
        note["detail"] = f"({runs} streaming runs)"
    return summary


def print_summary(summary: Summary, settings: Settings, facts: dict[str, Any]) -> None:
    print("\n" + "=" * 78)
    print("taobao-feature-platform: end-to-end run finished\n")
    for name, seconds, detail in summary.stages:
        print(f"  {name:<58} {seconds:8.1f}s {detail}")
    print(f"\n  asset checks passed: {summary.checks_passed}, failed: {len(summary.checks_failed)}")
    for failure in summary.checks_failed:
        print(f"    FAILED {failure}")
    for key, value in facts.items():
        print(f"  {key}: {json.dumps(value, default=str) if not isinstance(value, str) else value}")
    print(f"\n  Dagster UI:  http://127.0.0.1:{settings.dagster_port}")
    print(f"  Trino:       {settings.trino_url}  (catalogs iceberg, postgresql; see docs/trino.md)")
    print("=" * 78, flush=True)


def summary_facts(settings: Settings, defs: Definitions) -> dict[str, Any]:
    """What each layer holds now, read back from the stores themselves, and an example lookup."""
    from taobao_assets.gold_tables import GOLD_TABLES
    from taobao_assets.io_managers.bronze import load_manifest
    from taobao_assets.partitions import DAILY
    from taobao_assets.resources.postgres import PostgresResource
    from taobao_assets.resources.s3 import S3Resource
    from taobao_assets.resources.trino import TrinoResource
    from taobao_assets.retrieval import OnlineFeatures
    from taobao_assets.source.topics import COMMON_FEATURES, SAMPLES

    s3 = S3Resource.from_settings(settings)
    facts: dict[str, Any] = {
        f"bronze {topic.name} records": sum(load_manifest(s3, topic.name, day).records
                                            for day in DAILY.get_partition_keys())
        for topic in (SAMPLES, COMMON_FEATURES)
    }
    trino = TrinoResource.from_settings(settings)
    for table in ("impressions", "user_context", "quarantine"):
        facts[f"silver {table} rows (Trino)"] = trino.query(f"SELECT count(*) FROM iceberg.silver.{table}")[0][0]
    with PostgresResource.from_settings(settings).connect() as conn, conn.cursor() as cur:
        for gold in GOLD_TABLES:
            cur.execute(f"SELECT count(*) FROM {gold.qualified_name}")
            facts[f"gold {gold.name} rows"] = cur.fetchone()[0]
        cur.execute("SELECT user_id, event_timestamp FROM gold.user_category_features "
                    "ORDER BY event_timestamp DESC, impressions_7d DESC LIMIT 1")
        user_id, _ = cur.fetchone()
        cur.execute("SELECT item_id FROM gold.item_features ORDER BY event_timestamp DESC, impressions_7d DESC LIMIT 1")
        (item_id,) = cur.fetchone()
        cur.execute("SELECT category_id FROM gold.user_category_features WHERE user_id = %s "
                    "ORDER BY event_timestamp DESC, impressions_7d DESC LIMIT 1", (user_id,))
        (category_id,) = cur.fetchone()
    values = OnlineFeatures.from_settings().lookup(user_id=user_id, item_id=item_id, category_id=category_id)
    shown = {k: v for k, v in values.items() if k.endswith(("ctr_7d", "impressions_7d", "impressions_today"))}
    facts["example online lookup"] = (
        f"python -m taobao_assets.retrieval online --user {user_id} --item {item_id} --category {category_id}"
        f"\n    -> {json.dumps(shown, default=str)}"
    )
    return facts
