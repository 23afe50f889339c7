"""Stores bronze days in MinIO: ``s3://<lake>/bronze/<topic>/day=<D>/`` with a manifest written last.

The day's objects go in a folder named after their content (:attr:`BronzeDay.generation`), and
the manifest, written last, names them: a day with a manifest is complete and one without it is
not. A re-run writes its objects beside the stored day, then replaces the manifest (one PUT, so
readers see the old day or the new one), and only then deletes what the new manifest does not
name: a re-run that fails or is killed midway leaves the stored day as it was. Downstream assets
receive the manifest (:class:`BronzeManifest`) and read the objects it names.
"""

from __future__ import annotations

import json
import shutil
from datetime import date

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from taobao_assets import failpoints
from taobao_assets.bronze_objects import MANIFEST, BronzeDay, BronzeManifest, day_prefix
from taobao_assets.resources.s3 import S3Resource
from taobao_assets.server_loss import on_server_loss


def load_manifest(s3: S3Resource, topic: str, day: date | str) -> BronzeManifest:
    prefix = day_prefix(topic, day)
    try:
        body = s3.get_bytes(prefix + MANIFEST)
    except s3.client().exceptions.NoSuchKey as missing:
        raise FileNotFoundError(
            f"bronze day {day} of {topic} has no manifest at s3://{s3.bucket}/{prefix}{MANIFEST}: "
            f"materialize the bronze partition {day} first"
        ) from missing
    return BronzeManifest(s3.bucket, prefix, json.loads(body))


class BronzeIOManager(ConfigurableIOManager):
    s3: S3Resource

    @on_server_loss("minio")
    def handle_output(self, context: OutputContext, obj: BronzeDay) -> None:
        prefix = day_prefix(obj.topic, obj.day)
        folder = f"{prefix}{obj.generation}/"
        for part in obj.parts:
            for local in (part.data_file, part.index_file):
                self.s3.upload_file(local, folder + local.name)
            failpoints.reached("bronze.objects_stored")
        self.s3.put_bytes(prefix + MANIFEST, json.dumps(obj.manifest(), indent=1).encode())
        self.s3.delete_keys([k for k in self.s3.list_keys(prefix) if k != prefix + MANIFEST
                             and not k.startswith(folder)])
        if obj.parts:
            shutil.rmtree(obj.parts[0].data_file.parent, ignore_errors=True)
        context.add_output_metadata({
            "records": obj.records,
            "bytes": obj.bytes,
            # Records kept though the replay did not write them so (a tombstone, bad headers): see the manifest.
            "faults": sum(len(p.faults) for p in obj.parts),
            "path": MetadataValue.path(f"s3://{self.s3.bucket}/{prefix}"),
            "offset_ranges": MetadataValue.json(
                {str(p.partition): [p.start_offset, p.end_offset] for p in obj.parts}),
        })

    @on_server_loss("minio")
    def load_input(self, context: InputContext) -> BronzeManifest:
        assert context.upstream_output is not None
        topic = context.upstream_output.definition_metadata["topic"]
        return load_manifest(self.s3, topic, context.partition_key)
