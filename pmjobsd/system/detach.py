"""`pmjobsd run --detach --pidfile PATH`: become a classic Unix daemon.

Only for hosts without a service manager; under systemd or launchd run in the
foreground.  python-daemon's ``DaemonContext`` does the double fork, setsid,
``umask 077``, ``chdir /``, closes every file except those preserved and
points stdin/stdout/stderr at /dev/null.

The pidfile is locked with ``flock(2)`` rather than python-daemon's
``lockfile``-based ``TimeoutPIDLockFile``: an flock dies with the process, so a
pidfile left by a crash (or ``kill -9``) is simply taken over, and a running
daemon is detected by the lock, not by guessing from a pid that may have
been reused.  The lock is taken *before* forking, so a second start is refused
with a clear message on the user's terminal, and the locked descriptor is
inherited by the daemon (no window in which two daemons both hold it).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import daemon

from pmjobsd.system.files import PRIVATE_FILE_MODE, ensure_private_dir


class AlreadyRunning(Exception):
    """Another process holds the pidfile lock."""

    def __init__(self, pidfile: Path, pid: int | None):
        self.pidfile, self.pid = pidfile, pid
        owner = f"pid {pid}" if pid else "another process"
        super().__init__(f"pmjobsd is already running ({owner}, pidfile {pidfile}); not starting a second daemon")


def read_pid(pidfile: Path) -> int | None:
    """The pid written in ``pidfile``, or None when missing or not a pid."""
    try:
        text = pidfile.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


class LockedPidFile:
    """A pidfile held under an exclusive ``flock`` for the life of the daemon.

    A context manager, as ``DaemonContext(pidfile=...)`` expects: ``__enter__``
    (in the daemon, after the fork) writes the current pid; ``__exit__`` removes
    the file and releases the lock.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None
        self.stale_pid: int | None = None  # pid left by a daemon that died without cleaning up

    def acquire(self) -> None:
        """Lock the pidfile, creating it 0600; raise AlreadyRunning if it is held."""
        if self.fd is not None:
            return
        ensure_private_dir(self.path.parent)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise AlreadyRunning(self.path, read_pid(self.path)) from None
                raise
            # The holder may have unlinked the file between our open and lock:
            # then we locked an orphan inode and must retry on the new file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        self.stale_pid = read_pid(self.path)
        self.write_pid()

    def write_pid(self) -> None:
        """Replace the file's content with this process's pid."""
        assert self.fd is not None
        data = f"{os.getpid()}\n".encode("ascii")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def release(self) -> None:
        """Remove the pidfile (if still ours) and drop the lock."""
        if self.fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None

    def fileno(self) -> int:
        assert self.fd is not None
        return self.fd

    def __enter__(self) -> LockedPidFile:
        if self.fd is None:
            self.acquire()
        else:
            self.write_pid()  # we forked: the file must name the daemon, not the starter
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def logging_files(logger_name: str = "pmjobsd") -> list[Any]:
    """The open streams of the handlers of ``logger_name`` and the root logger."""
    streams = []
    for name in (logger_name, None):
        for handler in logging.getLogger(name).handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None and hasattr(stream, "fileno"):
                try:
                    stream.fileno()
                except (OSError, ValueError):
                    continue
                streams.append(stream)
    return streams


@contextmanager
def detach(pidfile: Path, keep_files: Iterable[Any] = (), *, signal_map: dict | None = None) -> Iterator[LockedPidFile]:
    """Detach into the background holding ``pidfile``; the body runs in the daemon.

    ``keep_files`` (file objects or descriptors) stay open, as do the streams of
    the logging handlers (:func:`logging_files`).  Raises AlreadyRunning, in the
    calling process before anything forks, when another daemon holds the
    pidfile.  The default ``signal_map`` is python-daemon's: SIGTERM raises
    SystemExit, so ``finally`` blocks run and the pidfile is removed; a daemon
    installing its own handlers inside the body replaces that.
    """
    lock = LockedPidFile(pidfile)
    lock.acquire()
    preserved = [*keep_files, *logging_files(), lock.fd]
    context = daemon.DaemonContext(
        detach_process=True,
        working_directory="/",
        umask=0o077,
        pidfile=lock,
        files_preserve=preserved,
        **({"signal_map": signal_map} if signal_map is not None else {}),
    )
    try:
        context.open()
    except BaseException:
        lock.release()
        raise
    try:
        yield lock
    finally:
        context.close()
