"""Types of the compiled parser core (see src/lib.rs for what each method does)."""

from typing import Any

from typing_extensions import Buffer as _Buffer

class Buffer:
    """Bytes owned by the core, read through the buffer protocol (no copy)."""

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...

class Parser:
    def __init__(
        self,
        column_sep: bytes,
        entry_sep: bytes,
        field_sep: bytes,
        value_sep: bytes,
        kinds: list[str],
        columns: list[list[str]],
        fields: list[tuple[str, str, int, bool]],
        key_chars: bytes,
        value_chars: bytes,
        max_id: int,
    ) -> None: ...
    @staticmethod
    def reasons() -> list[str]: ...
    def parse_line(self, kind: int, raw: bytes) -> tuple[Any, ...]: ...
    def parse_batch(
        self, kind: int, layout: list[tuple[str, str]], data: _Buffer, ends: bytes | None
    ) -> tuple[int, list[tuple[Buffer | None, list[Buffer]]]]: ...

class CopyDecoder:
    """A Postgres binary COPY stream to Arrow buffers; ``types``: each column's type name."""

    def __init__(self, types: list[str]) -> None: ...
    def feed(self, data: _Buffer) -> None: ...
    def finish(self) -> tuple[int, list[tuple[Buffer | None, list[Buffer]]]]: ...
