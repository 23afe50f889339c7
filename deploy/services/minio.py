"""MinIO, built from source with ``go install``: the S3 store of the lake (bronze objects, Iceberg files).

MinIO's community edition ships no binaries any more, only source, and its documented install is
``go install github.com/minio/minio@<version>``. The Go module proxy does not serve MinIO's
``RELEASE.*`` tags (they are not semantic versions), so the pin is the pseudo-version of a commit.
The build (about 1,500 packages, 8 minutes on two cores) writes everything — module downloads,
build cache, the binary — into the cache folder, the binary keyed by version, and a second install
only checks that the binary is there.

The server runs single-node, single-drive on ``<state>/data``, bound to loopback only, with the root
credentials from the settings; ``after_start`` creates the lake bucket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from deploy.service import Service, ServiceError

MODULE = "github.com/minio/minio"
#: Newest commit the proxy serves (2026-02-12); ``go list -m -versions`` lists no release for MinIO.
VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
#: Seconds between progress lines while ``go install`` runs.
PROGRESS_EVERY = 30.0


def _release_time(pseudo_version: str) -> str:
    """The commit time of a pseudo-version, in the RFC 3339 form MinIO prints as its version."""
    stamp = pseudo_version.split("-")[1]
    return (f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T"
            f"{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}Z")


class Minio(Service):
    name = "minio"
    default = True

    @property
    def home(self) -> Path:
        return self.cache / self.name

    @property
    def binary(self) -> Path:
        return self.home / VERSION / "bin" / "minio"

    @property
    def data(self) -> Path:
        return self.state / "data"

    def port(self) -> int:
        return self.settings.minio_port

    def version(self) -> str:
        if not self.binary.exists():
            return "not installed"
        return f"{_release_time(VERSION)} ({VERSION})"

    def _ldflags(self) -> str:
        """The version stamps MinIO's own Makefile sets; without them it reports DEVELOPMENT.GOGET."""
        released = _release_time(VERSION)
        commit = VERSION.rsplit("-", 1)[1]
        pkg = f"{MODULE}/cmd"
        return (f"-s -w -X {pkg}.Version={released} -X {pkg}.ReleaseTag=DEVELOPMENT."
                f"{released.replace(':', '-')} -X {pkg}.CommitID={commit} -X {pkg}.ShortCommitID={commit}"
                f" -X {pkg}.CopyrightYear={released[:4]}")

    def install(self) -> None:
        if self.binary.exists():
            return
        if shutil.which("go") is None:
            raise ServiceError("the `go` command is needed to build MinIO and is not on PATH")
        # Built into a side folder and renamed, so an interrupted build never looks installed.
        partial = self.binary.parent.with_name("bin.partial")
        shutil.rmtree(partial, ignore_errors=True)
        env = dict(
            os.environ,
            GOBIN=str(partial),
            GOPATH=str(self.home / "go"),
            GOMODCACHE=str(self.home / "go" / "pkg" / "mod"),
            GOCACHE=str(self.home / "go-build"),
            CGO_ENABLED="0",  # a static binary, as MinIO's own release builds are
            GOTOOLCHAIN="local",  # never fetch another Go behind our back
            GOFLAGS="-modcacherw -buildvcs=false",  # a read-only module cache could not be deleted
        )
        cmd = ["go", "install", "-v", "-trimpath", f"-ldflags={self._ldflags()}", f"{MODULE}@{VERSION}"]
        print(f"[minio] building {MODULE}@{VERSION} with {_go_version()} "
              f"(several minutes on 2 cores; log: {self.build_log})", flush=True)
        _run_with_progress(cmd, env=env, log=self.build_log)
        partial.replace(self.binary.parent)
        # The module and build caches (2.2 GB) only speed up a rebuild of another version; kept until
        # success so an interrupted build resumes, then dropped: the 110 MB binary is all that runs.
        shutil.rmtree(self.home / "go")
        shutil.rmtree(self.home / "go-build")
        print(f"[minio] built {self.binary} ({self.binary.stat().st_size / 2**20:.0f} MiB)", flush=True)

    @property
    def build_log(self) -> Path:
        return self.settings.logs_dir / "minio-build.log"

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [str(self.binary), "server", str(self.data),
                "--address", f"127.0.0.1:{self.port()}",
                "--console-address", f"127.0.0.1:{self.settings.minio_console_port}"]

    def environment(self) -> dict[str, str]:
        return dict(
            os.environ,
            MINIO_ROOT_USER=self.settings.minio_access_key,
            MINIO_ROOT_PASSWORD=self.settings.minio_secret_key,
            MINIO_SITE_REGION=self.settings.minio_region,
            MINIO_UPDATE="off",  # no internet here; the version is pinned in this file
        )

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.port()}/minio/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def after_start(self) -> None:
        s3 = boto3.client(
            "s3", endpoint_url=self.settings.s3_endpoint_url, region_name=self.settings.minio_region,
            aws_access_key_id=self.settings.minio_access_key,
            aws_secret_access_key=self.settings.minio_secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )
        bucket = self.settings.lake_bucket
        try:
            s3.create_bucket(Bucket=bucket)
            print(f"[minio] created bucket {bucket}", flush=True)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise ServiceError(f"[minio] could not create bucket {bucket!r}: {exc}") from exc


def _go_version() -> str:
    return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()


def _run_with_progress(cmd: list[str], *, env: dict[str, str], log: Path) -> None:
    """Run a long build, printing how far it got every ``PROGRESS_EVERY`` seconds.

    ``go install -v`` prints one line per package it compiles, so the line count is the progress.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY
    lines: list[str] = []
    with log.open("w") as out, subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip("\n"))
            if time.monotonic() >= next_report:
                print(f"[minio]   {time.monotonic() - started:.0f}s: {len(lines)} modules or packages, "
                      f"now {lines[-1]}", flush=True)
                next_report += PROGRESS_EVERY
    if proc.returncode != 0:
        tail = "\n".join(lines[-30:])
        raise ServiceError(f"building MinIO failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}\n"
                           f"Full output: {log}")
    print(f"[minio]   go install finished in {time.monotonic() - started:.0f}s", flush=True)
