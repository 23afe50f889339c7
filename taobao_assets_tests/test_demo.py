"""The main job (``make demo``'s command) end to end on a tiny data set, its summary checked against the stores.

The demo runs as a user runs it (``python -m taobao_assets.cli demo``, a separate process) in a
namespace of its own: topics, bucket, database, Feast project and Dagster instance, so it neither
reads nor overwrites the suite's shared data set. It gets a raw folder and ``--limit``, the path a
user takes with the real files. Then every number of its JSON summary is compared with the
generator's truth about the slice and with the stores queried directly, and its terminal output
is checked for what a person reads: one line per stage, the log file, a failure's cause. Last, every command of the
README's "where to look" table runs as written, in the demo's namespace: the way a user checks a
``make demo``. Each command is looked up in the README first, so the two cannot drift apart; the
Feast commands run from a folder whose ``feature_repo/`` holds the namespace's configuration
(``make demo`` writes the checkout's), and servers get free ports instead of the README's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from dagster import DagsterInstance, job, op
from scipy.stats import rankdata

from deploy.service import free_port, stop_process_group
from taobao_assets.assets.serving import MODEL_PREFIX, model_inputs, training_set_key
from taobao_assets.console import NAME_WIDTH, DemoLog, StageConsole, shown_name, to_log_file
from taobao_assets.demo import StageFailed, Summary, check_trino_serves, projected_seconds
from taobao_assets.feast_repo import REPO_MODULE, write_config
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.partitions import daily_partitions, event_time_config
from taobao_assets.resources.feast import FeastResource
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.resources.trino import TrinoResource
from taobao_assets.settings import GENERATED_SECRETS, Settings
from taobao_assets.source.format import FileKind
from taobao_assets.source.generate import MALFORMED_FILE, GeneratorConfig, generate
from taobao_assets.source.parser import QuarantineRecord
from taobao_assets_tests.conftest import REPO, ensure_running
from taobao_assets_tests.parser_reference import parse_file

pytestmark = pytest.mark.stack  # the demo starts its own namespace's services
SAMPLES, LIMIT, DAYS = 4_000, 3_000, 3
NAMESPACE = {"topic_prefix": "demo-test.aliccp", "lake_bucket": "lake-demo-test", "postgres_db": "tfp_demo_test",
             "feast_project": "taobao_demo_test", "event_days": DAYS}
STAGES = ["source data", "replay into Kafka", f"bronze -> silver -> gold for {DAYS} days", "Feast apply",
          "online store, training sets, baseline model, Trino analytics", "streaming sensor and runs",
          "streaming = batch, day by day"]
#: The demo's terminal output: a line naming the log, one per stage, the projected total after the
#: first day, the summary (its lookup, model and freshness lines included).
MAX_STDOUT_LINES = 41
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
    for service in ("postgres", "trino"):  # the suite's database first: run alone, nothing made it yet
        ensure_running(service, settings)


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "taobao_assets.cli", "demo", "--no-ui", *args]


def namespace_env(settings: Settings) -> dict[str, str]:
    """The environment of a demo process in ``settings``' namespace."""
    return dict(os.environ, **{f"TFP_{k.upper()}": str(getattr(settings, k)) for k in [*NAMESPACE, "dagster_home"]})


@pytest.fixture(scope="module")
def demo_env(demo_settings: Settings) -> dict[str, str]:
    return namespace_env(demo_settings)


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


def test_demo_runs_every_stage_with_every_check_passing(summary: tuple[dict[str, Any], Path],
                                                        demo_settings: Settings) -> None:
    result, _ = summary
    assert [s["name"] for s in result["stages"]] == STAGES
    assert result["checks_passed"] > 0 and result["checks_failed"] == []
    # The stream applied every day exactly as gold counted it.
    assert result["streaming_vs_batch"] == dict.fromkeys(daily_partitions(demo_settings).get_partition_keys(), 1.0)
    # the baseline is scored on the last day after training on the ones before it
    model = result["model"]
    assert model["trained_on_days"] == DAYS - 1
    # projected after the first batch day: the stages before it, then the batch and the later stages
    before = sum(s["seconds"] for s in result["stages"][:2])
    assert result["projected_seconds"] > before


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


def test_projection_counts_every_day_at_the_first_days_pace_and_the_later_stages_as_long() -> None:
    # 40 s before the batch, 7 days of 10 s, then 70 s more for serving and streaming
    assert projected_seconds(40.0, 10.0, 7) == 40.0 + 70.0 + 70.0


def test_console_shows_one_line_per_stage_and_the_log(demo_run: tuple[subprocess.CompletedProcess[str], Path]
                                                      ) -> None:
    result, _ = demo_run
    lines = result.stdout.splitlines()
    assert len(lines) <= MAX_STDOUT_LINES, result.stdout
    stage_lines = [line for line in lines if line.startswith("✓ ")]
    assert [line[2:2 + NAME_WIDTH].rstrip() for line in stage_lines] == [shown_name(name) for name in STAGES]
    # the per-day stages count their days
    assert sum(f"{DAYS}/{DAYS} days" in line for line in stage_lines) == 3
    assert sum(line.startswith("projected total ") for line in lines) == 1
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
    assert f"FAILED stage 'source data': FileNotFoundError: {empty} holds no raw Ali-CCP files" in result.stderr
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


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties at their mean rank."""
    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_baseline_auc_is_the_stored_model_scored_on_the_last_training_set(
    summary: tuple[dict[str, Any], Path], demo_settings: Settings,
) -> None:
    """The summary's AUC, recomputed here from the model and the day's training set in the lake."""
    model = summary[0]["model"]
    s3 = S3Resource.from_settings(demo_settings)
    stored = pickle.loads(s3.get_bytes(f"{MODEL_PREFIX}/day={model['day']}/model.pickle"))
    test_day = pd.read_parquet(io.BytesIO(s3.get_bytes(training_set_key(model["day"]))))
    scores = stored["model"].predict_proba(model_inputs(test_day, stored["columns"]))[:, 1]
    assert len(stored["trained_on"]) == model["trained_on_days"] == DAYS - 1
    assert model["auc"] == pytest.approx(_auc(test_day["click"].to_numpy(), scores), abs=1e-12)


# The README's "where to look" commands, each run as written once the demo has run.

README = (REPO / "README.md").read_text()
#: Where ``make`` puts the commands (``python``, ``feast``, ``psql`` stays the system's).
VENV_BIN = Path(sys.executable).parent


def readme(command: str) -> str:
    """``command`` as the README shows it (the test fails when the README no longer does)."""
    assert command in README, f"the README no longer shows {command!r}"
    return command


def shell(command: str, env: dict[str, str], cwd: Path = REPO, **run: Any) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as a user's shell would, with the venv first on the PATH (``make`` puts it there)."""
    env = {**env, "PATH": f"{VENV_BIN}:{env.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, **run)


@contextmanager
def server(command: str, env: dict[str, str], cwd: Path, ready: Callable[[], bool]) -> Iterator[None]:
    """A long-running command in its own process group, until ``ready``; stopped with its children."""
    env = {**env, "PATH": f"{VENV_BIN}:{env.get('PATH', '')}"}
    process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not _answers(ready):
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.communicate(timeout=10)[0] if process.poll() is not None else "(still running)"
                pytest.fail(f"{command!r} did not come up: {output[-3000:]}")
            time.sleep(1)
        yield
    finally:
        stop_process_group(process)


def _answers(ready: Callable[[], bool]) -> bool:
    try:
        return ready()
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def feast_folder(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``feature_repo/`` is the checkout's, configured for the demo's namespace."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "feature_repo").mkdir()
    shutil.copy(REPO_MODULE, folder / "feature_repo" / "repo.py")
    write_config(folder / "feature_repo" / "feature_store.yaml", FeastResource.from_settings(demo_settings))
    return folder


def test_online_lookup_command_prints_the_summary_lookup(summary: tuple[dict[str, Any], Path],
                                                         demo_env: dict[str, str]) -> None:
    lookup = summary[0]["lookup"]
    command = readme("python -m taobao_assets.retrieval online --user U --item I --category C")
    command = (command.replace("--user U", f"--user {lookup['user_id']}")
               .replace("--item I", f"--item {lookup['item_id']}")
               .replace("--category C", f"--category {lookup['category_id']}"))
    out = shell(command, demo_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(json.dumps(lookup["values"], default=str))


def test_freshness_command_times_each_hop_of_the_last_day(summary: tuple[dict[str, Any], Path],
                                                        demo_env: dict[str, str], demo_settings: Settings) -> None:
    result, path = summary
    day = daily_partitions(demo_settings).get_partition_keys()[-1]
    out = shell(readme("python -m taobao_assets.cli freshness"), demo_env)
    assert out.returncode == 0, out.stderr
    assert f"samples of {day}" in out.stdout and "kafka to bronze" in out.stdout, out.stdout
    freshness = result["freshness"]
    assert freshness["day"] == day
    lags = freshness["lags_s"]
    assert all(p50 is not None and p99 is not None and p50 <= p99 for p50, p99 in lags.values()), lags
    # The layers were written in order, each after the one it reads.
    assert all(lags[hop][0] >= 0 for hop in ("kafka_to_bronze", "bronze_to_silver", "silver_to_gold",
                                             "gold_to_online")), lags
    # The replay sent the day's records while the demo ran, after the simulated day itself.
    finished = path.stat().st_mtime
    started = finished - sum(stage["seconds"] for stage in result["stages"]) - 60
    day_start = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()
    assert started - (day_start + 86_400) <= lags["event_to_kafka"][0] <= finished - day_start, lags


def test_psql_command_reaches_the_gold_tables(summary: tuple[dict[str, Any], Path],
                                              demo_env: dict[str, str]) -> None:
    command = readme("""psql "$(.venv/bin/python -c 'from taobao_assets.settings import get_settings; """
                     """print(get_settings().postgres_dsn)')\"""")
    out = shell(command + " -At", demo_env, input="SELECT count(*) FROM gold.user_features;\n")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == summary[0]["rows"]["gold user_features rows"]


def test_feast_serve_answers_the_summary_lookup(summary: tuple[dict[str, Any], Path], demo_env: dict[str, str],
                                                feast_folder: Path) -> None:
    lookup = summary[0]["lookup"]
    port = free_port()
    command = readme("feast -c feature_repo serve -p 6566").replace("6566", str(port))
    url = f"http://127.0.0.1:{port}"
    with server(command, demo_env, feast_folder, lambda: requests.get(f"{url}/health", timeout=5).ok):
        body = readme('{"feature_service": "ctr_model_v1", "entities": {"user_id": [U], "item_id": [I], '
                      '"category_id": [C]}, "full_feature_names": true}')
        for key, value in (("[U]", "user_id"), ("[I]", "item_id"), ("[C]", "category_id")):
            body = body.replace(key, f"[{lookup[value]}]")
        reply = requests.post(f"{url}/get-online-features", data=body, timeout=30,
                              headers={"Content-Type": "application/json"})
        reply.raise_for_status()
        answer = reply.json()
    served = {name: result["values"][0]
              for name, result in zip(answer["metadata"]["feature_names"], answer["results"], strict=True)}
    assert served["user_features__impressions_7d"] == lookup["values"]["user_features__impressions_7d"]
    assert served["item_features__ctr_7d"] == pytest.approx(lookup["values"]["item_features__ctr_7d"])


def test_feast_ui_lists_the_demo_project(demo_settings: Settings, demo_env: dict[str, str],
                                         feast_folder: Path) -> None:
    port = free_port()
    command = readme("feast -c feature_repo ui -p 8888").replace("8888", str(port))
    url = f"http://127.0.0.1:{port}"
    with server(command, demo_env, feast_folder, lambda: requests.get(url, timeout=5).ok):
        projects = requests.get(f"{url}/projects-list.json", timeout=30).json()
    assert demo_settings.feast_project in json.dumps(projects)


RESOURCES_QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes { allTopLevelResourceDetails {
    name configuredValues { key value type }
    nestedResources { name resource { name configuredValues { key value type } } } } } } } }"""
RUNS_QUERY = "{ runsOrError { ... on Runs { results { status runConfigYaml tags { key value } } } } }"


def test_dagster_ui_command_serves_the_demo_instance_and_shows_no_secret(
        demo_run: object, demo_settings: Settings, demo_env: dict[str, str]) -> None:
    """What the UI shows anyone who reaches it (resources, runs), the instance's storage and the logs hold
    no password: resources name the environment variable of each secret instead."""
    port = free_port()
    command = readme("python -m taobao_assets.cli ui")
    url = f"http://127.0.0.1:{port}"
    with server(command, {**demo_env, "TFP_DAGSTER_PORT": str(port)}, REPO,
                lambda: requests.get(f"{url}/server_info", timeout=5).ok):
        answers = {name: requests.post(f"{url}/graphql", json={"query": query}, timeout=60).json()
                   for name, query in (("runs", RUNS_QUERY), ("resources", RESOURCES_QUERY))}
    runs = answers["runs"]["data"]["runsOrError"]["results"]
    assert runs and all(run["status"] == "SUCCESS" for run in runs)
    secrets = {name: getattr(demo_settings, name) for name in GENERATED_SECRETS}
    shown = json.dumps(answers)
    assert [name for name, secret in secrets.items() if secret in shown] == []
    # The resources are there and name their secrets' variables (so the search above saw them).
    for variable in ("TFP_POSTGRES_PASSWORD", "TFP_REDIS_PASSWORD", "TFP_MINIO_SECRET_KEY"):
        assert f'"value": "{variable}", "type": "ENV_VAR"' in shown, variable
    stored = [p for folder in (demo_settings.dagster_home, demo_settings.logs_dir) for p in folder.rglob("*")
              if p.is_file()]
    assert stored
    leaks = [(name, str(path)) for path in stored for name, secret in secrets.items()
             if secret.encode() in path.read_bytes()]
    assert leaks == []
    # Files that must hold a secret (credentials, server and Feast configuration) are the owner's alone.
    holders = [path for path, data in _small_files(demo_settings.state_dir, REPO / "feature_repo")
               if any(secret.encode() in data for secret in secrets.values())]
    assert any(p.name == "credentials.json" for p in holders)
    assert [(str(p), oct(p.stat().st_mode & 0o777)) for p in holders if p.stat().st_mode & 0o077] == []


def _small_files(*folders: Path, limit: int = 1 << 20) -> Iterator[tuple[Path, bytes]]:
    """Every regular file up to ``limit`` bytes under ``folders`` with its bytes (servers' data files are
    larger or hold no secret)."""
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                path = Path(root) / name
                with contextlib.suppress(OSError):  # a file a server removed while we walked
                    if path.is_file() and not path.is_symlink() and path.stat().st_size <= limit:
                        yield path, path.read_bytes()


def test_web_consoles_answer(demo_settings: Settings) -> None:
    readme("http://127.0.0.1:18080/ui/")
    readme("http://127.0.0.1:19001")
    assert requests.get(f"{demo_settings.trino_url}/ui/", timeout=30).ok
    assert requests.get(f"http://{demo_settings.minio_host}:{demo_settings.minio_console_port}", timeout=30).ok


def test_the_demo_stops_before_its_first_stage_when_trino_serves_other_settings(
    demo_settings: Settings, settings: Settings
) -> None:
    """Trino reads its catalogs at start: here it serves the demo's namespace, so a run with the
    suite's settings would find none of its tables, in serving, after every batch day."""
    check_trino_serves(demo_settings)
    with pytest.raises(StageFailed) as failure:
        check_trino_serves(settings)
    assert f"database {settings.postgres_db!r}" in failure.value.cause
    assert "restart it with them: make up" in failure.value.cause
