from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from deploy.services.kafka import Kafka
from deploy.services.postgres import Postgres
from deploy.services.redis import Redis
from deploy.services.trino import Trino
from taobao_assets.atomic_file import write_private
from taobao_assets.feast_repo import write_config
from taobao_assets.resources.feast import FeastResource
from taobao_assets.settings import (
    GENERATED_SECRETS,
    READ_ELSEWHERE,
    REPO_ROOT,
    Settings,
    SettingsError,
    load_settings,
)


def test_environment_overrides_defaults_with_types(tmp_path: Path) -> None:
    s = load_settings({"TFP_STATE_DIR": str(tmp_path), "TFP_POSTGRES_PORT": "5999",
                       "TFP_SPARK_MASTER": "spark://h:7077"})
    assert s.postgres_port == 5999
    assert s.spark_master == "spark://h:7077"
    assert s.state_dir == tmp_path


def test_credentials_are_generated_once_per_install_and_kept_private(tmp_path: Path) -> None:
    first = load_settings({"TFP_STATE_DIR": str(tmp_path)})
    again = load_settings({"TFP_STATE_DIR": str(tmp_path)})
    other_install = load_settings({"TFP_STATE_DIR": str(tmp_path / "other")})
    assert first.postgres_password and first.postgres_password == again.postgres_password
    assert first.minio_secret_key != other_install.minio_secret_key
    mode = stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode)
    assert mode == 0o600


def test_credentials_from_the_environment_win(tmp_path: Path) -> None:
    s = load_settings({"TFP_STATE_DIR": str(tmp_path), "TFP_REDIS_PASSWORD": "given"})
    assert s.redis_password == "given"


@pytest.mark.parametrize(("environ", "message"), [
    pytest.param({"TFP_POSTGRES_PORT": "abc"},
                 "TFP_POSTGRES_PORT='abc' is not an integer: set it to a whole number (default 15432) or unset it",
                 id="port-not-an-integer"),
    pytest.param({"TFP_EVENT_DAYS": ""},
                 "TFP_EVENT_DAYS='' is not an integer: set it to a whole number (default 7) or unset it",
                 id="days-empty"),
    pytest.param({"TFP_EVENT_START_DATE": "2026-13-01"},
                 "TFP_EVENT_START_DATE='2026-13-01' is not a date: set it to an ISO date YYYY-MM-DD "
                 "(default 2026-11-01) or unset it",
                 id="start-date-not-a-date"),
    pytest.param({"TFP_EVENT_DAYS": "0"},
                 "TFP_EVENT_DAYS='0' is less than 1: set it to the number of simulated days (default 7) or unset it",
                 id="days-below-one"),
    pytest.param({"TFP_KAFKA_PASSWORD": 'pa"ss'},
                 "TFP_KAFKA_PASSWORD holds one of \" \\ , [ ], which Kafka's configuration files cannot carry: "
                 "set it to a value without them",
                 id="kafka-password-with-a-quote"),
    pytest.param({"TFP_SOURCE_DIR": "~no-such-user-tfp/aliccp"},
                 "TFP_SOURCE_DIR='~no-such-user-tfp/aliccp' is not a usable path (Could not determine home "
                 "directory.): set it to a folder (default {repo}/.state/aliccp) or unset it",
                 id="home-of-an-unknown-user"),
])
def test_a_bad_value_is_one_line_naming_the_variable_and_what_to_set(
        tmp_path: Path, environ: dict[str, str], message: str) -> None:
    # Before the settings are built: a bad start date used to pass here and fail in the definitions.
    with pytest.raises(SettingsError) as raised:
        load_settings({"TFP_STATE_DIR": str(tmp_path), **environ})
    assert str(raised.value) == message.format(repo=REPO_ROOT)
    assert not (tmp_path / "credentials.json").exists()


def test_a_misspelt_variable_is_reported_with_the_setting_it_resembles(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="taobao_assets.settings"):
        s = load_settings({"TFP_STATE_DIR": str(tmp_path), "TFP_POSTGRES_PROT": "5999", "TFP_WHATEVER": "1",
                           "TFP_FAILPOINT": "streaming.after_commit:1", "OTHER_PROT": "1"})
    assert s.postgres_port == 15432
    assert caplog.messages == [
        "TFP_POSTGRES_PROT is not a setting (did you mean TFP_POSTGRES_PORT?); it is ignored",
        "TFP_WHATEVER is not a setting; it is ignored",
    ]


def test_every_tfp_variable_the_code_and_docs_name_is_known() -> None:
    """A variable read outside Settings and missing from READ_ELSEWHERE would be reported as a typo."""
    known = {"TFP_" + f.name.upper() for f in fields(Settings)} | set(READ_ELSEWHERE)
    files = [REPO_ROOT / "README.md", REPO_ROOT / "Makefile",
             *(p for folder in ("taobao_assets", "deploy", "bench", "docs") for p in (REPO_ROOT / folder).rglob("*")
               if p.suffix in {".py", ".md", ".sh", ".yaml"})]
    named = {name: path for path in files for name in re.findall(r"\bTFP_[A-Z][A-Z0-9_]*", path.read_text())}
    assert {name: str(path) for name, path in named.items() if name not in known} == {}


class ModeProbe:
    """Each file under a folder, with its mode and text, at each step a writer may take before it is done.

    Steps are the calls that rename or chmod a file (``Path.replace``, ``Path.chmod`` and the
    helper all end in them) plus any taken by hand (``snapshot``), so a file that was created
    readable by others and chmod-ed only once it held a password is caught at the chmod.
    """

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder, self.seen = folder, list[tuple[str, int, str]]()
        for name in ("replace", "rename", "chmod"):
            real = getattr(os, name)

            def probe(*args: Any, _real: Callable[..., Any] = real, **kwargs: Any) -> Any:
                self.snapshot()
                return _real(*args, **kwargs)

            monkeypatch.setattr(os, name, probe)

    def snapshot(self) -> None:
        self.seen += [(path.name, stat.S_IMODE(path.stat().st_mode), path.read_text())
                      for path in self.folder.rglob("*") if path.is_file()]

    def modes_holding(self, secret: str) -> dict[str, set[int]]:
        """File name -> the modes it had while it held ``secret``."""
        modes: dict[str, set[int]] = {}
        for name, mode, text in self.seen:
            if secret in text:
                modes.setdefault(name, set()).add(mode)
        return modes


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModeProbe]:
    """A probe of ``tmp_path`` under umask 0, the laxest an install may have: nothing may rely on it."""
    umask = os.umask(0)
    try:
        yield ModeProbe(tmp_path, monkeypatch)
    finally:
        os.umask(umask)


def test_a_private_file_is_never_readable_by_others(tmp_path: Path, probe: ModeProbe) -> None:
    path = tmp_path / "secret.conf"
    write_private(path, "requirepass first\n")
    write_private(path, "requirepass second\n")
    probe.snapshot()
    assert path.read_text() == "requirepass second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["secret.conf"]  # no temporary file left
    seen = probe.modes_holding("requirepass")
    assert any(name.endswith(".tmp") for name in seen), "the probe saw no temporary file"
    assert all(modes == {0o600} for modes in seen.values()), seen


def test_a_private_file_replaces_one_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "feature_store.yaml"
    path.write_text("left by an older version")
    path.chmod(0o644)
    write_private(path, "password: x\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "credentials.json"
    write_private(path, "old")

    def full_disk(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_private(path, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["credentials.json"] and path.read_text() == "old"


def _credentials(s: Settings) -> Path:
    return s.state_dir / "credentials.json"


def _redis_config(s: Settings) -> Path:
    Redis(s).prepare()
    return Redis(s).state / "redis.conf"


def _trino_catalog(s: Settings) -> Path:
    Trino(s).write_config()
    return Trino(s).etc / "catalog" / "postgresql.properties"


def _kafka_config(s: Settings) -> Path:
    Kafka(s).write_config()
    return Kafka(s).config


def _kafka_client_config(s: Settings) -> Path:
    Kafka(s).write_config()
    return Kafka(s).client_config


def _feast_config(s: Settings) -> Path:
    return write_config(s.state_dir / "feature_store.yaml", FeastResource.from_settings(s))


@pytest.mark.parametrize("write", [_credentials, _redis_config, _trino_catalog, _kafka_config, _kafka_client_config,
                                   _feast_config])
def test_each_file_holding_a_password_is_private_from_its_creation(
        tmp_path: Path, probe: ModeProbe, write: Callable[[Settings], Path]) -> None:
    settings = load_settings({"TFP_STATE_DIR": str(tmp_path)})  # writes the credentials
    path = write(settings)
    probe.snapshot()
    secret = next(s for s in (settings.redis_password, settings.postgres_password, settings.trino_postgres_password,
                              settings.kafka_password) if s in path.read_text())
    seen = probe.modes_holding(secret)
    assert path.name in seen and all(modes == {0o600} for modes in seen.values()), seen


def test_the_postgres_password_file_is_private_while_initdb_reads_it(
        tmp_path: Path, probe: ModeProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    postgres = Postgres(load_settings({"TFP_STATE_DIR": str(tmp_path)}))
    read: list[str] = []

    def initdb(command: list[str], **_: Any) -> None:
        (pwfile,) = [Path(arg.removeprefix("--pwfile=")) for arg in map(str, command) if arg.startswith("--pwfile=")]
        probe.snapshot()
        read.append(pwfile.read_text())
        postgres.data.mkdir()

    monkeypatch.setattr(Postgres, "bin", lambda _, tool: tool)
    monkeypatch.setattr("deploy.services.postgres.run", initdb)
    postgres.prepare()
    assert read == [postgres.settings.postgres_password + "\n"]
    seen = probe.modes_holding(postgres.settings.postgres_password)
    assert "pwfile" in seen and all(modes == {0o600} for modes in seen.values()), seen


def test_no_secret_shows_in_the_printed_settings_or_resources(tmp_path: Path) -> None:
    """A failed assertion prints the resources it was handed (a CI log once showed two passwords)."""
    from taobao_assets.definitions import build_resources

    settings = load_settings({"TFP_STATE_DIR": str(tmp_path)})
    secrets = [getattr(settings, name) for name in GENERATED_SECRETS]
    printed = [repr(settings), *(repr(resource) for resource in build_resources(settings).values())]
    assert all(secret for secret in secrets)
    leaks = [(secret, text[:80]) for secret in secrets for text in printed if secret in text]
    assert not leaks
