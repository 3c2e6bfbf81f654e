"""One daemon per state folder: an flock()ed pid file.

The kernel drops the lock when the process dies, however it dies, so a lock
left by a crash (kill -9) is never stale: the next start simply takes it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pmjobsd.system.files import PRIVATE_FILE_MODE, ensure_private_dir


class AlreadyRunning(Exception):
    """Another live process holds the lock."""


class InstanceLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        """Take the lock and write our pid; raise AlreadyRunning naming the holder."""
        ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(f"pmjobsd already runs (pid {holder}) for {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def holder_pid(path: Path) -> int | None:
    """The pid of the live daemon holding ``path``, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
