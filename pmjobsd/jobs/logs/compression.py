"""Gzip rotated log archives, crash-safe; pick the archives due and clean up after a crash.

``compress_archive(archive)`` writes ``archive.gz`` as a hidden ``.partial``
file, fsyncs it, renames it into place, fsyncs the folder, and only then
removes the plain archive: re-running after a crash at any step loses and
duplicates nothing.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from pmjobsd.jobs.logs.archives import ARCHIVE_SUFFIX, list_archives, partial_path
from pmjobsd.jobs.logs.rotate import CHUNK, RotationError, StepHook, no_step
from pmjobsd.system.files import fsync_dir

GZIP_LEVEL = 6


def compress_archive(
    archive: str | os.PathLike, *, on_step: StepHook = no_step, check: Callable[[], None] = lambda: None
) -> Path:
    """Gzip ``archive`` to ``archive.gz`` (mode and mtime kept); return the ``.gz`` path.

    The plain archive is removed only after the compressed copy is complete,
    synced and renamed into place.  ``check`` is called between chunks and may
    raise to stop (the partial file is removed).  Raise RotationError naming the file.
    """
    plain = Path(archive)
    target = plain.with_name(plain.name + ".gz")
    import gzip  # loaded when the job runs, not when the daemon reads its options

    partial = partial_path(target)
    try:
        if target.exists():
            # A crash after the rename: the .gz is complete (it is only ever renamed into place whole).
            _remove_plain(plain, on_step)
            return target
        info = os.stat(plain)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
            with open(fd, "wb", closefd=False) as raw, open(plain, "rb") as source:
                with gzip.GzipFile(
                    filename=plain.name, mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=int(info.st_mtime)
                ) as gz:
                    while chunk := source.read(CHUNK):
                        gz.write(chunk)
                        check()
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            fd = -1
            partial.unlink(missing_ok=True)
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        os.utime(partial, ns=(info.st_atime_ns, info.st_mtime_ns))  # age counts from the archive's time
        on_step("gz_written")
        os.rename(partial, target)
        fsync_dir(plain.parent)
        on_step("gz_renamed")
        _remove_plain(plain, on_step)
        return target
    except OSError as exc:
        raise RotationError(f"cannot compress {plain}: {exc.strerror or exc}") from exc


def _remove_plain(plain: Path, on_step: StepHook) -> None:
    plain.unlink(missing_ok=True)
    fsync_dir(plain.parent)
    on_step("plain_removed")


def clean_partials(live: Path) -> list[Path]:
    """Remove ``.partial`` gzip files left by a crash (plain archives are kept); return them.

    Copy-truncate partials are left to :func:`rotate_file`'s journal recovery.
    """
    pattern = re.compile(rf"^\.{re.escape(live.name)}{ARCHIVE_SUFFIX}\.gz\.partial$")
    removed = []
    for name in os.listdir(live.parent):
        if pattern.match(name):
            (live.parent / name).unlink(missing_ok=True)
            removed.append(live.parent / name)
    return removed


def archives_to_compress(live: Path, older_than: float) -> list[Path]:
    """Plain archives of ``live`` whose mtime is before ``older_than`` (epoch seconds)."""
    found = []
    for archive in list_archives(live):
        if archive.suffix != ".gz":
            try:
                if os.stat(archive).st_mtime < older_than:
                    found.append(archive)
            except FileNotFoundError:
                continue
    return found
