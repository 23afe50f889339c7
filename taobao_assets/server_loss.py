"""Losing a server for a moment does not fail a run; losing it for good fails it in one line.

Every step that talks to a server (the assets, the replay and streaming ops) carries
:data:`SERVER_RETRY`: after a failure Dagster runs the step again after 5, 10, 20 and 40 s (75 s
in all), so a server restarted within a minute (by ``python -m deploy.stack up``, or a cluster's
supervisor) costs a retry, not the run. Running a step again is safe because every step is
idempotent: the replay resumes from its checkpoint, bronze writes beside the stored day and
switches the manifest, silver and gold replace their day in one commit, the online store and the
training set rewrite what they hold, the stream applies exact offset ranges once.

Only a lost server is worth waiting for. :func:`on_server_loss` wraps a step's function so that:

- an error while a server of the stack does not answer becomes :class:`ServerDown`, one line
  naming the server, its address and the command that starts it (retried; the run's last error
  if the server stays down);
- a client's connection error (the server answered again by the time it was looked at: it was
  restarted) is retried as it is;
- any other error fails the step at once (``Failure(allow_retries=False)``): a bad input or a
  blocked day does not get better by waiting 75 s.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar, cast

from dagster import Backoff, Failure, RetryPolicy

from taobao_assets.settings import Settings, get_settings

#: Retries of a step that lost a server: after 5, 10, 20, 40 s.
SERVER_RETRY = RetryPolicy(max_retries=4, delay=5, backoff=Backoff.EXPONENTIAL)

#: What a JVM client (Spark's JDBC, S3 and Kafka clients inside a Py4J error) says when it lost a server.
_JAVA_CONNECTION_LOSS = re.compile(
    r"java\.net\.(Connect|Socket|NoRouteToHost)Exception|Connection refused|Connection reset|"
    r"This connection has been closed|EOFException|Unable to execute HTTP request|I/O error|"
    r"terminating connection due to", re.IGNORECASE)

F = TypeVar("F", bound=Callable[..., Any])


class ServerDown(ConnectionError):
    """A server of the stack does not answer."""


SERVER_NAMES = ("postgres", "redis", "kafka", "minio", "trino")


def servers(settings: Settings) -> dict[str, tuple[str, int]]:
    """Stack service name -> (host, port) of each server a step may talk to."""
    return {"postgres": (settings.postgres_host, settings.postgres_port),
            "redis": (settings.redis_host, settings.redis_port),
            "kafka": (settings.kafka_host, settings.kafka_port),
            "minio": (settings.minio_host, settings.minio_port),
            "trino": (settings.trino_host, settings.trino_port)}


def servers_down(settings: Settings, names: tuple[str, ...] = SERVER_NAMES) -> dict[str, tuple[str, int]]:
    """The servers among ``names`` that refuse or do not accept a TCP connection now."""
    from deploy.service import port_open  # the stack manager's probe: one definition of "answers"

    return {name: address for name, address in servers(settings).items()
            if name in names and not port_open(*address)}


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a client losing its server."""
    import aiokafka.errors
    import botocore.exceptions
    import psycopg
    import psycopg2
    import redis.exceptions
    import sqlalchemy.exc

    lost = (ConnectionError, TimeoutError, psycopg2.OperationalError, psycopg2.InterfaceError,
            psycopg.OperationalError, sqlalchemy.exc.OperationalError,  # Feast's registry and offline store
            botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ReadTimeoutError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError,  # a restarted Redis reading its append-only file back
            aiokafka.errors.KafkaConnectionError, aiokafka.errors.KafkaTimeoutError,
            aiokafka.errors.NodeNotReadyError, aiokafka.errors.RequestTimedOutError)
    for error in _chain(exc):
        if isinstance(error, lost):
            return True
        # The same, as a reply inside a pipeline (Feast's writes): no BusyLoadingError there.
        if isinstance(error, redis.exceptions.ResponseError) and str(error).startswith("LOADING"):
            return True
        if type(error).__module__.startswith("py4j") and _JAVA_CONNECTION_LOSS.search(str(error)):
            return True
        # A restarted Trino takes queries before it can run them (found by the fault matrix).
        if getattr(error, "error_name", None) == "SERVER_STARTING_UP" and type(error).__module__.startswith("trino"):
            return True
    return False


def retry_is_safe(exc: BaseException) -> bool:
    """Whether ``exc`` is an error a retry of the same step undoes, though no connection was lost.

    The stream's lease lapses while a server it waits for is away (Kafka restarting takes longer
    than a lease); the retry takes the lease again, waiting for any other holder, and resumes
    from the offsets the state says were applied, so nothing is applied twice.
    """
    from taobao_assets.streaming.state import LeaseLost

    return any(isinstance(error, LeaseLost) for error in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def step_error(exc: Exception, uses: tuple[str, ...], settings: Settings | None = None) -> Exception:
    """What a step that talks to the servers ``uses`` raises for ``exc`` (see the module docstring)."""
    if isinstance(exc, (Failure, ServerDown)) or type(exc).__module__.startswith("dagster"):
        return exc  # already decided, or Dagster's own control flow (retry requests, interrupts)
    down = servers_down(settings or get_settings(), uses)
    if down or lost_connection(exc):
        from taobao_assets.resources.spark import reconnect_catalogs

        # The retry must not reuse Spark's dead catalog connections, whichever client noticed the
        # loss first (the gold writer's own connection does, when Postgres goes between two writes).
        reconnect_catalogs()
    if down:
        names = " ".join(down)
        where = ", ".join(f"{name} at {host}:{port}" for name, (host, port) in down.items())
        return ServerDown(f"{where} does not answer ({type(exc).__name__}: {_first_line(exc)}); start it with "
                          f"`python -m deploy.stack up {names}` (the step is retried for 75 s)")
    if lost_connection(exc) or retry_is_safe(exc):
        return exc
    return Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"


def on_server_loss(*uses: str) -> Callable[[F], F]:
    """Decorator of a step's function (plain or generator) that talks to the servers ``uses`` (names
    of :func:`servers`): its errors are sorted by :func:`step_error`."""
    unknown = set(uses) - set(SERVER_NAMES)
    if unknown:
        raise ValueError(f"unknown servers {sorted(unknown)}: known are {', '.join(SERVER_NAMES)}")

    def raise_sorted(exc: Exception) -> NoReturn:
        error = step_error(exc, uses)
        if error is exc:
            raise exc
        raise error from exc

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:
                    raise_sorted(exc)
            return cast(F, generator)

        @functools.wraps(fn)
        def plain(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                raise_sorted(exc)
        return cast(F, plain)
    return decorate
