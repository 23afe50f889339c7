from __future__ import annotations

import logging
import re
import stat
from dataclasses import fields
from pathlib import Path

import pytest

from taobao_assets.settings import READ_ELSEWHERE, REPO_ROOT, Settings, SettingsError, load_settings


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
                           "TFP_STREAMING_FAILPOINT": "after_commit:1", "OTHER_PROT": "1"})
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
