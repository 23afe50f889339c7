"""A backfill of a day range launched the way the UI launches it, run by Dagster's daemon.

``dagster dev`` (webserver + daemon + code server, on its own instance folder) serves the project's
workspace; the test sends the UI's ``launchPartitionBackfill`` GraphQL mutation for bronze, silver
and gold over the last two days and waits for the daemon to finish it. Then:

- every asset partition was materialized in dependency order: a day's silver after that day's
  bronze, a day's gold after the silver of every day of its window that the backfill covered;
- every run succeeded and every asset check in them passed;
- the re-run days are identical to what the session's in-process runs wrote (silver and gold).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from dagster import AssetKey, AssetSelection, DagsterEventType, DagsterInstance, RunsFilter

from deploy.service import free_port, stop_process_group
from taobao_assets.definitions import build_definitions
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.instance import prepare_home
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.spark import SparkResource
from taobao_assets.settings import REPO_ROOT, Settings
from taobao_assets_tests.conftest import DAILY, silver_digest

#: Long enough for the daemon's ticks and a Spark start per run, on a busy 2-core machine.
BACKFILL_TIMEOUT = 900
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}"""
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class DagsterDev:
    """``dagster dev`` on the project's workspace and its own instance folder, as a user starts the UI."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home, self.log, self.port = home, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        dagster = Path(sys.executable).parent / "dagster"
        self.process = subprocess.Popen(
            [str(dagster), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO_ROOT, env=dict(os.environ, DAGSTER_HOME=str(home)), start_new_session=True,
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = requests.post(self.url, json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def launch_backfill(self, params: dict[str, Any], timeout: float = 180) -> str:
        """The backfill's id, once the code location has loaded and accepted the request."""
        deadline, last = time.monotonic() + timeout, "dagster dev did not answer"
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"dagster dev exited: {self.tail()}"
            try:
                result = self.graphql(LAUNCH, params=params)["launchPartitionBackfill"]
            except requests.ConnectionError:
                result = {"__typename": "starting"}
            if result["__typename"] == "LaunchBackfillSuccess":
                return str(result["backfillId"])
            last = str(result)
            time.sleep(2)
        raise AssertionError(f"backfill not accepted within {timeout}s: {last}\n{self.tail()}")

    def wait(self, backfill_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.graphql(STATUS, id=backfill_id)["partitionBackfillOrError"]
            if status.get("status") in DONE:
                return str(status["status"])
            time.sleep(3)
        raise AssertionError(f"backfill {backfill_id} not done within {timeout}s\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_process_group(self.process, signal.SIGINT, wait=60)


@pytest.fixture
def dagster_dev(tmp_path: Path, settings: Settings) -> Iterator[DagsterDev]:
    server = DagsterDev(prepare_home(settings, tmp_path / "dagster"), tmp_path / "dagster-dev.log")
    try:
        yield server
    finally:
        server.stop()


def _gold_digest(postgres: PostgresResource, days: list[str]) -> dict[str, tuple[int, str]]:
    """Per gold table: rows and an order-independent digest of every row of ``days``."""
    ends = [date.fromisoformat(d) + timedelta(days=1) for d in days]
    digest = {}
    with postgres.connect() as conn, conn.cursor() as cur:
        for table in GOLD_TABLES:
            cur.execute(f"SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))) "
                        f"FROM {table.qualified_name} t WHERE event_timestamp::date = ANY(%s)", (ends,))
            digest[table.name] = cur.fetchone()
    return digest


def _materialized_at(instance: DagsterInstance, key: AssetKey, run_ids: set[str]) -> dict[str, float]:
    """When the backfill's runs materialized each partition of ``key``."""
    records = instance.fetch_materializations(key, limit=1000).records
    return {r.partition_key: r.timestamp for r in records if r.run_id in run_ids and r.partition_key}


def test_backfill_from_the_ui_materializes_days_in_dependency_order(
    gold: PostgresResource, spark: SparkResource, settings: Settings, dagster_dev: DagsterDev,
) -> None:
    days = DAILY.get_partition_keys()[-2:]
    graph = build_definitions(settings).resolve_asset_graph()
    layers = {group: sorted(AssetSelection.groups(group).resolve(graph)) for group in ("bronze", "silver", "gold")}
    before = {day: silver_digest(spark, settings, day) for day in days}, _gold_digest(gold, days)

    backfill_id = dagster_dev.launch_backfill({
        "partitionNames": days,
        "assetSelection": [{"path": key.path} for keys in layers.values() for key in keys],
        "title": "test backfill",
    })
    status = dagster_dev.wait(backfill_id, BACKFILL_TIMEOUT)

    instance = DagsterInstance.from_config(str(dagster_dev.home))
    runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
    failed = [r.run_id for r in runs if not r.is_success]
    assert status == "COMPLETED_SUCCESS" and runs and not failed, (status, failed, dagster_dev.tail())
    run_ids = {r.run_id for r in runs}
    checks = [e.dagster_event for run in run_ids
              for e in instance.all_logs(run, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)]
    assert checks and all(c is not None and c.event_specific_data.passed for c in checks)  # type: ignore[union-attr]

    at = {key: _materialized_at(instance, key, run_ids) for keys in layers.values() for key in keys}
    assert all(set(partitions) == set(days) for partitions in at.values()), at
    for i, day in enumerate(days):
        for silver in layers["silver"]:
            assert all(at[silver][day] > at[bronze][day] for bronze in layers["bronze"])
        for gold_key in layers["gold"]:
            # the gold window reads silver of this day and the days before it
            assert all(at[gold_key][day] > at[silver][d] for silver in layers["silver"] for d in days[: i + 1])

    after = {day: silver_digest(spark, settings, day) for day in days}, _gold_digest(gold, days)
    assert after == before
