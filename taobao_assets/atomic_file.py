"""Files replaced whole or not at all: what a crash, a kill or a full disk leaves is the old file or the new.

Checkpoints, summaries, configuration with passwords and benchmark results are read by other
processes and by the next run; a half-written one would be read as the truth. Each is written to a
temporary file beside it, created with its final permissions (a file holding a secret is never
readable by others, not even for an instant), flushed to disk, then renamed over the target, which
POSIX makes atomic.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Permissions of a file only its owner may read: credentials, configuration holding passwords.
PRIVATE = 0o600


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` (text as UTF-8) atomically, the file created with ``mode``.

    The temporary file is a new one of this writer's (``mkstemp``: created ``O_EXCL`` and 0600, so
    not one planted there or left by a crashed run with other permissions), given ``mode`` before
    it holds a byte, flushed to disk, then renamed over ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_private(path: Path, text: str) -> Path:
    """:func:`write_atomic` of a file that holds a password: readable by its owner only, from the first byte."""
    return write_atomic(path, text, PRIVATE)
