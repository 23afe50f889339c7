from __future__ import annotations

import uuid

from psycopg2.extras import execute_values

from deploy.service import Service
from taobao_assets.resources.postgres import PostgresResource
from taobao_assets.settings import Settings


def test_postgres_round_trips_a_table(settings: Settings, postgres_service: Service) -> None:
    pg = PostgresResource.from_settings(settings)
    table = f"rt_{uuid.uuid4().hex[:8]}"
    rows = [(i, f"name-{i}", i * 0.5) for i in range(1000)]
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id bigint primary key, name text, score double precision)")
        execute_values(cur, f"INSERT INTO {table} VALUES %s", rows)
    try:
        with pg.connect() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT id, name, score FROM {table} ORDER BY id")
            assert cur.fetchall() == rows
    finally:
        with pg.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE {table}")


def test_postgres_listens_only_on_loopback(settings: Settings, postgres_service: Service) -> None:
    with PostgresResource.from_settings(settings).connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone() == ("127.0.0.1",)
