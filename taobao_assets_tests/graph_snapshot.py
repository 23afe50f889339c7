"""The asset graph as plain data: keys, groups, deps (with their partition mappings), checks, jobs.

``graph_snapshot.json`` beside this module is the committed snapshot; ``test_definitions`` compares
the definitions with it, so a wiring change is a reviewable diff. After an intended change:
``python -m taobao_assets_tests.graph_snapshot`` rewrites it. The graph is built with the default
time line (7 days from the default start) whatever the environment says, so the snapshot is the
same in every checkout and test run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from dagster import Definitions, PartitionMapping, TimeWindowPartitionMapping

from taobao_assets.definitions import build_definitions
from taobao_assets.settings import Settings, get_settings

SNAPSHOT = Path(__file__).with_name("graph_snapshot.json")


def _mapping(mapping: PartitionMapping | None) -> str:
    if mapping is None:
        return "same day"
    if isinstance(mapping, TimeWindowPartitionMapping):
        return f"day{mapping.start_offset:+d} .. day{mapping.end_offset:+d}"
    return type(mapping).__name__


def reference_definitions(settings: Settings) -> Definitions:
    """The definitions of ``settings``' servers on the default time line and topics."""
    default = Settings()
    return build_definitions(dataclasses.replace(
        settings, event_start_date=default.event_start_date, event_days=default.event_days,
        topic_prefix=default.topic_prefix))


def snapshot(defs: Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    assets: dict[str, Any] = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kind": "materializable" if node.is_materializable else "external",
            "partitioned": type(node.partitions_def).__name__ if node.partitions_def else None,
            "io_manager": node.io_manager_key if node.is_materializable else None,
            "deps": {parent.to_user_string(): _mapping(node.partition_mappings.get(parent))
                     for parent in sorted(node.parent_keys)},
            "checks": sorted(check.name for check in node.check_keys),
        }
    jobs = {
        job.name: sorted(key.to_user_string() for key in job.asset_layer.selected_asset_keys) or
        sorted(job.graph.node_names())
        for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name) if job.name != "__ASSET_JOB"
    }
    return {
        "assets": assets,
        "jobs": jobs,
        "schedules": {s.name: defs.resolve_schedule_def(s.name).job_name for s in defs.schedules or []},
        "sensors": sorted(s.name for s in defs.sensors or []),
        "resources": sorted(defs.resources or {}),
    }


def main() -> None:
    SNAPSHOT.write_text(json.dumps(snapshot(reference_definitions(get_settings())), indent=1) + "\n")
    print(SNAPSHOT)


if __name__ == "__main__":
    main()
