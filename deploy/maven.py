"""Resolve jars and zips from Maven Central into the cache, once.

Kafka, Trino and the Spark connectors all come from Maven Central. Each set of artifacts is
written as a small pom and resolved with ``mvn dependency:copy-dependencies`` into its own cache
folder; a marker file holding the artifact list makes the second call a no-op and a changed list a
re-resolution.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.service import apt_install, run

MARKER = ".resolved"


@dataclass(frozen=True)
class Artifact:
    group: str
    artifact: str
    version: str
    kind: str = "jar"  # "zip" for Trino plugins
    transitive: bool = True

    def xml(self) -> str:
        exclusions = (
            "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>"
            if not self.transitive else ""
        )
        type_ = f"<type>{self.kind}</type>" if self.kind != "jar" else ""
        return (
            f"<dependency><groupId>{self.group}</groupId><artifactId>{self.artifact}</artifactId>"
            f"<version>{self.version}</version>{type_}{exclusions}</dependency>"
        )


def _pom(artifacts: Sequence[Artifact]) -> str:
    deps = "\n    ".join(a.xml() for a in artifacts)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>taobao-feature-platform</groupId>
  <artifactId>deps</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    {deps}
  </dependencies>
</project>
"""


def resolve(artifacts: Sequence[Artifact], dest: Path, *, what: str) -> Path:
    """Copy ``artifacts`` (and their runtime dependencies) into ``dest``; idempotent."""
    pom = _pom(artifacts)
    digest = hashlib.sha256(pom.encode()).hexdigest()
    marker = dest / MARKER
    if marker.exists() and marker.read_text() == digest:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    work = dest.with_name(dest.name + ".pom")
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(pom)
    if shutil.which("mvn") is None:
        apt_install(["maven"])
    run(
        ["mvn", "-B", "-q", "dependency:copy-dependencies", f"-DoutputDirectory={dest}",
         "-DincludeScope=runtime"],
        what=f"resolving {what} from Maven Central", cwd=work,
    )
    marker.write_text(digest)
    return dest
