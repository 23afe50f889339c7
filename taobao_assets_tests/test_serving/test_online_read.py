"""The lean online reader answers exactly what Feast's ``get_online_features`` answers."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import cycle, islice

import pandas as pd
import pytest
from feast import FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Int64

from taobao_assets.online_read import OnlineReader
from taobao_assets.realtime_tables import REALTIME_TABLES
from taobao_assets.resources.feast import FeastResource
from taobao_assets_tests.test_serving.conftest import latest

UNKNOWN = 10**12


def _write_realtime_rows(store: FeatureStore, gold: dict[str, pd.DataFrame]) -> None:
    """Real-time rows for every other entity of each key kind, some values null, as the stream writes them."""
    for table in REALTIME_TABLES:
        view = store.get_feature_view(table.name)
        source = next(frame for frame in gold.values() if set(table.key_names) <= set(frame.columns))
        entities = latest(source, table.key_names)[table.key_names].drop_duplicates().iloc[::2]
        rows = []
        for number, ids in enumerate(entities.itertuples(index=False)):
            values = {f.name: ValueProto(int64_val=number) if f.dtype == Int64 else ValueProto(double_val=number / 7)
                      for f in view.features}
            values[view.features[0].name] = ValueProto()  # a null, as Feast writes a missing value
            key = EntityKeyProto(join_keys=table.key_names, entity_values=[ValueProto(int64_val=int(i)) for i in ids])
            rows.append((key, values, datetime(2026, 1, 1, tzinfo=UTC), None))
        store._get_provider().online_write_batch(store.config, view, rows, None)


def _every_entity(gold: dict[str, pd.DataFrame]) -> list[dict[str, int]]:
    """Rows that name every user x category pair and every item of the gold tables, and unknown ids."""
    pairs = latest(gold["user_category_features"], ["user_id", "category_id"])[["user_id", "category_id"]]
    items = latest(gold["item_features"], ["item_id"])["item_id"].tolist()
    size = max(len(pairs), len(items))
    rows = [{"user_id": int(u), "category_id": int(c), "item_id": int(i)}
            for (u, c), i in zip(islice(cycle(pairs.itertuples(index=False)), size), islice(cycle(items), size),
                                 strict=True)]
    unknown = [{"user_id": UNKNOWN, "category_id": UNKNOWN, "item_id": UNKNOWN},
               {"user_id": rows[0]["user_id"], "category_id": UNKNOWN, "item_id": UNKNOWN}]
    return [*rows, *unknown]


@pytest.mark.parametrize("service", ["ctr_model_v1", "ctr_model_v1_realtime"])
def test_lean_reader_equals_get_online_features_for_every_entity(
    service: str, materialized: dict, applied: FeastResource, gold: dict[str, pd.DataFrame]
) -> None:
    store = applied.store()
    _write_realtime_rows(store, gold)
    rows = _every_entity(gold)
    expected = store.get_online_features(features=store.get_feature_service(service), entity_rows=rows,
                                         full_feature_names=True).to_dict()
    served = OnlineReader(store, applied.redis.client()).read(service, rows)
    assert served.keys() == expected.keys()
    for name, values in expected.items():
        assert served[name] == values, name
    # The comparison means something only if it saw values, nulls and stale rows.
    features = [name for name in expected if "__" in name]
    assert any(v is None for name in features for v in expected[name])
    assert sum(v is not None for name in features for v in expected[name]) > len(rows)


def test_lean_reader_names_a_missing_join_key(applied: FeastResource) -> None:
    reader = OnlineReader(applied.store(), applied.redis.client())
    with pytest.raises(ValueError, match=r"needs category_id \(views category_features, user_category_features\)"):
        reader.read("ctr_model_v1", [{"user_id": 1, "item_id": 2}])
