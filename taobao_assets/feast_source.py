"""Writes the generated Feast objects out as Python declarations: the committed ``feature_repo/repo.py``.

The module reads like the declarations of Feast's own templates: one statement per entity,
source, feature view and feature service, with names, descriptions, TTLs and tags spelled out, and
it imports nothing but Feast, so ``feast apply`` loads it without the platform's dependencies.
Each object is rendered from the object :func:`taobao_assets.feast_repo.generate` made, and a test
loads the file and compares its objects with the generated ones, so the text cannot drift from
what the registry asset applies.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from typing import TYPE_CHECKING

from feast import Entity, FeatureService, FeatureView, Field, PushSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

if TYPE_CHECKING:
    from taobao_assets.feast_repo import FeastRepo

#: Width the rendered lines stay within (the project's line length is 120).
WIDTH = 110

HEADER = '''"""The Feast declarations of taobao-feature-platform. GENERATED: do not edit by hand.

Written by `python -m taobao_assets.feast_repo generate` from the table contracts in
taobao_assets/gold_tables.py and taobao_assets/realtime_tables.py (a test fails when this file is not
what they generate). `feast -c feature_repo apply` reads it, after
`python -m taobao_assets.feast_repo write-config` wrote feature_store.yaml; the feast_registry asset
applies the same objects.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, PushSource, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
'''


def _str(value: str) -> str:
    """A double-quoted string literal (JSON's escapes are valid Python)."""
    return json.dumps(value, ensure_ascii=False)


def _text(value: str, indent: int) -> str:
    """A string literal, split into implicitly concatenated lines when it would pass :data:`WIDTH`."""
    if indent + len(_str(value)) + 16 <= WIDTH:
        return _str(value)
    chunks = textwrap.wrap(value, width=WIDTH - indent - 8, drop_whitespace=False, break_on_hyphens=False)
    if "".join(chunks) != value:
        raise ValueError(f"cannot split {value!r} into lines without changing it")
    pad = " " * (indent + 4)
    return "(\n" + "".join(f"{pad}{_str(chunk)}\n" for chunk in chunks) + " " * indent + ")"


def _tags(tags: dict[str, str], indent: int) -> str:
    """A tag dictionary, one entry per line when it does not fit on one."""
    items = [f"{_str(k)}: {_str(v)}" for k, v in tags.items()]
    one_line = "{" + ", ".join(items) + "}"
    if indent + len(one_line) + 8 <= WIDTH:
        return one_line
    pad = " " * (indent + 4)
    return "{\n" + "".join(f"{pad}{item},\n" for item in items) + " " * indent + "}"


def _call(name: str, kind: str, arguments: Iterable[tuple[str, str]]) -> str:
    lines = [f"{name} = {kind}("]
    lines += [f"    {key}={value}," for key, value in arguments]
    return "\n".join([*lines, ")"])


def _common(obj: Entity | PostgreSQLSource | PushSource | FeatureView | FeatureService) -> list[tuple[str, str]]:
    return [("description", _text(obj.description, 4)), ("tags", _tags(dict(obj.tags), 4))]


def _entity(entity: Entity) -> str:
    return _call(entity.name, "Entity", [
        ("name", _str(entity.name)), ("join_keys", f"[{_str(entity.join_key)}]"),
        ("value_type", f"ValueType.{entity.value_type.name}"), *_common(entity),
    ])


def _batch_source(source: PostgreSQLSource) -> str:
    return _call(source.name, "PostgreSQLSource", [
        ("name", _str(source.name)), ("table", _str(source.get_table_query_string())),
        ("timestamp_field", _str(source.timestamp_field)), *_common(source),
    ])


def _push_source(source: PushSource) -> str:
    assert source.batch_source is not None  # every generated push source logs to a Postgres table
    return _call(source.name, "PushSource", [
        ("name", _str(source.name)), ("batch_source", source.batch_source.name), *_common(source),
    ])


def _field(field: Field, indent: int) -> str:
    """One schema entry, on one line when it fits, else one argument per line."""
    pad = " " * indent
    one_line = f"{pad}Field(name={_str(field.name)}, dtype={field.dtype}, description={_str(field.description)}),"
    if len(one_line) <= WIDTH:
        return one_line
    return (f"{pad}Field(\n{pad}    name={_str(field.name)},\n{pad}    dtype={field.dtype},\n"
            f"{pad}    description={_text(field.description, indent + 4)},\n{pad}),")


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    return f"timedelta(days={days})" if days and not rest else f"timedelta(seconds={seconds})"


def _view(view: FeatureView) -> str:
    source = view.stream_source or view.batch_source
    assert source is not None and view.ttl is not None  # generated views always have both
    schema = "\n".join(_field(f, 8) for f in [*view.entity_columns, *view.features])
    return _call(view.name, "FeatureView", [
        ("name", _str(view.name)),
        ("entities", "[" + ", ".join(view.entities) + "]"),
        ("ttl", _duration(int(view.ttl.total_seconds()))),
        ("schema", f"[\n{schema}\n    ]"),
        ("source", source.name),
        ("online", repr(view.online)),
        *_common(view),
    ])


def _service(service: FeatureService) -> str:
    views = "".join(f"        {p.name},\n" for p in service.feature_view_projections)
    return _call(service.name, "FeatureService", [
        ("name", _str(service.name)), ("features", f"[\n{views}    ]"), *_common(service),
    ])


def render(repo: FeastRepo) -> str:
    """The source of ``feature_repo/repo.py`` declaring exactly ``repo``'s objects."""
    sections = [
        ("Entities: one per key column of the contracts.", [_entity(e) for e in repo.entities]),
        ("Batch sources: the Postgres tables of the gold (and streaming log) schemas.",
         [_batch_source(s) for s in repo.batch_sources]),
        ("Push sources: what the streaming run writes into the real-time views.",
         [_push_source(s) for s in repo.push_sources]),
        ("Feature views: one per table contract.", [_view(v) for v in repo.feature_views]),
        ("Feature services: the views each model consumes.", [_service(s) for s in repo.feature_services]),
    ]
    body = "\n\n".join(f"# {title}\n" + "\n\n".join(blocks) for title, blocks in sections)
    types = sorted({str(f.dtype) for v in repo.feature_views for f in [*v.entity_columns, *v.features]})
    return f"{HEADER}from feast.types import {', '.join(types)}\n\n{body}\n"
