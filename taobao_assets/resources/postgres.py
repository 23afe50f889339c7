"""PostgreSQL: the Feast offline store (schema ``gold``), Feast registry and Iceberg JDBC catalog."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
from dagster import ConfigurableResource
from psycopg.conninfo import make_conninfo
from pydantic import Field

from taobao_assets.settings import Settings


class PostgresResource(ConfigurableResource):
    host: str
    port: int
    user: str
    password: str = Field(repr=False)
    database: str

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresResource:
        return cls(
            host=settings.postgres_host, port=settings.postgres_port, user=settings.postgres_user,
            password=settings.postgres_password, database=settings.postgres_db,
        )

    @property
    def sqlalchemy_url(self) -> str:
        """URL for SQLAlchemy-based clients (Feast's SQL registry and offline store); the user, password
        and database are percent-encoded, so an ``@``, ``/`` or space in them stays theirs."""
        user, password, database = (quote(v, safe="") for v in (self.user, self.password, self.database))
        return f"postgresql+psycopg://{user}:{password}@{self.host}:{self.port}/{database}"

    @property
    def conninfo(self) -> str:
        """libpq connection string, for clients outside this process (Spark's Python workers)."""
        return make_conninfo(host=self.host, port=self.port, user=self.user, password=self.password,
                             dbname=self.database, application_name="taobao-feature-platform")

    @contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection that commits when the block succeeds and rolls back when it raises."""
        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname=self.database, application_name="taobao-feature-platform",
        )
        try:
            with conn:
                yield conn
        finally:
            conn.close()
