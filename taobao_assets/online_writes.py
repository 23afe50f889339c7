"""Rows written to Feast's Redis store in bulk: the commands, built a column at a time, and a raw pipeline.

Two writers put rows into the online store outside Feast's per-row Python: the materialization
engine (:mod:`taobao_assets.online_materialization`, gold days) and the streaming run's online
writer (:mod:`taobao_assets.streaming.online`, real-time counters). Both write what Feast's
``RedisOnlineStore.online_write_batch`` writes for a row (one ``HSET`` of the row's ``_ts:<view>``
mark and its features, then an ``EXPIRE`` when the store has ``key_ttl_seconds``), so both build
their commands here, and both send them through :class:`RawPipeline`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import hiredis
import numpy as np
import pyarrow as pa
import redis
from feast.value_type import ValueType

from taobao_assets.online_encoding import Cells, Part, command, concat, proto_values, single, varint, wire
from taobao_assets.online_layout import feature_field, timestamp_field

#: Bytes read from Redis' socket at a time.
_RECEIVE = 1 << 20
_MULTI, _EXEC = single(b"MULTI"), single(b"EXEC")
#: ``google.protobuf.Timestamp`` fields: ``seconds`` (1) and ``nanos`` (2), both varints.
_SECONDS_TAG, _NANOS_TAG = b"\x08", b"\x10"


def timestamp_protos(nanos: np.ndarray) -> Cells:
    """``Timestamp(seconds=..., nanos=...).SerializeToString()`` of each epoch time in ``nanos`` (>= 0).

    Protobuf leaves out a field equal to its default, so a whole second has no ``nanos`` and the
    epoch itself is empty bytes.
    """
    seconds, rest = np.divmod(nanos.astype(np.int64), 1_000_000_000)
    rows = len(nanos)
    return concat([concat([_SECONDS_TAG, varint(seconds)], rows).emptied(seconds == 0),
                   concat([_NANOS_TAG, varint(rest)], rows).emptied(rest == 0)], rows)


def hset_commands(view: str, keys: Cells, stamps: Cells, features: Sequence[tuple[str, pa.Array, ValueType]],
                  key_ttl_seconds: int | None) -> tuple[bytes, int]:
    """The commands writing one row per entry of ``keys`` (Redis keys of :func:`entity_keys`) into
    ``view`` (its versioned name), with event times ``stamps`` (:func:`timestamp_protos`) and
    ``features`` (name, column, type), as Feast writes them; returns the bytes and how many replies
    they will get."""
    rows = len(keys.lengths)
    values: list[Part] = []
    for name, column, value_type in features:
        values += [feature_field(view, name), proto_values(column, value_type)]
    parts = command(rows, b"HSET", keys, timestamp_field(view), stamps, *values)
    if not key_ttl_seconds:
        return wire(parts, rows), rows
    parts += command(rows, b"EXPIRE", keys, str(key_ttl_seconds).encode())
    return wire(parts, rows), 2 * rows


class RawPipeline:
    """One connection of a client's pool used as a raw pipeline: batches of packed commands are
    sent as soon as they are ready and their replies read later, so Redis executes a batch while
    the next one is encoded. Replies are parsed by hiredis straight from the connection's socket:
    redis-py's per-reply Python (about a microsecond each) would cost as much as Redis itself."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.reader = hiredis.Reader()
        self.unread: deque[tuple[int, int]] = deque()
        self.sent = 0

    def send(self, payload: bytes, replies: int) -> int:
        """Send a batch of ``replies`` commands; returns its number, for :meth:`receive`."""
        self.connection.send_packed_command([payload], check_health=False)
        self.sent += 1
        self.unread.append((self.sent, replies))
        return self.sent

    def receive(self, batch: int | None = None) -> list[Any]:
        """Read the replies of the batches sent up to ``batch`` (every one by default); returns those
        of ``batch``. An error reply raises."""
        replies: list[Any] = []
        while self.unread and (batch is None or self.unread[0][0] <= batch):
            _, count = self.unread.popleft()
            replies = [self._reply() for _ in range(count)]
        return replies

    def transaction(self, commands: bytes, count: int) -> list[Any] | None:
        """Run ``count`` packed commands between ``MULTI`` and ``EXEC``; returns their replies, or
        ``None`` if Redis refused the ``EXEC`` (a watched key changed). Every reply of the queued
        commands is ``+QUEUED``: they are checked as one block of bytes rather than parsed one by
        one, which would cost more than Redis takes to run them."""
        self.receive()
        self.connection.send_packed_command([_MULTI, commands, _EXEC], check_health=False)
        expected = b"+OK\r\n" + b"+QUEUED\r\n" * count
        data = bytearray()
        while len(data) < len(expected) and data == expected[:len(data)]:
            chunk = self.connection._sock.recv(_RECEIVE)
            if not chunk:
                raise redis.ConnectionError("Redis closed the connection during a transaction")
            data += chunk
        if data[:len(expected)] == expected:
            self.reader.feed(bytes(data[len(expected):]))
            replies = self._reply()
        else:  # an error reply in the block: parse every reply, the first error raises
            self.reader.feed(bytes(data))
            for _ in range(count + 1):
                self._reply()
            replies = self._reply()
        if replies is not None:
            failed = [reply for reply in replies if isinstance(reply, hiredis.ReplyError)]
            if failed:
                raise redis.ResponseError(f"a command of a transaction failed: {failed[0]}")
        return cast(list[Any] | None, replies)

    def _reply(self) -> Any:
        reply = self.reader.gets()
        while reply is False:
            data = self.connection._sock.recv(_RECEIVE)
            if not data:
                raise redis.ConnectionError("Redis closed the connection during a bulk write")
            self.reader.feed(data)
            reply = self.reader.gets()
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
        return reply


@contextmanager
def raw_pipeline(client: redis.Redis) -> Iterator[RawPipeline]:
    """A :class:`RawPipeline` on a connection of ``client``'s pool; every reply is read on leaving."""
    pool = client.connection_pool
    connection = pool.get_connection()
    pipeline = RawPipeline(connection)
    try:
        yield pipeline
        pipeline.receive()
    except BaseException:
        connection.disconnect()  # replies may be pending: the connection must not be reused
        raise
    finally:
        pool.release(connection)
