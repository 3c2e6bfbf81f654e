"""pmjobsd's own files: private modes, and crash-safe replacement (temp file, fsync, rename).

Every file pmjobsd creates is 0600 and every folder 0700.

A reader (or a crash) sees either the old file or the new one, never a half
file: the rename is atomic, and the fsyncs make the data and then the folder
entry durable before anyone is told it was written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as 0700 folders; tighten it if it already exists and is ours."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    try:
        if path.stat().st_uid == os.getuid() and (path.stat().st_mode & 0o777) != PRIVATE_DIR_MODE:
            path.chmod(PRIVATE_DIR_MODE)
    except OSError:
        pass
    return path


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def existing_mode(path: Path, default: int = PRIVATE_FILE_MODE) -> int:
    """The permission bits of ``path``, or ``default`` when it does not exist (to keep a mode across a rewrite)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return default


@contextmanager
def atomic_writer(path: Path, mode: int = PRIVATE_FILE_MODE) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` (with ``mode``) when the block ends without error.

    On an error the temp file is removed and ``path`` is left as it was.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; the umask never narrows fchmod
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | str, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) atomically and durably."""
    with atomic_writer(path, mode) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
