"""Every connection string the platform builds carries any password exactly, read back by the client
library that will parse it (libpq's parser through psycopg2, SQLAlchemy, redis-py, Feast's Redis store)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from feast.infra.online_stores.redis import RedisOnlineStore
from psycopg2.extensions import parse_dsn
from redis.connection import parse_url
from sqlalchemy.engine import make_url

from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.resources.redis import RedisResource
from taobao_assets.settings import load_settings

NASTY = ["p@ss w/rd", "it's \"quoted\" \\ back", "100", "true", "null", "é ünï 密码", "a=b;c%20d?e#f", " lead"]


@pytest.mark.parametrize("password", NASTY)
def test_passwords_survive_every_connection_string(password: str, tmp_path: Path) -> None:
    settings = dataclasses.replace(load_settings({"TFP_STATE_DIR": str(tmp_path)}),
                                   postgres_password=password, redis_password=password)
    assert parse_dsn(settings.postgres_dsn)["password"] == password
    assert make_url(PostgresResource.from_settings(settings).sqlalchemy_url).password == password
    assert parse_url(settings.redis_url)["password"] == password
    _, params = RedisOnlineStore._parse_connection_string(RedisResource.from_settings(settings).connection_string)
    assert params["password"] == password


def test_a_redis_password_feast_cannot_carry_is_refused_by_name(tmp_path: Path) -> None:
    settings = dataclasses.replace(load_settings({"TFP_STATE_DIR": str(tmp_path)}), redis_password="a,b")
    with pytest.raises(ValueError, match="TFP_REDIS_PASSWORD"):
        _ = RedisResource.from_settings(settings).connection_string
