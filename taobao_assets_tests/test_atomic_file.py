"""``write_atomic``: the target is the old file or the new one, never a part, and a private file is never
readable by others, not even as its temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from taobao_assets.atomic_file import PRIVATE, write_atomic


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "summary.json"
    write_atomic(target, '{"old": true}\n')

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, '{"new": true}\n' * 1000)
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_private_file_has_its_mode_before_it_holds_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    target = tmp_path / "credentials.json"
    modes: list[int] = []
    replace = os.replace

    def inspect(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        modes.append(stat.S_IMODE(os.stat(src).st_mode))
        replace(src, dst)
    monkeypatch.setattr(os, "replace", inspect)
    old_umask = os.umask(0)  # the widest umask: the mode must come from the file's creation, not the umask
    try:
        write_atomic(target, "secret", PRIVATE)
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "secret"
