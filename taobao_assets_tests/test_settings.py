from __future__ import annotations

import stat
from pathlib import Path

import pytest

from taobao_assets.settings import REPO_ROOT, SettingsError, load_settings


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
