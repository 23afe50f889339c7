"""The lean reader decodes a stored value exactly as Feast's ``to_dict`` does, and builds Feast's
Redis keys (no server needed)."""

from __future__ import annotations

import random

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from taobao_assets.online_layout import feast_redis_key, redis_key
from taobao_assets.online_read import _python


def test_fast_decoding_equals_feasts_conversion_for_every_kind_of_value():
    rng = random.Random(7)
    ints = [0, 1, -1, 127, 128, 300, -300, 2**63 - 1, -(2**63)]
    ints += [rng.randint(-(2**63), 2**63 - 1) for _ in range(5000)]
    doubles = [0.0, -0.0, 1.5, float("inf"), -float("inf"), 5e-324, 1e308]
    doubles += [rng.uniform(-1e9, 1e9) for _ in range(5000)]
    values = [ValueProto(int64_val=v) for v in ints] + [ValueProto(double_val=v) for v in doubles]
    values += [ValueProto(string_val="x"), ValueProto(int32_val=-5), ValueProto(bool_val=True), ValueProto(),
               ValueProto(float_val=0.25)]
    for value in values:
        assert _python(value.SerializeToString()) == feast_value_type_to_python_type(value), value
    assert _python(None) is None and _python(b"") is None


@pytest.mark.parametrize("join_keys", [("user_id",), ("user_id", "category_id"), ("z_key", "a_key", "m_key")])
def test_redis_keys_are_the_ones_feast_serializes(join_keys: tuple[str, ...]) -> None:
    """Keys packed from their parts equal Feast's serialization: key names sorted, ints and strings."""
    rng = random.Random(3)
    for _ in range(300):
        values = [rng.choice([rng.randint(-(2**63), 2**63 - 1), rng.randint(0, 1000), f"s{rng.randint(0, 99)}é", ""])
                  for _ in join_keys]
        assert redis_key("proj", join_keys, values) == feast_redis_key("proj", join_keys, values), values
