from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import boto3
import psycopg2
import pytest
from psycopg2.extras import execute_values

from deploy.service import Service
from deploy.services.trino import Trino
from taobao_assets.resources.trino import TrinoResource, split_statements
from taobao_assets.settings import Settings


@pytest.fixture
def trino_resource(settings: Settings, trino_service: Service) -> TrinoResource:
    return TrinoResource.from_settings(settings)


@pytest.fixture
def pg_schema(settings: Settings, postgres_service: Service) -> Iterator[str]:
    """A throwaway Postgres schema, dropped with everything in it after the test."""
    schema = f"trino_test_{uuid.uuid4().hex[:8]}"
    with psycopg2.connect(settings.postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
        # Readable by Trino's read-only role, as gold is (deploy/services/postgres.py).
        cur.execute(f"GRANT USAGE ON SCHEMA {schema} TO {settings.trino_postgres_user}")
        cur.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO "
                    f"{settings.trino_postgres_user}")
    yield schema
    with psycopg2.connect(settings.postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")


def test_trino_lists_the_iceberg_and_postgresql_catalogs(trino_resource: TrinoResource) -> None:
    catalogs = {row[0] for row in trino_resource.query("SHOW CATALOGS")}
    assert {"iceberg", "postgresql"} <= catalogs


def test_postgres_rows_read_through_trino_match_exactly(
    settings: Settings, trino_resource: TrinoResource, pg_schema: str
) -> None:
    rows: list[tuple[object, ...]] = [
        (i, f"user-{i}", i * 0.25, Decimal(i) / Decimal(8), i % 3 == 0,
         dt.date(2024, 1, 1) + dt.timedelta(days=i), dt.datetime(2024, 1, 1, 12, 30, 15, 123456 + i))
        for i in range(200)
    ]
    rows.append((200, None, None, None, None, None, None))
    with psycopg2.connect(settings.postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {pg_schema}.events (id bigint PRIMARY KEY, name text, score double precision, "
            "amount numeric(12, 4), flag boolean, day date, seen_at timestamp)"
        )
        execute_values(cur, f"INSERT INTO {pg_schema}.events VALUES %s", rows)
        cur.execute(f"SELECT * FROM {pg_schema}.events ORDER BY id")
        from_postgres = cur.fetchall()

    sql = f"SELECT * FROM postgresql.{pg_schema}.events ORDER BY id"
    assert trino_resource.query(sql) == from_postgres
    frame = trino_resource.query_df(sql + " LIMIT ?", [5])
    assert list(frame.columns) == ["id", "name", "score", "amount", "flag", "day", "seen_at"]
    assert frame["id"].tolist() == [0, 1, 2, 3, 4]


def test_iceberg_round_trip_uses_the_jdbc_catalog_and_minio(
    settings: Settings, trino_resource: TrinoResource, minio_service: Service
) -> None:
    schema = f"trino_test_{uuid.uuid4().hex[:8]}"
    prefix = f"warehouse/{schema}/"
    trino_resource.query(
        f"CREATE SCHEMA iceberg.{schema} WITH (location = 's3://{settings.lake_bucket}/{prefix}')"
    )
    try:
        trino_resource.query(f"CREATE TABLE iceberg.{schema}.clicks (id bigint, item varchar, ctr double)")
        trino_resource.query(
            f"INSERT INTO iceberg.{schema}.clicks VALUES (1, 'a', 0.5), (2, 'b', 0.25), (3, NULL, NULL)"
        )
        assert trino_resource.query(f"SELECT * FROM iceberg.{schema}.clicks ORDER BY id") == [
            (1, "a", 0.5), (2, "b", 0.25), (3, None, None),
        ]
        # The table is registered in the JDBC catalog Spark shares, and its files are in MinIO.
        with psycopg2.connect(settings.postgres_dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT metadata_location FROM iceberg_tables "
                "WHERE catalog_name = %s AND table_namespace = %s AND table_name = 'clicks'",
                (settings.iceberg_catalog, schema),
            )
            (metadata_location,) = cur.fetchone() or (None,)
        assert str(metadata_location).startswith(f"s3://{settings.lake_bucket}/{prefix}clicks")
        s3 = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.minio_region,
            aws_access_key_id=settings.minio_access_key, aws_secret_access_key=settings.minio_secret_key,
        )
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.lake_bucket, Prefix=prefix)["Contents"]]
        assert any(k.endswith(".parquet") for k in keys)
        assert any(k.endswith(".metadata.json") for k in keys)
    finally:
        trino_resource.query(f"DROP TABLE IF EXISTS iceberg.{schema}.clicks")
        trino_resource.query(f"DROP SCHEMA IF EXISTS iceberg.{schema}")
    with psycopg2.connect(settings.postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM iceberg_tables WHERE table_namespace = %s", (schema,))
        assert cur.fetchone() == (0,)


def test_sql_file_runs_every_statement_in_order(
    settings: Settings, trino_resource: TrinoResource, tmp_path: Path
) -> None:
    schema = f"trino_test_{uuid.uuid4().hex[:8]}"
    script = tmp_path / "notes.sql"
    script.write_text(
        "-- build a table; fill it; read it back\n"
        f"CREATE SCHEMA iceberg.{schema} WITH (location = 's3://{settings.lake_bucket}/warehouse/{schema}/');\n"
        f"CREATE TABLE iceberg.{schema}.notes (id bigint, body varchar);\n"
        f"INSERT INTO iceberg.{schema}.notes VALUES (1, 'semi;colon'), (2, 'it''s');\n"
        f"/* the answer; */ SELECT id, body FROM iceberg.{schema}.notes ORDER BY id;\n"
    )
    try:
        assert trino_resource.run_sql_file(script) == [(1, "semi;colon"), (2, "it's")]
    finally:
        trino_resource.query(f"DROP TABLE IF EXISTS iceberg.{schema}.notes")
        trino_resource.query(f"DROP SCHEMA IF EXISTS iceberg.{schema}")


def test_trino_reads_gold_and_nothing_else_and_writes_nothing(
    settings: Settings, trino_resource: TrinoResource
) -> None:
    """Trino's Postgres role is read-only on gold: a query through Trino cannot change the feature store
    or read the Feast registry and the other schemas."""
    with psycopg2.connect(settings.postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS gold.trino_probe (id bigint)")
        cur.execute("TRUNCATE gold.trino_probe")
        cur.execute("INSERT INTO gold.trino_probe VALUES (7)")
        cur.execute("CREATE TABLE public.trino_secret_probe (id bigint)")
    try:
        assert trino_resource.query("SELECT id FROM postgresql.gold.trino_probe") == [(7,)]
        for statement in ("INSERT INTO postgresql.gold.trino_probe VALUES (8)",
                          "DELETE FROM postgresql.gold.trino_probe",
                          "DROP TABLE postgresql.gold.trino_probe",
                          "CREATE TABLE postgresql.gold.trino_new (id bigint)",
                          "SELECT * FROM postgresql.public.trino_secret_probe"):
            with pytest.raises(Exception, match=r"(?i)permission denied|must be owner|does not exist"):
                trino_resource.query(statement)
        assert trino_resource.query("SELECT id FROM postgresql.gold.trino_probe") == [(7,)]
    finally:
        with psycopg2.connect(settings.postgres_dsn) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE gold.trino_probe")
            cur.execute("DROP TABLE public.trino_secret_probe")


def test_sql_splitter_keeps_semicolons_inside_literals_and_identifiers() -> None:
    assert split_statements("SELECT ';' AS \"a;b\"; -- x; y\n\n SELECT 2;") == [
        "SELECT ';' AS \"a;b\"", "SELECT 2",
    ]


def test_catalogs_are_generated_from_settings(settings: Settings, tmp_path: Path) -> None:
    moved = dataclasses.replace(settings, state_dir=tmp_path, postgres_port=25432, minio_port=29000)
    Trino(moved).write_config()
    catalog = tmp_path / "trino" / "etc" / "catalog"
    iceberg = dict(
        line.split("=", 1) for line in (catalog / "iceberg.properties").read_text().splitlines()
    )
    assert iceberg["iceberg.jdbc-catalog.catalog-name"] == settings.iceberg_catalog
    assert iceberg["iceberg.jdbc-catalog.connection-url"] == moved.postgres_jdbc_url
    assert ":25432/" in moved.postgres_jdbc_url
    assert iceberg["s3.endpoint"] == "http://127.0.0.1:29000"
    assert iceberg["iceberg.jdbc-catalog.default-warehouse-dir"] == settings.iceberg_warehouse
    assert ":25432/" in (catalog / "postgresql.properties").read_text()
    assert {p.name: p.stat().st_mode & 0o777 for p in catalog.iterdir()} == {
        "iceberg.properties": 0o600, "postgresql.properties": 0o600,
    }
