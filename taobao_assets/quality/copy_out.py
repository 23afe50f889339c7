"""A query's rows as Arrow through ``COPY ... TO STDOUT`` as CSV, on a psycopg2 cursor (the checks' driver).

The checks read whole days of gold and of audit results; fetching them as tuples would build a Python
object per cell. Doubles come back exact when the session prints them in their shortest exact form
(``extra_float_digits = 1``, which the caller sets on its cursor).

JIT compilation is turned off for the session: the planner's cost estimates for these scans and
index probes of whole days made Postgres compile each query, which took longer than running it (the
leakage audit of a day at 1 M samples: 3.3 s with it off, 5.3 s with it on).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg2.extensions import cursor as Cursor


def copy_out_csv(cur: Cursor, query: str, column_types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """The rows of ``query`` (parameters already bound), typed by ``column_types`` where given."""
    cur.execute("SET jit = off")
    out = io.BytesIO()
    cur.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)", out)
    options = pa_csv.ConvertOptions(column_types=dict(column_types or {}))
    return pa_csv.read_csv(io.BytesIO(out.getvalue()), convert_options=options)
