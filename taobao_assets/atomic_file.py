"""Files replaced whole or not at all: what a crash, a kill or a full disk leaves is the old file or the new.

Checkpoints, summaries, configuration with passwords and benchmark results are read by other
processes and by the next run; a half-written one would be read as the truth. Each is written to a
temporary file beside it, created with its final permissions (a file holding a secret is never
readable by others, not even for an instant), flushed to disk, then renamed over the target, which
POSIX makes atomic.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Permissions of a file only its owner may read: credentials, configuration holding passwords.
PRIVATE = 0o600


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` (text as UTF-8) atomically, the file created with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(descriptor, mode)  # also when a crashed run left the temporary file behind, or a umask narrowed it
        with os.fdopen(descriptor, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
