"""One typed source of every host, port, credential and path the platform uses.

The stack manager (``deploy/``), the Dagster resources, the Feast repo and the Trino catalogs all
read :func:`get_settings`, so a port or password is written down exactly once. Every value comes
from an environment variable ``TFP_<FIELD>`` with a default that runs the local stack; moving a
part to a cluster is setting that variable (e.g. ``TFP_SPARK_MASTER=spark://host:7077``).

Credentials are not hard-coded: unless given in the environment they are generated on first use
and kept in ``<state_dir>/credentials.json`` (mode 0600), so each install has its own.

A variable the platform cannot use stops :func:`load_settings` with a :class:`SettingsError` whose
message names it and says what to set, before anything starts with half a configuration; a
``TFP_*`` variable that is no setting (a typo) is reported and ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from taobao_assets.atomic_file import write_private

ENV_PREFIX = "TFP_"
REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATED_SECRETS = ("postgres_password", "redis_password", "minio_secret_key", "trino_postgres_password",
                     "kafka_password")
#: ``TFP_*`` variables read on purpose outside :class:`Settings`, so not reported as unknown ones.
#: They are no settings because they are not configuration: the fail point is fault injection for
#: the tests (taobao_assets/failpoints.py), set for one process and never by an install.
READ_ELSEWHERE = ("TFP_FAILPOINT",)
#: How Kafka clients authenticate on the broker's listener; the broker enables only this one.
KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
#: Characters Kafka's JAAS configuration (quotes) and its SCRAM credential syntax (``[a=b,c=d]``) cannot carry.
KAFKA_UNSAFE = '"\\,[]'

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A ``TFP_*`` variable holds a value the platform cannot use.

    Its message is all a user needs, on one line: the variable, its value and what to set instead,
    so a command line can print it in place of a traceback. A ``ValueError``, as a bad value is.
    """


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taobao-feature-platform"


@dataclass(frozen=True)
class Settings:
    """Connection settings of the whole stack; see the module docstring for how they are set.

    Secrets are left out of ``repr`` (as in the resources built from them): a failed assertion, a
    traceback's locals or a log line may print the settings.
    """

    # Paths: downloads and builds are shared between clones; data and logs belong to a checkout.
    cache_dir: Path = field(default_factory=_default_cache_dir)
    state_dir: Path = REPO_ROOT / ".state"

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 15432
    postgres_user: str = "tfp"
    postgres_password: str = field(default="", repr=False)
    postgres_db: str = "tfp"

    redis_host: str = "127.0.0.1"
    redis_port: int = 16379
    redis_password: str = field(default="", repr=False)

    kafka_host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    #: Kafka's one user: clients authenticate with SASL/SCRAM (``KAFKA_SASL_MECHANISM``), the
    #: controller listener with SASL/PLAIN; both are set up by the stack manager.
    kafka_user: str = "tfp"
    kafka_password: str = field(default="", repr=False)
    #: Prefix of the raw topics (``<prefix>.samples``); the tests use their own so they never
    #: touch a demo's data on the same broker.
    topic_prefix: str = "aliccp"

    minio_host: str = "127.0.0.1"
    minio_port: int = 19000
    minio_console_port: int = 19001
    minio_access_key: str = "tfp-admin"
    minio_secret_key: str = field(default="", repr=False)
    minio_region: str = "us-east-1"
    lake_bucket: str = "lake"
    #: Iceberg catalog shared by Spark and Trino: a JDBC catalog in Postgres, data files in MinIO.
    iceberg_catalog: str = "lakehouse"

    trino_host: str = "127.0.0.1"
    trino_port: int = 18080
    trino_user: str = "tfp"
    #: Trino's role in Postgres for the ``postgresql`` catalog: it may read gold and nothing else.
    trino_postgres_user: str = "tfp_trino"
    trino_postgres_password: str = field(default="", repr=False)
    #: JDK for Trino (it needs a newer Java than Spark); empty = pick one (see deploy/services/trino.py).
    trino_java_home: str = ""

    spark_master: str = "local[*]"
    spark_driver_memory: str = "3g"
    spark_standalone_port: int = 17077
    spark_standalone_web_port: int = 18082
    spark_standalone_workers: int = 2

    dagster_port: int = 3000
    #: The Dagster instance (runs, events, schedules) shared by the demo, the UI and its daemon.
    dagster_home: Path = REPO_ROOT / ".state" / "dagster"
    #: Runs the instance's queue starts at once. Each run of a Spark asset starts its own driver,
    #: so a week's backfill from the UI would otherwise start seven on a laptop; raise it with a
    #: remote Spark master.
    dagster_max_concurrent_runs: int = 1

    #: Feast project: names the registry's objects and prefixes every online-store key in Redis,
    #: so the tests' project never reads or overwrites a demo's features on the shared server.
    feast_project: str = "taobao"

    #: Folder holding the four raw Ali-CCP files (the real ones, or the generator's).
    source_dir: Path = REPO_ROOT / ".state" / "aliccp"
    #: Simulated event time (taobao_assets/source/event_time.py): first day and number of days.
    event_start_date: str = "2026-11-01"
    event_days: int = 7

    # --- derived connection strings -------------------------------------------------------
    @property
    def postgres_dsn(self) -> str:
        """libpq key/value DSN (psycopg2, ``psql``), every value quoted (a password may hold spaces or quotes)."""
        return " ".join(f"{key}={libpq_quote(str(value))}" for key, value in (
            ("host", self.postgres_host), ("port", self.postgres_port), ("dbname", self.postgres_db),
            ("user", self.postgres_user), ("password", self.postgres_password)))

    @property
    def postgres_jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"

    @property
    def redis_url(self) -> str:
        return f"redis://:{quote(self.redis_password, safe='')}@{self.redis_host}:{self.redis_port}/0"

    @property
    def kafka_bootstrap_servers(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://{self.minio_host}:{self.minio_port}"

    @property
    def lake_uri(self) -> str:
        return f"s3://{self.lake_bucket}"

    @property
    def iceberg_warehouse(self) -> str:
        return f"s3://{self.lake_bucket}/warehouse"

    @property
    def trino_url(self) -> str:
        return f"http://{self.trino_host}:{self.trino_port}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def libpq_quote(value: str) -> str:
    """``value`` as a libpq connection-string value: single-quoted, backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _variable(name: str) -> str:
    """The environment variable of the setting ``name`` (``postgres_port`` -> ``TFP_POSTGRES_PORT``)."""
    return ENV_PREFIX + name.upper()


def _default(f: Field[Any]) -> Any:
    """A setting's default, which a message about a bad value offers as the way back."""
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def _parse(f: Field[Any], raw: str) -> Any:
    """The value of setting ``f`` that its variable's text ``raw`` gives, or a :class:`SettingsError`."""
    if f.type in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{_variable(f.name)}={raw!r} is not an integer: set it to a whole number "
                                f"(default {_default(f)}) or unset it") from None
    if f.type in (Path, "Path"):
        try:
            return Path(raw).expanduser()
        except RuntimeError as error:  # "~name/..." of a user this machine does not know
            raise SettingsError(f"{_variable(f.name)}={raw!r} is not a usable path ({error}): set it to a "
                                f"folder (default {_default(f)}) or unset it") from None
    return raw


def _check(settings: Settings) -> None:
    """Refuse the values that parse but that the time line cannot use.

    Checked here, not where they are used: a bad start date would otherwise surface as a bare
    ``ValueError`` of ``date.fromisoformat`` from deep inside the definitions or a replay.
    """
    try:
        date.fromisoformat(settings.event_start_date)
    except ValueError:
        raise SettingsError(f"{_variable('event_start_date')}={settings.event_start_date!r} is not a date: set it "
                            f"to an ISO date YYYY-MM-DD (default {Settings.event_start_date}) or unset it") from None
    for name in ("kafka_user", "kafka_password"):
        if set(getattr(settings, name)) & set(KAFKA_UNSAFE):
            raise SettingsError(f"{_variable(name)} holds one of {' '.join(KAFKA_UNSAFE)}, which Kafka's "
                                f"configuration files cannot carry: set it to a value without them")
    if settings.event_days < 1:
        raise SettingsError(f"{_variable('event_days')}={str(settings.event_days)!r} is less than 1: set it to "
                            f"the number of simulated days (default {Settings.event_days}) or unset it")


def _report_unknown(env: Mapping[str, str], known: list[str]) -> None:
    """Warn of each ``TFP_*`` variable that is no setting: a misspelt one would be silently ignored.

    Names are compared without their common prefix, which would make every name look alike.
    """
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in known}
    for name in sorted(set(env) - set(known)):
        if name.startswith(ENV_PREFIX):
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), list(suffixes), n=1)
            hint = f" (did you mean {suffixes[close[0]]}?)" if close else ""
            log.warning(f"{name} is not a setting{hint}; it is ignored")


def _load_or_create_secrets(state_dir: Path, wanted: list[str]) -> dict[str, str]:
    path = state_dir / "credentials.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in wanted if not stored.get(name)]
    if missing:
        stored.update({name: secrets.token_urlsafe(18) for name in missing})
        state_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, json.dumps(stored, indent=2))
    return stored


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``); fill in generated credentials.

    Raises :class:`SettingsError` on the first variable whose value cannot be used.
    """
    env = os.environ if environ is None else environ
    _report_unknown(env, [*(_variable(f.name) for f in fields(Settings)), *READ_ELSEWHERE])
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(_variable(f.name))
        if raw is not None:
            values[f.name] = _parse(f, raw)
    settings = Settings(**values)
    _check(settings)
    unset = [name for name in GENERATED_SECRETS if not getattr(settings, name)]
    if unset:
        stored = _load_or_create_secrets(settings.state_dir, unset)
        generated: dict[str, Any] = {name: stored[name] for name in unset}
        settings = dataclasses.replace(settings, **generated)
    return settings


@cache
def get_settings() -> Settings:
    """The process-wide settings (read once; tests that change the environment call load_settings)."""
    return load_settings()


def command_settings(parser: argparse.ArgumentParser) -> Settings:
    """:func:`get_settings` for a command line: a bad variable ends the command with its one-line
    message and exit status 2, as a bad option does, instead of a traceback."""
    try:
        return get_settings()
    except SettingsError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
