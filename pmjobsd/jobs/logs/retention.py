"""Data retention: delete old log archives and old run history.

``purge(paths, log_days, history_days)`` is shared by the daily ``log_purge``
job and by ``pmjobsd logs purge --days N``.  Age is the file's mtime (an
archive keeps the time of its last line; compression keeps it too).  A file
that cannot be removed is reported by path; the others are still removed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmjobsd.api import validate
from pmjobsd.app.paths import AppPaths
from pmjobsd.core.history import RunHistory
from pmjobsd.core.settings import Retention
from pmjobsd.jobs.logs.archives import list_archives, log_files

DAY = 86400


@dataclass
class PurgeReport:
    """What a purge removed and what it could not; ``str()`` is the printable report."""

    log_days: int
    history_days: int
    removed_archives: list[tuple[Path, int]] = field(default_factory=list)  # (path, bytes)
    history_runs_removed: int | None = None  # None: run history not available
    history_note: str = ""
    history_complete: bool = True  # False: stopped before the last old run (the next purge goes on)
    errors: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.removed_archives)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """One line without secrets (paths of log files only)."""
        history = "history not available" if self.history_runs_removed is None else f"{self.history_runs_removed} runs"
        if not self.history_complete:
            history += " (stopped in time, older runs remain for the next purge)"
        text = f"removed {len(self.removed_archives)} archives ({_human(self.bytes_freed)}) and {history}"
        return text + (f"; {len(self.errors)} errors" if self.errors else "")

    def __str__(self) -> str:
        lines = [f"Archives older than {self.log_days} days:"]
        lines += [f"  removed {path} ({_human(size)})" for path, size in self.removed_archives] or ["  none"]
        lines.append(f"Run history older than {self.history_days} days:")
        if self.history_runs_removed is None:
            lines.append(f"  skipped: {self.history_note or 'not available'}")
        else:
            lines.append(f"  removed {self.history_runs_removed} runs")
            if not self.history_complete:
                lines.append("  stopped in time: older runs remain for the next purge")
        lines += [f"Error: {path}: {message}" for path, message in self.errors]
        lines.append(self.summary()[0].upper() + self.summary()[1:] + ".")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "log_days": self.log_days,
            "history_days": self.history_days,
            "removed_archives": [str(path) for path, _ in self.removed_archives],
            "bytes_freed": self.bytes_freed,
            "history_runs_removed": self.history_runs_removed,
            "history_complete": self.history_complete,
            "errors": {str(path): message for path, message in self.errors},
        }


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def retention_settings(app_settings: Mapping[str, Any] | None) -> Retention:
    """The ``jobs.retention`` settings of the app's settings dict; defaults if absent or invalid.

    (The daemon already reported an invalid settings file; a job must still run.)
    """
    try:
        return validate(Retention, dict((app_settings or {}).get("jobs", {}).get("retention", {})))
    except Exception:
        return Retention()


def _check_days(name: str, days: Any) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"{name} must be a whole number of days, at least 1; got {days!r}")
    return days


def purge(
    paths: AppPaths,
    log_days: int,
    history_days: int,
    *,
    app_settings: Mapping[str, Any] | None = None,
    files: Iterable[Path] | None = None,
    now: float | None = None,
    stop: Callable[[], bool] | None = None,
) -> PurgeReport:
    """Delete archives older than ``log_days`` and runs older than ``history_days``.

    ``files`` are the live logs whose archives are considered (default: the
    app's log, ``jobs.log`` and the ``log_rotation`` job's ``files`` option
    found in ``app_settings``).  Raise ValueError if either number is below 1
    (nothing is removed then); every other problem is reported in the result.
    ``stop()`` is asked between the history's batches: once true, the purge ends there
    (``history_complete`` False) and the next one goes on from the oldest run left.
    """
    log_days = _check_days("log days", log_days)
    history_days = _check_days("history days", history_days)
    now = time.time() if now is None else now
    report = PurgeReport(log_days, history_days)
    cutoff = now - log_days * DAY
    for live in files if files is not None else log_files(paths, app_settings):
        live = Path(live)
        try:
            archives = list_archives(live)
        except OSError as exc:
            report.errors.append((live.parent, exc.strerror or str(exc)))
            continue
        for archive in archives:
            try:
                info = os.stat(archive)
                if info.st_mtime >= cutoff:
                    continue
                os.unlink(archive)
                report.removed_archives.append((archive, info.st_size))
            except FileNotFoundError:
                continue
            except OSError as exc:
                report.errors.append((archive, exc.strerror or str(exc)))
    _purge_history(paths, now - history_days * DAY, report, stop)
    return report


def _purge_history(
    paths: AppPaths, older_than: float, report: PurgeReport, stop: Callable[[], bool] | None = None
) -> None:
    history_path = Path(paths.history_path)
    if not history_path.exists():
        report.history_runs_removed = 0  # nothing recorded yet; do not create the database
        return
    try:
        with RunHistory(history_path) as history:
            report.history_runs_removed = int(history.purge(older_than=older_than, stop=stop))
            if stop is not None and stop():
                report.history_complete = not history.purgeable(older_than)
    except Exception as exc:  # a broken history must not stop the archive purge being reported
        report.history_note = f"{type(exc).__name__}: {exc}"
        report.errors.append((history_path, f"cannot purge run history: {type(exc).__name__}: {exc}"))
