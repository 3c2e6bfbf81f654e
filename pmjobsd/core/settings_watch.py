"""A file descriptor that becomes readable when settings.json may have changed (inotify, Linux).

The folder is watched, not the file: the app and editors replace or truncate
the file, and a watch on a replaced inode would go quiet.  Where inotify is
not available (another system, no folder yet, the watch limit reached)
:func:`open_watch` returns None and the daemon keeps its ``wake_interval`` check.

inotify is reached through libc with ctypes directly: a wrapper library that
looks libc up with ``ctypes.util.find_library`` (which imports subprocess and
may run ``ldconfig``) cost every start more than the rest of this module.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import Any

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
WATCHED = (IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM) | (
    IN_DELETE_SELF | IN_MOVE_SELF
)
_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW | IN_IGNORED  # the folder itself went away, or events were lost
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows


class SettingsWatch:
    """inotify on the settings file's folder, filtered to the file's name."""

    def __init__(self, path: Path, fd: int):
        self.name = os.fsencode(path.name)
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> bool:
        """Read the pending events; True when one concerns the settings file (or its folder went away)."""
        relevant = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return relevant
            if not data:
                return relevant
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                name = data[start : start + length].rstrip(b"\0")
                if name == self.name or mask & _GONE:
                    relevant = True
                offset = start + length

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)  # the libc this process already runs on


def open_watch(path: Path) -> SettingsWatch | None:
    """A watch on ``path``'s folder, or None where inotify cannot be used."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = _libc()
        fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    except (ImportError, OSError, AttributeError):  # no ctypes, or a libc without inotify
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(path.parent), WATCHED) < 0:  # no folder yet, or the watch limit
        os.close(fd)
        return None
    return SettingsWatch(path, fd)
