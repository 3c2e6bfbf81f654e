"""A file descriptor that becomes readable when settings.json may have changed (inotify, Linux).

The folder is watched, not the file: the app and editors replace or truncate
the file, and a watch on a replaced inode would go quiet.  Where inotify is
not available (another system, no ``inotify_simple``, no folder yet, the
watch limit reached) :func:`open_watch` returns None and the daemon keeps
its ``wake_interval`` check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class SettingsWatch:
    """inotify on the settings file's folder, filtered to the file's name."""

    def __init__(self, path: Path, inotify: Any, flags: Any):
        self.name = path.name
        self._inotify = inotify
        self._flags = flags
        mask = (
            flags.CLOSE_WRITE
            | flags.MODIFY
            | flags.ATTRIB
            | flags.CREATE
            | flags.DELETE
            | flags.MOVED_TO
            | flags.MOVED_FROM
            | flags.DELETE_SELF
            | flags.MOVE_SELF
        )
        inotify.add_watch(str(path.parent), mask)

    def fileno(self) -> int:
        return int(self._inotify.fileno())

    def drain(self) -> bool:
        """Read the pending events; True when one concerns the settings file (or its folder went away)."""
        relevant = False
        gone = self._flags.DELETE_SELF | self._flags.MOVE_SELF | self._flags.Q_OVERFLOW | self._flags.IGNORED
        for event in self._inotify.read(timeout=0):
            if event.name == self.name or event.mask & gone:
                relevant = True
        return relevant

    def close(self) -> None:
        self._inotify.close()


def open_watch(path: Path) -> SettingsWatch | None:
    """A watch on ``path``'s folder, or None where inotify cannot be used."""
    try:
        from inotify_simple import INotify, flags
    except ImportError:  # not Linux, or not installed: the wake_interval check remains
        return None
    try:
        inotify = INotify()
    except OSError:
        return None
    try:
        return SettingsWatch(path, inotify, flags)
    except OSError:  # no folder yet, or the watch limit reached
        inotify.close()
        return None
