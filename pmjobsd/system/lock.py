"""Single-instance pid files: one flock()ed file per running daemon.

Serves both the daemon's own lock (one daemon per state folder) and the
``run --detach --pidfile PATH`` pid file.  The kernel drops an flock when the
process dies, however it dies, so a file left by a crash (kill -9) is never
stale: the next start simply takes it over.  A running daemon is detected by
the lock, never by guessing from a pid that may have been reused.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from pmjobsd.system.files import ensure_private_dir, open_private


class AlreadyRunning(Exception):
    """Another live process holds the lock; ``pid`` is the pid it wrote (None if unreadable)."""

    def __init__(self, path: Path, pid: int | None):
        self.path, self.pid = path, pid
        owner = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"pmjobsd already runs ({owner}): {path} is locked; not starting a second daemon")


class InstanceLock:
    """A pid file held under an exclusive ``flock`` for the life of a daemon.

    ``acquire()`` locks the file (created 0600 in a private folder, never opened
    through a symbolic link: :func:`~pmjobsd.system.files.open_private`) and writes
    this process's pid, or raises AlreadyRunning; ``release()`` removes the
    file and drops the lock.  It is also the context manager python-daemon's
    ``DaemonContext(pidfile=...)`` expects: acquired before the fork, its
    descriptor is inherited, and ``__enter__`` (in the daemon, after the fork)
    rewrites the pid so that the file names the daemon, not its starter.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None
        self.stale_pid: int | None = None  # pid left by a holder that died without removing the file

    def acquire(self) -> InstanceLock:
        """Lock the file and write our pid; raise AlreadyRunning naming the holder."""
        if self._fd is not None:
            return self
        ensure_private_dir(self.path.parent)
        while True:
            fd = open_private(self.path, os.O_RDWR | os.O_CREAT)  # never through a link
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(self.path, _read_pid(self.path)) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder may have removed the file between our open and our lock:
            # then we locked an orphan inode and must start over on the new file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        self.stale_pid = _read_pid(self.path)
        try:
            self._write_pid()
        except BaseException:
            self.release()
            raise
        return self

    def _write_pid(self) -> None:
        assert self._fd is not None, "write_pid before acquire"
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)
            os.fsync(self._fd)
        except OSError as exc:  # e.g. a full disk: name the file
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def forget(self) -> None:
        """Close this process's copy of the descriptor, keeping the file (another process holds the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        """Remove the file (if it is still ours) and drop the lock; a no-op when not held."""
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None

    def fileno(self) -> int:
        """The locked descriptor, for DaemonContext's ``files_preserve``."""
        if self._fd is None:
            raise ValueError(f"{self.path} is not locked")
        return self._fd

    def __enter__(self) -> InstanceLock:
        if self._fd is None:
            self.acquire()
        else:
            self._write_pid()  # we forked: the file must name the daemon, not the starter
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _read_pid(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, 32).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def holder_pid(path: Path) -> int | None:
    """The pid of the live daemon holding ``path``, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
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
