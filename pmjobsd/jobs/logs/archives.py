"""Which logs pmjobsd rotates, and the names of their archives beside them.

An archive of ``password_manager.log`` is ``password_manager.log.20261128-033000``
(``-2``, ``-3``... on a clash), gzipped as ``....gz``; a file being written is
hidden as ``.<name>.partial`` and is never taken for an archive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from pmjobsd.app.paths import AppPaths

ARCHIVE_SUFFIX = r"\.(\d{8}-\d{6})(?:-(\d+))?"


def archive_pattern(live: Path) -> re.Pattern[str]:
    """Names of finished archives of ``live`` (plain or ``.gz``), never ``.partial``."""
    return re.compile(rf"^{re.escape(live.name)}{ARCHIVE_SUFFIX}(\.gz)?$")


def list_archives(live: Path) -> list[Path]:
    """Finished archives of ``live`` in its folder, oldest name first."""
    pattern = archive_pattern(live)
    try:
        names = os.listdir(live.parent)
    except FileNotFoundError:
        return []
    return sorted(live.parent / name for name in names if pattern.match(name))


def archive_name(live: Path, now: datetime) -> Path:
    """A free archive path ``<live>.<YYYYmmdd-HHMMSS>``; ``-2``, ``-3``... on a clash."""
    stamp = now.strftime("%Y%m%d-%H%M%S")
    taken = {p.name.removesuffix(".gz") for p in list_archives(live)}
    candidate, counter = f"{live.name}.{stamp}", 1
    while candidate in taken or partial_path(live.parent / candidate).exists():
        counter += 1
        candidate = f"{live.name}.{stamp}-{counter}"
    return live.parent / candidate


def partial_path(target: Path) -> Path:
    """The hidden file ``target`` is written as before it is renamed into place."""
    return target.parent / f".{target.name}.partial"


def log_files(paths: AppPaths, app_settings: Mapping | None = None, extra: Iterable[str] = ()) -> list[Path]:
    """The logs pmjobsd rotates: the app's, its own ``jobs.log``, and ``files`` options.

    Extra files come from ``extra`` and from ``jobs.definitions.log_rotation.options.files``
    in ``app_settings``; relative names are taken in ``paths.log_dir``.
    """
    names: list[str] = list(extra)
    try:
        configured = app_settings["jobs"]["definitions"]["log_rotation"]["options"]["files"]  # type: ignore[index]
        if isinstance(configured, list):
            names += [str(name) for name in configured]
    except (KeyError, TypeError):
        pass
    found = [Path(paths.app_log_path), Path(paths.jobs_log_path)]
    for name in names:
        candidate = Path(name).expanduser()
        candidate = candidate if candidate.is_absolute() else Path(paths.log_dir) / candidate
        if candidate not in found:
            found.append(candidate)
    return found


def reopening_files(paths: AppPaths) -> set[Path]:
    """Logs whose writers reopen them after a rename (pmjobsd's WatchedFileHandler)."""
    return {Path(paths.jobs_log_path)}
