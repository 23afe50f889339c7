"""The main job end to end: data -> Kafka -> bronze -> silver -> gold -> Feast -> streaming -> Trino -> summary.

``python -m taobao_assets.cli demo`` (``make demo``) runs every stage through Dagster on the
project's own instance (``settings.dagster_home``), so each run, materialization and check result
shows up in the Dagster UI afterwards. Each stage is one line on the terminal (its progress, rate
and time; :mod:`taobao_assets.console`); the runs' events go to the demo's log file. A failure
names the stage, the failed step and its error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import AssetCheckSeverity, Definitions, ExecuteInProcessResult, SensorResult, build_sensor_context

from taobao_assets.atomic_file import write_atomic
from taobao_assets.console import StageConsole, StageLine, to_log_file
from taobao_assets.instance import project_instance
from taobao_assets.settings import Settings

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

    from taobao_assets.quality.freshness import HopFreshness

#: Sample lines of the default synthetic data set: a few minutes end to end on 2 cores.
DEFAULT_ROWS = 300_000
#: Lines of a failed step's error shown with the failure; the log file has all of it.
ERROR_LINES = 6

#: Written to the demo's log file (console.DemoLog).
log = logging.getLogger(__name__)
#: How long the stages after bronze -> silver -> gold (Feast apply, serving, streaming and its
#: comparison with gold) take, as a multiple of that stage: 0.75 to 1.33 in ``bench.pipeline``'s runs
#: from 100 k to 10 M samples. The projection after the first day counts them as long as it.
LATER_STAGES_PER_BATCH = 1.0


class StageFailed(RuntimeError):
    """A stage of the demo failed: which one, and why, as one line of text (the log has the rest).

    Made where a run fails (``cause`` only: the run's failed step and its error) or around any
    other error of a stage (:meth:`in_stage`), which also names the stage. The cause is kept as
    text, the type and message of what went wrong, so the command line never shows this wrapper's
    own repr or a traceback: :meth:`report` is the line it prints.
    """

    def __init__(self, cause: str, stage: str | None = None) -> None:
        super().__init__(cause if stage is None else f"stage '{stage}' failed: {cause}")
        self.cause, self.stage = cause, stage

    @classmethod
    def in_stage(cls, stage: str, error: Exception) -> StageFailed:
        """``error``, raised while ``stage`` ran, as the failure of that stage."""
        if isinstance(error, StageFailed):
            return cls(error.cause, stage)
        message = str(error).strip()
        return cls(f"{type(error).__name__}: {message}" if message else type(error).__name__, stage)

    def report(self, log: Path) -> str:
        """The one line the CLI prints: the stage, the cause's first line (… when it has more), the log."""
        first, *rest = self.cause.strip().splitlines() or [""]
        where = "" if self.stage is None else f" stage '{self.stage}'"
        return f"FAILED{where}: {first.strip()}{' …' if rest else ''} (log: {log}, service logs beside it)"


@dataclass(frozen=True)
class StageTime:
    """A stage that ran: its seconds, its line's last detail, and when it ended (Unix time, so a
    benchmark sampling memory from outside can tell which stage a sample fell in)."""

    name: str
    seconds: float
    detail: str
    ended_at: float


@dataclass
class Summary:
    console: StageConsole = field(repr=False)
    stages: list[StageTime] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    #: Checks of warning severity that did not pass (drift): shown, but not a failed demo.
    checks_warned: list[str] = field(default_factory=list)
    #: Per day, the share of keys whose streaming counters equal gold's (``quality/streaming_vs_batch``).
    streaming_vs_batch: dict[str, float] = field(default_factory=dict)
    #: The whole run's seconds as projected once the first day of bronze -> silver -> gold was done.
    projected_seconds: float | None = None

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "") -> Iterator[StageLine]:
        """Run a stage on its console line; ``total`` units of work (e.g. days) when it knows them."""
        with self.console.stage(name, total, unit) as line:
            try:
                yield line
            except Exception as exc:
                log.exception(f"stage '{name}' failed")
                raise StageFailed.in_stage(name, exc) from exc
        self.stages.append(StageTime(name, line.seconds, line.detail, time.time()))
        log.info(f"stage '{name}' done in {line.seconds:.1f}s {line.detail}".rstrip())

    def project(self, first_day: float, days: int) -> None:
        """Print the whole run's projected time, from the stages done and the first day of the batch."""
        self.projected_seconds = projected_seconds(sum(s.seconds for s in self.stages), first_day, days)
        message = (f"projected total {self.projected_seconds / 60:.0f} min: {days} days at {first_day:.0f} s/day "
                   f"of bronze -> silver -> gold, the later stages as long again")
        log.info(message)
        self.console.print(message)

    def record(self, result: ExecuteInProcessResult, what: str) -> None:
        for evaluation in result.get_asset_check_evaluations():
            name = f"{what}: {evaluation.asset_key.to_user_string()} {evaluation.check_name}"
            if evaluation.passed:
                self.checks_passed += 1
            elif evaluation.severity == AssetCheckSeverity.WARN:
                self.checks_warned.append(name)
            else:
                self.checks_failed.append(name)
        if not result.success:
            raise StageFailed(f"{what}: run {result.run_id} failed {failure_cause(result)}")


def projected_seconds(elapsed: float, first_day: float, days: int) -> float:
    """The whole run's seconds: ``elapsed`` before the batch stage, its ``days`` at the pace of the first
    (``first_day`` seconds), then the later stages at LATER_STAGES_PER_BATCH times the batch stage.

    Event time spreads the samples evenly over the days, so the first day sets the pace. It is a
    floor at scale: gold reads up to 7 days of silver, so later days take longer than the first
    (at 10 M samples the run took half as long again as projected).
    """
    batch = first_day * days
    return elapsed + batch * (1 + LATER_STAGES_PER_BATCH)


def failure_cause(result: ExecuteInProcessResult) -> str:
    """Where and why a run failed: each failed step (else the run) with the error that started it."""
    causes = [f"in step {event.step_key}: {_root_error(event.step_failure_data.error)}"
              for event in result.get_step_failure_events()]
    if not causes:
        event = result.get_run_failure_event()
        causes = [f"({event.message}): {_root_error(event.job_failure_data.error)}"]
    return "\n".join(causes)


def _root_error(error: SerializableErrorInfo | None) -> str:
    """The innermost cause's type and message (Dagster wraps what an op raised), at most ERROR_LINES lines."""
    if error is None:
        return "no error recorded"
    while error.cause is not None:
        error = error.cause
    lines = error.message.strip().splitlines()
    more = f"\n  ... {len(lines) - ERROR_LINES} more lines in the log" if len(lines) > ERROR_LINES else ""
    return "\n  ".join(lines[:ERROR_LINES]) + more


@dataclass(frozen=True)
class DataSet:
    """The raw folder a demo runs on, and whether it differs from what the topics were last fed."""

    folder: Path
    description: str
    #: The replay's identity of the folder (files and time line).
    fingerprint: str
    changed: bool


def ensure_data(settings: Settings, rows: int, source: Path | None = None, limit: int | None = None,
                progress: Callable[[str], None] = log.info) -> DataSet:
    """The raw folder to replay: ``source`` (or the configured one, generated when empty), maybe sliced.

    ``changed`` compares the folder's replay fingerprint with the one recorded after the last
    demo's replay, so switching data sets (generated, real, another limit) resets the topics and the
    stream's state instead of mixing two data sets. ``progress`` gets the slicing's reports (a
    real data set's files take minutes to scan).
    """
    from taobao_assets.partitions import event_time_config
    from taobao_assets.source.format import SPLITS, FileKind
    from taobao_assets.source.generate import TRUTH_FILE, GeneratorConfig, generate, is_complete
    from taobao_assets.source.replay import fingerprint
    from taobao_assets.source.subset import write_subset

    folder = source or settings.source_dir
    description = f"files in {folder}"
    first_file = FileKind.SAMPLE_SKELETON.file_name(SPLITS[0])
    # A generator's folder without its completion file is what an interrupted generation of an
    # older version left at the final path; real files have no truth file and are used as they are.
    interrupted = (folder / TRUTH_FILE).exists() and not is_complete(folder)
    if interrupted or not (folder / first_file).exists():
        if source is not None:
            raise FileNotFoundError(
                f"{folder} holds {'an interrupted generation' if interrupted else 'no raw Ali-CCP files'} "
                f"({first_file}, ...): give a folder with the four raw files, or leave --source out to generate")
        generate(GeneratorConfig(rows=rows, seed=42, out=folder, progress=False,
                                 event_time=event_time_config(settings)))
        description = f"generated {rows:,} samples in {folder}"
    if limit is not None:
        sliced = settings.state_dir / f"aliccp-first-{limit}"
        manifest = write_subset(folder, sliced, limit, progress)
        samples = sum(n for name, n in manifest.lines.items()
                      if FileKind.from_file_name(name) is FileKind.SAMPLE_SKELETON)
        folder, description = sliced, f"first {samples:,} samples of {folder} in {sliced}"
    identity = fingerprint(folder, event_time_config(settings))
    marker = replayed_marker(settings)
    return DataSet(folder, description, identity, not marker.exists() or marker.read_text() != identity)


def replayed_marker(settings: Settings) -> Path:
    """Where the demo records the fingerprint of the data set its last replay sent to its topics."""
    return settings.state_dir / f"demo-dataset-{settings.topic_prefix}.txt"


def check_trino_serves(settings: Settings) -> None:
    """Fail before the first stage when the stack's Trino was started with other settings.

    Trino reads its catalogs (the database and bucket they point at) from files written when it
    starts. After the tests, the running server serves the tests' database, so a demo started
    directly would find none of its tables in serving, many minutes in. ``make demo`` runs ``make up``
    first, which restarts Trino with the current settings. A Trino this checkout did not start (a
    cluster's, through ``TFP_TRINO_HOST``) is not checked.
    """
    from deploy.services.trino import Trino

    trino = Trino(settings)
    if trino.serves_other_settings():
        raise StageFailed(
            f"the running Trino (pid {trino.pid()}) was started with other settings than this run's "
            f"(database {settings.postgres_db!r}, bucket {settings.lake_bucket!r}); restart it with them: "
            f"make up (or {trino.retry_hint()})"
        )


def run_demo(settings: Settings, defs: Definitions, console: StageConsole, rows: int = DEFAULT_ROWS,
             source: Path | None = None, limit: int | None = None) -> Summary:
    """Every stage in order, each a line on ``console``; returns what was produced (the CLI prints it)."""
    from taobao_assets.assets.quality import STREAMING_VS_BATCH_KEY
    from taobao_assets.jobs import (
        daily_batch_job,
        daily_serving_job,
        feast_apply_job,
        replay_job,
        streaming_consistency_job,
        streaming_job,
    )
    from taobao_assets.partitions import daily_partitions
    from taobao_assets.sensors.streaming import streaming_sensor
    from taobao_assets.streaming.resource import StreamingResource

    check_trino_serves(settings)
    instance = project_instance(settings)
    summary = Summary(console)
    days = daily_partitions(settings).get_partition_keys()

    def run_job(name: str, run_config: Mapping[str, Any] | None = None, **kwargs: Any) -> ExecuteInProcessResult:
        job, config = to_log_file(defs.resolve_job_def(name), run_config)
        t0 = time.monotonic()
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False, **kwargs)
        what = f"{name} {kwargs.get('partition_key', '')}".strip()
        log.info(f"{what}: run {result.run_id} {'succeeded' if result.success else 'failed'} "
                 f"in {time.monotonic() - t0:.1f}s")
        summary.record(result, what)
        return result

    def run_days(line: StageLine, name: str, project: bool = False) -> None:
        """``name`` for each day in order, the line counting the days; with ``project``, the whole run's
        projected time is printed once the first day is done (a long run's first sign of its length)."""
        for day in days:
            line.note(day)
            run_job(name, partition_key=day)
            line.advance()
            if project and line.done == 1:
                summary.project(line.seconds, len(days))
        line.note("")

    with summary.stage("source data") as line:
        def progress(message: str) -> None:
            log.info(message)
            line.note(message)

        data = ensure_data(settings, rows, source, limit, progress)
        line.note(f"({data.description})")
    with summary.stage("replay into Kafka"):
        # A new data set replaces what the topics and the stream's state held; the same one
        # resumes or is a no-op.
        if data.changed:
            forget_previous_data_set(settings)
        config = {"source_dir": str(data.folder), "reset": data.changed}
        run_job(replay_job.name, run_config={"ops": {"replay_raw_files": {"config": config}}})
        replayed_marker(settings).write_text(data.fingerprint)
    with summary.stage(f"bronze -> silver -> gold for {len(days)} days", len(days), "day") as line:
        run_days(line, daily_batch_job.name, project=True)
    with summary.stage("Feast apply"):
        run_job(feast_apply_job.name)
    with summary.stage("online store, training sets, baseline model, Trino analytics", len(days), "day") as line:
        run_days(line, daily_serving_job.name)
    with summary.stage("streaming sensor and runs", unit="run") as line:
        # Tick the sensor as the daemon would, and run what it requests, until it sees no lag.
        streaming = StreamingResource.from_settings(settings)
        cursor = None
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
                line.advance()
        line.note(f"({line.done} streaming runs)")
    with summary.stage("streaming = batch, day by day", len(days), "day") as line:
        for day in days:
            line.note(day)
            compared = run_job(streaming_consistency_job.name, partition_key=day)
            (materialization,) = compared.asset_materializations_for_node(
                STREAMING_VS_BATCH_KEY.to_python_identifier())
            summary.streaming_vs_batch[day] = float(str(materialization.metadata["share_equal"].value))
            line.advance()
        line.note(f"(lowest share of keys equal {min(summary.streaming_vs_batch.values()):.4f})")
    return summary


def forget_previous_data_set(settings: Settings) -> None:
    """Clear what a new data set would not overwrite day by day: the stream's state, the online rows.

    The topics are re-created by the replay, and bronze, silver, gold and the training sets are
    rewritten per day; the stream's counters and offsets are not, and Feast's Redis store keeps
    a row over any write with an older timestamp, so the old set's later days would shadow the
    new set's earlier ones.
    """
    from taobao_assets.feast_repo import generated_repo
    from taobao_assets.streaming.resource import StreamingResource

    streaming = StreamingResource.from_settings(settings)
    streaming.state().reset()
    streaming.feast.clear_online(view.join_keys for view in generated_repo().feature_views)


def print_summary(summary: Summary, settings: Settings, facts: dict[str, Any], log_path: Path) -> None:
    """What the stores hold now and where to look next (each stage's time is on its line above)."""
    print("\n" + "=" * 78)
    print(f"taobao-feature-platform: end-to-end run finished in {sum(s.seconds for s in summary.stages):.0f}s")
    print(f"\n  asset checks passed: {summary.checks_passed}, warnings: {len(summary.checks_warned)}, "
          f"failed: {len(summary.checks_failed)}")
    for failure in summary.checks_failed:
        print(f"    FAILED {failure}")
    for warning in summary.checks_warned[:5]:
        print(f"    WARN   {warning}")
    if summary.streaming_vs_batch:
        shares = ", ".join(f"{day} {share:.4f}" for day, share in summary.streaming_vs_batch.items())
        print(f"  streaming = batch, share of keys equal per day: {shares}")
    print()
    for key, value in facts["rows"].items():
        print(f"  {key + ':':<42} {value:>12,}")
    lookup = facts["lookup"]
    print("\n  example online lookup (Feast, Redis):\n"
          f"    python -m taobao_assets.retrieval online --user {lookup['user_id']} --item {lookup['item_id']} "
          f"--category {lookup['category_id']}\n    -> {json.dumps(lookup['shown'], default=str)}")
    model = facts["model"]
    if "auc" in model:
        oracle = (f", the generator's true propensities {model['oracle_auc']:.3f}" if "oracle_auc" in model
                  else "")
        print(f"\n  baseline CTR model (logistic regression), scored on {model['day']} after "
              f"{model['trained_on_days']} days of training sets: AUC {model['auc']:.3f}{oracle}")
    if facts.get("freshness"):
        lags = ", ".join(f"{hop.replace('_to_', '->')} " + "/".join("-" if v is None else f"{v:,.1f}" for v in pair)
                         for hop, pair in facts["freshness"]["lags_s"].items())
        print(f"\n  freshness of {facts['freshness']['day']}'s samples (python -m taobao_assets.cli freshness), "
              f"seconds p50/p99:\n    {lags}")
    print(f"\n  Dagster UI:  http://127.0.0.1:{settings.dagster_port}")
    print(f"  Trino:       {settings.trino_url}  (catalogs iceberg, postgresql; see docs/trino.md)")
    print(f"  Run log:     {log_path}  (every run's Dagster events)")
    print("=" * 78, flush=True)


def write_summary(path: Path, summary: Summary, facts: dict[str, Any]) -> None:
    """The summary as JSON, for scripts (and the test that checks it against the stores)."""
    payload = {"stages": [{"name": s.name, "seconds": round(s.seconds, 2), "detail": s.detail,
                           "ended_at": round(s.ended_at, 2)} for s in summary.stages],
               "checks_passed": summary.checks_passed, "checks_failed": summary.checks_failed,
               "checks_warned": summary.checks_warned, "streaming_vs_batch": summary.streaming_vs_batch,
               "projected_seconds": summary.projected_seconds, **facts}
    write_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def summary_facts(settings: Settings) -> dict[str, Any]:
    """What each layer holds now, read back from the stores themselves, and an example lookup.

    ``rows``: records per layer (bronze manifests in MinIO, silver through Trino, gold in
    Postgres); ``lookup``: the feature service for the busiest user, item and category of the last
    day, read from the online store; ``model``: the baseline's AUC on the last day, from its
    materialization, beside the AUC of the generator's true propensities when the data set is
    generated (the most any model can reach on it).
    """
    from taobao_assets.gold_tables import GOLD_TABLES
    from taobao_assets.io_managers.bronze import load_manifest
    from taobao_assets.partitions import daily_partitions
    from taobao_assets.resources.postgres import PostgresResource
    from taobao_assets.resources.s3 import S3Resource
    from taobao_assets.resources.trino import TrinoResource
    from taobao_assets.retrieval import OnlineFeatures
    from taobao_assets.source.topics import RawTopics

    s3 = S3Resource.from_settings(settings)
    days = daily_partitions(settings).get_partition_keys()
    rows: dict[str, int] = {
        f"bronze {topic.name} records": sum(load_manifest(s3, topic.name, day).records for day in days)
        for topic in RawTopics.of(settings.topic_prefix).all
    }
    trino = TrinoResource.from_settings(settings)
    for table in ("impressions", "user_context", "quarantine"):
        rows[f"silver {table} rows"] = trino.query(f"SELECT count(*) FROM iceberg.silver.{table}")[0][0]
    with PostgresResource.from_settings(settings).connect() as conn, conn.cursor() as cur:
        for gold in GOLD_TABLES:
            cur.execute(f"SELECT count(*) FROM {gold.qualified_name}")
            rows[f"gold {gold.name} rows"] = cur.fetchone()[0]
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
    lookup = {"user_id": user_id, "item_id": item_id, "category_id": category_id, "values": values, "shown": shown}
    hops = latest_freshness(settings)
    return {"rows": rows, "lookup": lookup, "model": _model_facts(settings),
            "freshness": {"day": hops.day, "lags_s": hops.lags_s} if hops else None}


def latest_freshness(settings: Settings, day: str | None = None) -> HopFreshness | None:
    """:class:`HopFreshness` of ``day``, or of the latest day with a stored bronze day of samples."""
    from taobao_assets.assets.bronze import bronze_asset_key
    from taobao_assets.partitions import daily_partitions
    from taobao_assets.quality.freshness import hop_freshness
    from taobao_assets.resources.s3 import S3Resource
    from taobao_assets.source.topics import SAMPLES, RawTopics

    instance = project_instance(settings)
    if day is None:
        stored = instance.get_materialized_partitions(bronze_asset_key(SAMPLES))
        day = max((d for d in daily_partitions(settings).get_partition_keys() if d in stored), default=None)
    if day is None:
        return None
    return hop_freshness(instance, S3Resource.from_settings(settings), RawTopics.of(settings.topic_prefix).samples.name,
                         day)


def _model_facts(settings: Settings) -> dict[str, Any]:
    from taobao_assets.assets.serving import BASELINE_KEY

    event = project_instance(settings).get_latest_materialization_event(BASELINE_KEY)
    materialization = event.asset_materialization if event else None
    facts: dict[str, Any] = {"day": materialization.partition if materialization else None}
    if materialization:
        facts |= {k: v.value for k, v in materialization.metadata.items()
                  if k.startswith("auc") or k in ("oracle_auc", "trained_on_days", "train_rows", "test_rows")}
    return facts
