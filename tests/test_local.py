"""Atomic writes: the whole file or the old one, and no temp files left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.local import write_atomic, write_new


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "manifest.json"
    write_atomic(target, b"first")
    write_atomic(target, b"second, longer" * 1000)
    assert target.read_bytes() == b"second, longer" * 1000
    assert sorted(os.listdir(target.parent)) == ["manifest.json"]


def test_write_atomic_failure_keeps_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    write_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_write_atomic_into_a_file_path_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "a" / "b.json", b"{}")
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_write_new_without_hard_links_still_creates_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that refuses hard links (vfat, some network mounts) gets the same
    answers, through a check and a rename."""
    import errno

    def no_links(src: str, dst: str) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", dst)

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "manifest.json"
    write_new(target, b"first")
    with pytest.raises(FileExistsError):
        write_new(target, b"second")
    assert target.read_bytes() == b"first"
    assert sorted(os.listdir(tmp_path)) == ["manifest.json"]
