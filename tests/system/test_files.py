"""Atomic replacement: the old file or the new one, never a half file."""

import os
import stat

import pytest

from pmjobsd.system.files import existing_mode, write_atomic


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "x.prom"
    write_atomic(target, b"old\n")

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        write_atomic(target, b"new\n")
    assert target.read_bytes() == b"old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.prom"]


def test_new_files_are_private_and_existing_modes_are_kept(tmp_path):
    target = tmp_path / "sums"
    write_atomic(target, "a\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    target.chmod(0o644)
    write_atomic(target, "b\n", existing_mode(target))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_text() == "b\n"
