"""Which step errors wait for a server and which fail at once, through Dagster's own retry machinery."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis.exceptions
import trino.exceptions
from dagster import Failure, RetryPolicy, asset, materialize

from taobao_assets import server_loss
from taobao_assets.server_loss import ServerDown, lost_connection, on_server_loss, step_error
from taobao_assets.settings import Settings, load_settings
from taobao_assets.streaming.state import LeaseLost


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something answers on: a server that is up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stack(tmp_path: Path, listening: int, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose MinIO answers and whose Postgres does not, seen by the steps."""
    settings = dataclasses.replace(load_settings({"TFP_STATE_DIR": str(tmp_path)}), minio_host="127.0.0.1",
                                   minio_port=listening, postgres_host="127.0.0.1", postgres_port=_closed_port())
    monkeypatch.setattr(server_loss, "get_settings", lambda: settings)
    return settings


class _JavaError(Exception):
    """Stands in for py4j's Py4JJavaError, which needs a JVM: what matters is its module and text."""

    __module__ = "py4j.protocol"


def test_client_connection_errors_are_recognised_through_their_causes() -> None:
    assert lost_connection(psycopg2.OperationalError("server closed the connection unexpectedly"))
    assert lost_connection(ConnectionResetError(104, "Connection reset by peer"))
    assert lost_connection(_JavaError("An error occurred: java.net.ConnectException: Connection refused"))
    # Iceberg's catalog on a pooled connection a restarted Postgres had ended (found by the fault matrix)
    assert lost_connection(_JavaError("UncheckedSQLException: Failed to get table silver.impressions\nCaused by: "
                                      "org.postgresql.util.PSQLException: FATAL: terminating connection due to "
                                      "unexpected postmaster exit"))
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError as cause:
            raise RuntimeError("writing the day failed") from cause
    except RuntimeError as wrapped:
        assert lost_connection(wrapped)
    assert lost_connection(redis.exceptions.ResponseError("LOADING Redis is loading the dataset in memory"))
    assert not lost_connection(redis.exceptions.ResponseError("WRONGTYPE Operation against a key"))
    assert not lost_connection(ValueError("line 7: field 205 is not an integer"))
    assert not lost_connection(_JavaError("AnalysisException: column itemid does not exist"))
    starting = {"errorName": "SERVER_STARTING_UP", "errorType": "INTERNAL_ERROR", "message": "still initializing"}
    assert lost_connection(trino.exceptions.TrinoQueryError(starting, "q1"))
    assert not lost_connection(trino.exceptions.TrinoQueryError(
        {**starting, "errorName": "COLUMN_NOT_FOUND", "errorType": "USER_ERROR"}, "q2"))


def test_an_error_while_a_server_is_down_names_it_and_the_command(stack: Settings) -> None:
    error = step_error(ValueError("anything"), ("minio", "postgres"))
    assert isinstance(error, ServerDown)
    message = str(error)
    assert f"postgres at 127.0.0.1:{stack.postgres_port} does not answer" in message
    assert "`python -m deploy.stack up postgres`" in message and "minio" not in message.split("(")[0]
    assert "\n" not in message
    # A step that does not use the server is not told about it.
    assert not isinstance(step_error(ValueError("anything"), ("minio",)), ServerDown)


def test_with_its_servers_up_a_lost_connection_is_retried_and_anything_else_fails_at_once(stack: Settings) -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    assert step_error(reset, ("minio",)) is reset
    bad_input = step_error(ValueError("line 7: bad"), ("minio",))
    assert isinstance(bad_input, Failure) and not bad_input.allow_retries
    assert bad_input.description == "ValueError: line 7: bad"
    # The stream's lease lapsed while Kafka restarted, which answers again (here the fixture's MinIO
    # stands for it): the retry takes the lease again and resumes from the state.
    lapsed = LeaseLost("the streaming lease of s is held by None, not 'run:1'")
    assert step_error(lapsed, ("minio",)) is lapsed


def test_dagster_retries_a_lost_server_and_not_a_bad_input(stack: Settings) -> None:
    attempts: list[str] = []

    def step(first_error: Exception) -> object:
        @asset(name=f"step_{len(attempts)}", retry_policy=RetryPolicy(max_retries=2))
        @on_server_loss("minio")
        def _step() -> int:
            attempts.append(type(first_error).__name__)
            if attempts.count(type(first_error).__name__) == 1:
                raise first_error
            return 1
        return _step

    assert materialize([step(ConnectionResetError(104, "reset"))], raise_on_error=False).success
    assert attempts == ["ConnectionResetError"] * 2
    attempts.clear()
    failed = materialize([step(ValueError("line 7: bad"))], raise_on_error=False)
    assert not failed.success and attempts == ["ValueError"]
    assert "ValueError: line 7: bad" in str(failed.all_events)
