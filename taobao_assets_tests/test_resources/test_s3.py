from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dagster import asset, materialize

from deploy.service import Service
from taobao_assets.resources.s3 import DELETE_BATCH, S3Resource
from taobao_assets.settings import Settings


@pytest.fixture
def s3(settings: Settings, minio_service: Service) -> S3Resource:
    return S3Resource.from_settings(settings)


@pytest.fixture
def prefix(s3: S3Resource) -> Iterator[str]:
    """A prefix of the lake bucket that only this test writes to, emptied afterwards."""
    prefix = f"tests/s3/{uuid.uuid4().hex}/"
    yield prefix
    s3.delete_prefix(prefix)


def test_lake_bucket_exists_after_start(s3: S3Resource) -> None:
    assert s3.bucket in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}


def test_client_uses_path_style_addressing(s3: S3Resource) -> None:
    url = s3.client().generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": "k"})
    assert url.startswith(f"{s3.endpoint_url}/{s3.bucket}/k?")


def test_small_objects_round_trip_and_list_under_their_prefix(s3: S3Resource, prefix: str) -> None:
    objects = {f"{prefix}day=2024-01-0{i}/part-0.gz": os.urandom(100 * i) for i in range(1, 4)}
    objects[f"{prefix}empty"] = b""
    for key, data in objects.items():
        s3.put_bytes(key, data)

    assert s3.list_keys(prefix) == sorted(objects)
    assert s3.list_keys(f"{prefix}day=2024-01-02/") == [f"{prefix}day=2024-01-02/part-0.gz"]
    assert {key: s3.get_bytes(key) for key in objects} == objects


def test_large_object_goes_up_in_parts_and_comes_back_byte_exact(s3: S3Resource, prefix: str) -> None:
    data = os.urandom(25 * 2**20 + 12345)  # four 8 MiB parts, the last one short
    key = f"{prefix}large.bin"
    s3.put_bytes(key, data)

    etag = s3.client().head_object(Bucket=s3.bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-4"), f"expected a 4-part multipart ETag, got {etag}"
    assert s3.get_bytes(key) == data


def test_upload_file_stores_the_file_byte_exact(s3: S3Resource, prefix: str, tmp_path: Path) -> None:
    local = tmp_path / "part.gz"
    local.write_bytes(os.urandom(9 * 2**20))
    s3.upload_file(local, f"{prefix}part.gz")
    assert s3.get_bytes(f"{prefix}part.gz") == local.read_bytes()


def test_missing_key_raises_no_such_key(s3: S3Resource, prefix: str) -> None:
    with pytest.raises(s3.client().exceptions.NoSuchKey):
        s3.get_bytes(f"{prefix}absent")


def test_delete_prefix_removes_only_that_prefix_across_pages(s3: S3Resource, prefix: str) -> None:
    doomed = [f"{prefix}day=1/{i:05d}" for i in range(DELETE_BATCH + 5)]  # more than one list page/batch
    kept = f"{prefix}day=10/kept"
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: s3.put_bytes(key, key.encode()), [*doomed, kept]))

    assert s3.list_keys(f"{prefix}day=1/") == doomed
    assert s3.delete_prefix(f"{prefix}day=1/") == len(doomed)
    assert s3.list_keys(prefix) == [kept]
    assert s3.get_bytes(kept) == kept.encode()


def test_delete_prefix_refuses_to_empty_the_bucket(s3: S3Resource) -> None:
    with pytest.raises(ValueError, match="empty prefix"):
        s3.delete_prefix("")


def test_asset_writes_through_the_resource(s3: S3Resource, prefix: str) -> None:
    @asset
    def marker(s3: S3Resource) -> None:
        s3.put_bytes(f"{prefix}marker", b"written by an asset")

    assert materialize([marker], resources={"s3": s3}).success
    assert s3.get_bytes(f"{prefix}marker") == b"written by an asset"
