"""The column-at-a-time encoder writes exactly the bytes Feast's own serialization does (no server needed)."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from taobao_assets.online_encoding import Cells, command, decimal, entity_keys, proto_values, single, varint, wire

RNG = random.Random(15)
INTS = [0, 1, -1, 127, 128, 300, -300, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
INTS32 = [0, 1, -1, 127, 128, -300, 2**31 - 1, -(2**31)] + [RNG.randint(-(2**31), 2**31 - 1) for _ in range(500)]
DOUBLES = [0.0, -0.0, 1.5, math.inf, -math.inf, 5e-324, 1e308, math.nan] + [RNG.uniform(-1e9, 1e9) for _ in range(500)]
COLUMNS = {
    ValueType.INT64: pa.array([*INTS, *(RNG.randint(-(2**63), 2**63 - 1) for _ in range(500)), None], pa.int64()),
    ValueType.INT32: pa.array([*INTS32, None], pa.int32()),
    ValueType.DOUBLE: pa.array([*DOUBLES, None], pa.float64()),
    ValueType.FLOAT: pa.array([*DOUBLES, 0.1, 3.4e38, None], pa.float64()),
    ValueType.STRING: pa.array(["", "a", "é\x00", "x" * 300, None, "日本"], pa.string()),
    ValueType.BOOL: pa.array([True, False, None], pa.bool_()),
}


def _feast(column: pa.Array, value_type: ValueType) -> list[bytes]:
    """What Feast's materialization writes for a column: ``python_values_to_proto_values`` of the
    column's numpy values (``_columns_to_proto_values``), each serialized."""
    values = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [v.SerializeToString() for v in values]


@pytest.mark.parametrize("value_type", list(COLUMNS))
def test_values_are_feasts_bytes(value_type: ValueType) -> None:
    column = COLUMNS[value_type]
    # An int64 column with a null reaches Feast as floats (numpy), which rounds beyond 2**53: compare
    # the exact values without the null, and the null alone.
    if value_type == ValueType.INT64:
        assert proto_values(column, value_type).tolist()[-1] == b""
        column = column.slice(0, len(column) - 1)
    assert proto_values(column, value_type).tolist() == _feast(column, value_type)


def test_a_sliced_column_encodes_its_own_rows() -> None:
    column = COLUMNS[ValueType.STRING].slice(2, 3)
    assert proto_values(column, ValueType.STRING).tolist() == _feast(column, ValueType.STRING)


@pytest.mark.parametrize("keys", [
    {"user_id": ValueType.INT64},
    {"user_id": ValueType.INT64, "category_id": ValueType.INT64},
    {"shop": ValueType.STRING, "b": ValueType.INT32},
])
def test_entity_keys_are_feasts_redis_keys(keys: dict[str, ValueType]) -> None:
    rows = 300
    rng = np.random.default_rng(1)
    columns = {
        name: (pa.array([f"s{i}" * (i % 4) for i in range(rows)]) if kind == ValueType.STRING else
               pa.array(rng.integers(-(2**31), 2**31, rows), pa.int64() if kind == ValueType.INT64 else pa.int32()))
        for name, kind in keys.items()}
    expected = []
    for i in range(rows):
        values = [python_values_to_proto_values([columns[k][i].as_py()], kind)[0] for k, kind in keys.items()]
        key = EntityKeyProto(join_keys=list(keys), entity_values=values)
        expected.append(serialize_entity_key(key, entity_key_serialization_version=3) + b"proj")
    assert entity_keys("proj", columns, keys).tolist() == expected


def test_null_join_key_is_refused() -> None:
    with pytest.raises(ValueError, match="join key user_id is null"):
        entity_keys("p", {"user_id": pa.array([1, None])}, {"user_id": ValueType.INT64})


def test_varint_and_decimal_and_commands() -> None:
    values = np.array(INTS, np.int64)
    assert varint(values).tolist() == [ValueProto(int64_val=int(v)).SerializeToString()[1:] for v in values]
    numbers = np.array([0, 9, 10, 99, 100, 123456789, 10**18], np.int64)
    assert decimal(numbers).tolist() == [str(n).encode() for n in numbers]
    keys = Cells.of([b"k1", b"key22"], np.array([0, 1]))
    assert wire(command(2, b"HSET", keys, b"f", Cells.of([b"", b"v"], np.array([1, 0]))), 2) == (
        b"*4\r\n$4\r\nHSET\r\n$2\r\nk1\r\n$1\r\nf\r\n$1\r\nv\r\n"
        b"*4\r\n$4\r\nHSET\r\n$5\r\nkey22\r\n$1\r\nf\r\n$0\r\n\r\n")
    assert single(b"MGET", b"k1", b"") == b"*3\r\n$4\r\nMGET\r\n$2\r\nk1\r\n$0\r\n\r\n"
