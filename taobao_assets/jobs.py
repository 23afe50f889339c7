"""Jobs and schedules: the replay into Kafka, and the daily batch over the shared partitions."""


from pathlib import Path

from dagster import AssetSelection, Config, OpExecutionContext, define_asset_job, job, op

from taobao_assets.partitions import DAILY
from taobao_assets.resources.kafka import KafkaResource
from taobao_assets.settings import get_settings
from taobao_assets.source.replay import run_replay


class ReplayConfig(Config):
    """Where the raw files are (default: the ``TFP_SOURCE_DIR`` setting) and how fast to replay."""

    source_dir: str = ""
    rate: float | None = None


@op(description="Replay the raw Ali-CCP files into Kafka in event-time order (resumable).")
def replay_raw_files(context: OpExecutionContext, config: ReplayConfig, kafka: KafkaResource) -> None:
    settings = get_settings()
    folder = Path(config.source_dir) if config.source_dir else settings.source_dir
    reported = [0.0]

    def progress(done: int, total: int, rate: float) -> None:
        if done / total >= reported[0] + 0.1 or done == total:
            reported[0] = done / total
            context.log.info(f"replay {done:,}/{total:,} records ({done / total:.0%}), {rate:,.0f} rec/s")

    result = run_replay(settings, kafka, folder, config.rate, progress)
    context.log.info(
        f"replay of {folder}: {result.records_sent:,} records sent, "
        f"{result.records_skipped_on_resume:,} found already written on resume, "
        f"{result.records_total:,} in the data set, {result.records_per_second:,.0f} rec/s"
    )


@job(description="Replay the raw files of the source folder into the Kafka topics.")
def replay_job() -> None:
    replay_raw_files()


bronze_job = define_asset_job(
    "bronze_job", selection=AssetSelection.groups("bronze"), partitions_def=DAILY,
    description="Copy one day of Kafka records into bronze objects in MinIO (with checks).",
)
