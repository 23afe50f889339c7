"""The streaming run's online writer leaves Redis exactly as Feast's own ``online_write_batch`` does."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from feast import FeatureStore
from feast.infra.online_stores.helpers import _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from taobao_assets.features import smoothed_ctr
from taobao_assets.realtime_tables import REALTIME_TABLES
from taobao_assets.resources.feast import FeastResource
from taobao_assets.streaming.join import KINDS
from taobao_assets.streaming.online import OnlineWriter, streaming_store
from taobao_assets.streaming.state import EntityState, StreamState

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PRIOR = 0.0375


def _states(state: StreamState, rng: random.Random) -> list[EntityState]:
    """States of every real-time table: ids up to 2**62, zero and large counts, times with and
    without milliseconds."""
    states = []
    for table in REALTIME_TABLES:
        prefix = f"{state.entity_prefix}{KINDS[tuple(table.key_names)]}:"
        for n in range(60):
            ids = ":".join(str(rng.choice([0, 1, 7, rng.randrange(2**62)])) for _ in table.key_names)
            today = (rng.randrange(10**6), rng.randrange(1000), rng.randrange(10))
            hour = (0, 0, 0) if n % 5 == 0 else (rng.randrange(500), rng.randrange(50), rng.randrange(5))
            latest = rng.choice([1_700_000_000_000, 1_700_000_000_123, rng.randrange(16 * 10**11, 18 * 10**11)])
            states.append(EntityState(prefix + ids, latest, n + 1, today, hour))
    return states


def _feast_rows(writer: OnlineWriter, states: list[EntityState]) -> dict[str, list[Any]]:
    """The rows of ``states`` as Feast's push path hands them to ``online_write_batch``: protos."""
    rows: dict[str, list[Any]] = {}
    for state in states:
        prefix = next(p for p in writer.tables if state.key.startswith(p))
        table = writer.tables[prefix].table
        ids = [ValueProto(int64_val=int(i)) for i in state.key[len(prefix):].split(":")]
        values: dict[str, ValueProto] = {}
        for span, (i, c, v) in (("today", state.today), ("1h", state.hour)):
            values |= {f"impressions_{span}": ValueProto(int64_val=i), f"clicks_{span}": ValueProto(int64_val=c),
                       f"conversions_{span}": ValueProto(int64_val=v),
                       f"ctr_{span}": ValueProto(double_val=(c + PRIOR * 100) / (i + 100))}
        stamp = EPOCH + timedelta(milliseconds=state.latest_ms)
        rows.setdefault(table.name, []).append(
            (EntityKeyProto(join_keys=table.key_names, entity_values=ids), values, stamp, None))
    return rows


def _hashes(store: FeatureStore, rows: dict[str, list[Any]]) -> dict[bytes, dict[bytes, bytes]]:
    client = RedisOnlineStore()._get_client(store.config.online_store)
    keys = {_redis_key(store.project, row[0], entity_key_serialization_version=3)
            for table_rows in rows.values() for row in table_rows}
    return {key: client.hgetall(key) for key in keys}


def test_the_writer_leaves_the_bytes_of_feasts_online_write_batch(stream_feast: FeastResource, settings: Any
                                                                   ) -> None:
    assert smoothed_ctr(3, 7, PRIOR) == (3 + PRIOR * 100) / (7 + 100)  # the reference's formula, spelled out
    store = streaming_store(stream_feast)
    state = StreamState(stream_feast.redis.client(), "test.online_writer", {"u": 86_400, "i": 86_400, "uc": 86_400})
    writer = OnlineWriter(store, state)
    states = _states(state, random.Random(16))
    rows = _feast_rows(writer, states)
    written = writer.write(states, PRIOR)
    assert written == {name: len(table_rows) for name, table_rows in rows.items()}
    ours = _hashes(store, rows)
    client = RedisOnlineStore()._get_client(store.config.online_store)
    client.delete(*ours)
    online = RedisOnlineStore()
    for name, table_rows in rows.items():
        online.online_write_batch(store.config, store.get_feature_view(name), table_rows, None)
    feasts = _hashes(store, rows)
    client.delete(*feasts)
    assert ours == feasts
    assert all(len(fields) >= 9 for fields in ours.values())
