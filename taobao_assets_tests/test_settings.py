from __future__ import annotations

import stat
from pathlib import Path

from taobao_assets.settings import load_settings


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
