"""The stack manager against the real servers: idempotent up, honest status, PID safety."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from psycopg2 import sql

from deploy.service import Service, free_port
from deploy.services.kafka import Kafka
from deploy.services.postgres import GOLD_SCHEMA, Postgres
from deploy.services.redis import Redis
from taobao_assets.gold_tables import SCHEMA
from taobao_assets.resources.kafka_client import KafkaClient, TopicSpec
from taobao_assets.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.stack", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_up_is_idempotent_on_a_running_service(redis_service: Service) -> None:
    pid = redis_service.pid()
    out = stack("up", "redis")
    assert out.returncode == 0, out.stderr
    assert "already running" in out.stdout
    assert redis_service.pid() == pid


def test_status_reports_each_service_with_port_and_health(redis_service: Service) -> None:
    out = stack("status")
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("redis"))
    assert "healthy" in line and f"127.0.0.1:{redis_service.port()}" in line


def test_a_reused_pid_is_not_taken_for_ours(settings: Settings, tmp_path: Path) -> None:
    service = Redis(settings)
    service.run_dir = tmp_path
    service.pid_path.write_text(f"{os.getpid()} 1")  # our PID, but a start time that is not ours
    assert service.pid() is None


def test_postgres_asks_every_connection_for_the_password(postgres_service: Service, settings: Settings) -> None:
    """No ``trust`` in pg_hba.conf, the socket's folder is the server's alone, and a local connection
    without the password is refused (it used to be let in over the Unix socket)."""
    assert isinstance(postgres_service, Postgres)
    hba = (postgres_service.data / "pg_hba.conf").read_text().splitlines()
    assert [line for line in hba if not line.lstrip().startswith("#") and "trust" in line.split()] == []
    assert stat.S_IMODE(postgres_service.socket_dir.stat().st_mode) == 0o700
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    refused = subprocess.run(["psql", "-h", str(postgres_service.socket_dir), "-p", str(settings.postgres_port),
                              "-U", settings.postgres_user, "-d", "postgres", "-w", "-tAc", "SELECT 1"],
                             capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "password" in refused.stderr, refused.stderr


def test_names_from_the_settings_are_quoted_not_executed(postgres_service: Service, settings: Settings) -> None:
    """A database and a reader role with quotes and spaces in their names are created as named."""
    odd = dataclasses.replace(settings, postgres_db='tfp "odd" db; x', trino_postgres_user="tfp reader's")
    Postgres(odd).after_start()
    try:
        with Postgres(settings).connect(odd.postgres_db) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database(), has_schema_privilege(%s, 'gold', 'USAGE')",
                        (odd.trino_postgres_user,))
            assert cur.fetchone() == (odd.postgres_db, True)
    finally:
        cleanup = Postgres(settings)
        cleanup.execute([sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(odd.postgres_db))])
        cleanup.execute([sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(odd.trino_postgres_user))])


def test_gold_schema_name_agrees_with_the_assets() -> None:
    assert GOLD_SCHEMA == SCHEMA


@pytest.mark.stack  # starts its own Kafka
def test_kafka_stores_a_changed_password_on_its_next_start_and_keeps_its_topics(
    settings: Settings, tmp_path: Path
) -> None:
    """The credential is stored through the controller at a storage's first start, and again when the
    password changes (as for a storage formatted before Kafka had one); the old password stops working."""
    own = dataclasses.replace(settings, state_dir=tmp_path, kafka_port=free_port(),
                              kafka_controller_port=free_port())
    changed = dataclasses.replace(own, kafka_password="changed-" + own.kafka_password)
    Kafka(own).start()
    try:
        asyncio.run(KafkaClient.from_settings(own).create_topics([TopicSpec("tfp.test.kept", partitions=1)]))
        Kafka(own).stop()
        Kafka(changed).start()
        assert Kafka(changed).healthy()
        assert not Kafka(own).healthy()
        assert asyncio.run(KafkaClient.from_settings(changed).end_offsets("tfp.test.kept")) == {0: 0}
    finally:
        Kafka(own).stop()


class _SlowLoadingRedis(Redis):
    """Redis told to spend 2 ms on each key it reads back (``key-load-delay``, as Redis's own tests
    do), so reading 3,000 keys takes ~6 s: three times the start timeout below. It answers clients
    every KB read, as it does every 2 MB of a real data set."""

    start_timeout = 2.0

    def command(self) -> list[str]:
        return [*super().command(), "--key-load-delay", "2000", "--loading-process-events-interval-bytes", "1024"]


@pytest.mark.stack  # starts its own Redis
def test_a_start_waits_for_redis_to_read_back_its_data_past_the_timeout(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a large run Redis replays gigabytes of append-only file; a start that gave up at its
    timeout (and stopped the server) left the stack unstartable with its own data."""
    own = dataclasses.replace(settings, state_dir=tmp_path, redis_port=free_port())
    Redis(own).start()
    try:
        client = redis.Redis(port=own.redis_port, password=own.redis_password)
        client.mset({f"key:{i}": i for i in range(3000)})
        client.bgrewriteaof()
        while client.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.1)
        Redis(own).stop()
        _SlowLoadingRedis(own).start()
        assert "loading its data from disk" in capsys.readouterr().out
        assert client.dbsize() == 3000
    finally:
        Redis(own).stop()
