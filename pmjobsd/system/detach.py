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
"""

from __future__ import annotations

import logging
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


@contextmanager
def detach(pidfile: Path, keep_files: Iterable[Any] = (), *, signal_map: dict | None = None) -> Iterator[InstanceLock]:
    """Detach into the background holding ``pidfile``; the body runs in the daemon.

    ``keep_files`` (file objects or descriptors) stay open, as do the streams of
    the logging handlers (:func:`logging_files`).  Raises AlreadyRunning, in the
    calling process before anything forks, when another daemon holds the
    pidfile.  The default ``signal_map`` is python-daemon's: SIGTERM raises
    SystemExit, so ``finally`` blocks run and the pidfile is removed; a daemon
    installing its own handlers inside the body replaces that.
    """
    lock = InstanceLock(pidfile).acquire()
    preserved = [*keep_files, *logging_files(), lock.fileno()]
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
