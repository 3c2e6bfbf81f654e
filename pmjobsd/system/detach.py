"""`pmjobsd run --detach --pidfile PATH`: become a classic Unix daemon.

Only for hosts without a service manager; under systemd or launchd run in the
foreground.  python-daemon's ``DaemonContext`` does the double fork, setsid,
``umask 077``, ``chdir /``, closes every file except those preserved and
points stdin/stdout/stderr at /dev/null.

The pidfile is an :class:`~pmjobsd.system.lock.InstanceLock` (an ``flock(2)``ed
file) rather than python-daemon's ``lockfile``-based ``TimeoutPIDLockFile``.  It
is locked *before* forking, so a second start is refused with a clear message on
the user's terminal, and the locked descriptor is inherited by the daemon (no
window in which two daemons both hold it).

The starting process waits for the daemon: until the daemon calls
:meth:`Detached.ready`, its stderr is a pipe to the starter, which copies what
comes through to its own stderr and exits 0 only on the ready mark.  A daemon that
fails to start (its one-line error comes through) or dies first makes the starter
exit 1, so a shell script or an init script sees the failure.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import daemon

from pmjobsd.system.lock import InstanceLock


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


READY_MARK = b"\0pmjobsd-ready\n"
READY_TIMEOUT = 120.0  # the starter gives up waiting (exit 1) after this long
EXIT_NOT_STARTED = 1


class Detached:
    """What the body of :func:`detach` gets: the held pidfile, and :meth:`ready` to release the starter."""

    def __init__(self, lock: InstanceLock, report_fd: int):
        self.lock = lock
        self._report_fd: int | None = report_fd

    @property
    def stale_pid(self) -> int | None:
        return self.lock.stale_pid

    def ready(self) -> None:
        """Tell the starter that the daemon runs (it exits 0); stderr becomes /dev/null."""
        if self._report_fd is None:
            return
        fd, self._report_fd = self._report_fd, None
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        try:
            os.write(fd, READY_MARK)
        except OSError:
            pass  # the starter is gone: nobody to tell
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        os.close(fd)


def _await_daemon(report_r: int, child: int) -> int:
    """In the starter: copy the daemon's early stderr to ours; 0 on the ready mark, else 1."""
    received = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([report_r], [], [], left)[0]:
            sys.stderr.write(f"pmjobsd: the detached daemon did not report ready within {READY_TIMEOUT:.0f} s\n")
            return EXIT_NOT_STARTED
        chunk = os.read(report_r, 65536)
        if not chunk:
            break
        received += chunk
        if received.endswith(READY_MARK):
            break
    os.close(report_r)
    os.waitpid(child, 0)  # the intermediate process; it exits right after forking the daemon
    ready = received.endswith(READY_MARK)
    text = received.removesuffix(READY_MARK).decode("utf-8", errors="replace")
    if not ready and not text.strip():
        text = "pmjobsd: the detached daemon exited before it was ready\n"
    sys.stderr.write(text)
    sys.stderr.flush()
    return 0 if ready else EXIT_NOT_STARTED


@contextmanager
def detach(pidfile: Path, keep_files: Iterable[Any] = (), *, signal_map: dict | None = None) -> Iterator[Detached]:
    """Detach into the background holding ``pidfile``; the body runs in the daemon.

    ``keep_files`` (file objects or descriptors) stay open, as do the streams of
    the logging handlers (:func:`logging_files`).  Raises AlreadyRunning, in the
    calling process before anything forks, when another daemon holds the
    pidfile.  The calling process then waits and leaves with ``os._exit``: 0 once
    the body called :meth:`Detached.ready`, 1 when the daemon ended first (after
    copying what it wrote on stderr).  The default ``signal_map`` is python-daemon's:
    SIGTERM raises SystemExit, so ``finally`` blocks run and the pidfile is removed;
    a daemon installing its own handlers inside the body replaces that.
    """
    lock = InstanceLock(pidfile).acquire()
    report_r, report_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:  # the starter
        os.close(report_w)
        lock.forget()  # the daemon holds the lock now
        os._exit(_await_daemon(report_r, child))
    os.close(report_r)
    preserved = [*keep_files, *logging_files(), lock.fileno(), report_w]
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
    except BaseException as exc:
        lock.release()
        os.write(report_w, f"pmjobsd: cannot detach: {exc}\n".encode())
        raise
    os.dup2(report_w, 2)  # until ready(): what the daemon says on stderr reaches the starter
    detached = Detached(lock, report_w)
    try:
        yield detached
    finally:
        context.close()
