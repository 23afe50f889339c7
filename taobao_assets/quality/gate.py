"""A gold day whose blocking checks failed is not served: the gate the serving assets pass first.

Dagster's blocking checks stop the downstream steps of the run that ran them. The online store and
the training sets run in other runs (``daily_serving_job``, a day later or in a backfill), so they
ask the instance: a gold day whose latest evaluation of a blocking check failed is refused, naming
the check and what to do. A day never checked (gold written outside Dagster) passes.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetCheckKey, AssetChecksDefinition, DagsterInstance
from dagster._core.event_api import PartitionKeyFilter  # not exported; the only per-partition lookup
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus


class BlockedDay(RuntimeError):
    """A gold day failed a blocking check: it must not reach Feast."""


def blocking_keys(checks: Sequence[AssetChecksDefinition]) -> list[AssetCheckKey]:
    return [spec.key for check in checks for spec in check.check_specs if spec.blocking]


def failed_checks(instance: DagsterInstance, keys: Sequence[AssetCheckKey], day: str) -> list[AssetCheckKey]:
    """The checks among ``keys`` whose latest evaluation of partition ``day`` failed."""
    storage = instance.event_log_storage
    failed = []
    for key in keys:
        latest = storage.get_asset_check_execution_history(key, limit=1, partition_filter=PartitionKeyFilter(key=day))
        if latest and latest[0].status == AssetCheckExecutionRecordStatus.FAILED:
            failed.append(key)
    return failed


def require_passed(instance: DagsterInstance, keys: Sequence[AssetCheckKey], day: str) -> None:
    """Raise :class:`BlockedDay` if a check among ``keys`` failed on ``day``."""
    failed = failed_checks(instance, keys, day)
    if failed:
        names = ", ".join(f"{k.asset_key.to_user_string()} {k.name}" for k in failed)
        raise BlockedDay(f"gold of {day} failed its blocking checks ({names}): it is not served. Fix the cause, "
                         f"materialize gold of {day} again (its checks run with it), then run this again")
