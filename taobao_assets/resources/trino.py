"""Trino: one SQL engine over silver (catalog ``iceberg``) and gold (catalog ``postgresql``).

Queries name their tables in full (``iceberg.silver.impressions``, ``postgresql.gold.user_features``)
because a single query often spans both catalogs. SQL that assets run lives in ``.sql`` files;
:meth:`TrinoResource.run_sql_file` runs one, statement by statement, since Trino accepts exactly one
statement per request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

from taobao_assets.settings import Settings

# The Trino client and pandas are imported where a query runs: every run process builds this resource.
if TYPE_CHECKING:
    import pandas as pd
    import trino

Row = tuple[Any, ...]


def split_statements(script: str) -> list[str]:
    """Split ``script`` on ``;`` outside string literals, quoted identifiers and comments."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(script):
        char = script[i]
        if quote is not None:
            current.append(char)
            if char == quote:  # a doubled quote ('it''s') closes and reopens: same result
                quote = None
        elif char in "'\"":
            quote = char
            current.append(char)
        elif script.startswith("--", i):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue
        elif script.startswith("/*", i):
            end = script.find("*/", i + 2)
            i = len(script) if end < 0 else end + 2
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


class TrinoResource(ConfigurableResource):
    host: str
    port: int
    user: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TrinoResource:
        return cls(host=settings.trino_host, port=settings.trino_port, user=settings.trino_user)

    @contextmanager
    def connect(self) -> Iterator[trino.dbapi.Connection]:
        import trino

        conn = trino.dbapi.connect(
            host=self.host, port=self.port, user=self.user, source="taobao-feature-platform",
        )
        try:
            yield conn
        finally:
            conn.close()

    def _execute(self, sql: str, params: Sequence[Any] | None) -> tuple[list[Row], list[str]]:
        with self.connect() as conn:
            cursor = conn.cursor()
            cursor.execute(sql, params)
            # Fetching to the end is also what waits for DDL and INSERT to finish.
            rows = [tuple(row) for row in cursor.fetchall()]
            columns = [column[0] for column in cursor.description or []]
        return rows, columns

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[Row]:
        """Run one statement (``?`` placeholders bound from ``params``) and return its rows."""
        return self._execute(sql, params)[0]

    def query_df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        import pandas as pd

        rows, columns = self._execute(sql, params)
        return pd.DataFrame.from_records(rows, columns=columns)

    def run_sql_file(self, path: Path) -> list[Row]:
        """Run every statement of ``path`` in order; return the rows of the last one."""
        import trino

        statements = split_statements(path.read_text())
        if not statements:
            raise ValueError(f"{path}: no SQL statement in the file")
        rows: list[Row] = []
        for number, statement in enumerate(statements, start=1):
            try:
                rows = self.query(statement)
            except trino.exceptions.TrinoQueryError as exc:
                exc.add_note(f"in {path}, statement {number} of {len(statements)}")
                raise
        return rows
