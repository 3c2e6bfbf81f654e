"""Log rotation: rename or copy-then-truncate, crash-safe thanks to a journal.

Contract
--------
``rotate_file(path)`` moves the content of a non-empty log to a date-suffixed
archive beside it (``password_manager.log.20261128-033000``):

* **rename** when no process holds the file open (or when its writers reopen
  it by themselves, like pmjobsd's own ``WatchedFileHandler``): one atomic
  ``rename``, then an empty live file is created with the old mode.
* **copy-then-truncate** when a process holds it open (the app keeps its log
  open in append mode and never reopens it): copy to a hidden ``.partial``
  file, re-copy the tail that grew meanwhile until it is small, read the last
  bytes and truncate at once.  Lines appended between that last read and the
  ``ftruncate`` are lost; the window is one ``read`` returning EOF plus one
  ``ftruncate`` (tests measure it).

Crash safety: every step leaves the files in a state that the next call
recognises and finishes — a journal beside the log records a copy-truncate in
flight, and ``.partial`` files are never taken for archives.  Re-running after
a crash at any step loses and duplicates nothing.  Gzipping old archives is in
:mod:`pmjobsd.jobs.logs.compression`, their names in :mod:`pmjobsd.jobs.logs.archives`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pmjobsd.jobs.logs.archives import archive_name, partial_path
from pmjobsd.jobs.logs.file_holders import open_holders
from pmjobsd.system.files import fsync_dir, write_atomic

Strategy = Literal["auto", "rename", "copytruncate"]
StepHook = Callable[[str], None]

CHUNK = 1 << 20
# Stop re-copying the tail once one pass copied less than this: the last pass
# (read to EOF, then truncate at once) is then short.
SMALL_TAIL = 64 * 1024
MAX_TAIL_PASSES = 8
# Bytes compared at the head and at the end of the copied range to tell whether
# the live file was already truncated when a crash interrupted a copy-truncate.
FINGERPRINT = 64 * 1024


class RotationError(Exception):
    """A file that could not be rotated or compressed; the message names it."""


@dataclass(frozen=True)
class Rotation:
    """What happened to one live log file."""

    path: Path
    action: Literal["renamed", "copytruncated", "skipped", "recovered"]
    archive: Path | None = None
    bytes: int = 0
    reason: str = ""


def no_step(step: str) -> None:
    """The default ``on_step`` hook: nothing to do."""


# ----------------------------------------------------------------- journal
def _journal_path(live: Path) -> Path:
    return live.parent / f".{live.name}.rotating"


def rotation_in_flight(live: Path) -> bool:
    """True if a copy-truncate of ``live`` was interrupted and waits to be finished."""
    return _journal_path(live).exists()


def _write_journal(live: Path, data: dict) -> None:
    """Atomically replace the journal of ``live``."""
    write_atomic(_journal_path(live), json.dumps(data))


def _remove_journal(live: Path) -> None:
    try:
        os.unlink(_journal_path(live))
    except FileNotFoundError:
        pass
    fsync_dir(live.parent)


# ------------------------------------------------------------- copy loops
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_range(src_fd: int, dst_fd: int, offset: int) -> int:
    """Append ``src`` from ``offset`` until read returns EOF to ``dst``; return bytes copied."""
    copied = 0
    while True:
        data = os.pread(src_fd, CHUNK, offset + copied)
        if not data:
            return copied
        _write_all(dst_fd, data)
        copied += len(data)


def _copy_to_eof_then_truncate(src_fd: int, dst_fd: int, offset: int) -> int:
    """Copy the last bytes and truncate ``src`` the moment a read finds EOF.

    The lost-line window: bytes appended after that read and before the
    ``ftruncate`` are lost.  Nothing but the loop test runs in between.
    """
    copied = 0
    while True:
        data = os.pread(src_fd, CHUNK, offset + copied)
        if not data:
            os.ftruncate(src_fd, 0)
            return copied
        _write_all(dst_fd, data)
        copied += len(data)


def _same_bytes(a_fd: int, b_fd: int, offset: int, length: int) -> bool:
    return os.pread(a_fd, length, offset) == os.pread(b_fd, length, offset)


# ------------------------------------------------------------------ rotate
def rotate_file(
    path: str | os.PathLike,
    *,
    now: datetime | None = None,
    min_size: int = 1,
    strategy: Strategy = "auto",
    on_step: StepHook = no_step,
) -> Rotation:
    """Rotate ``path`` when it holds at least ``min_size`` bytes; return what was done.

    ``strategy``: ``"auto"`` renames when no other process holds the file open
    and copy-truncates otherwise (or when that cannot be known); ``"rename"``
    is for files whose writers reopen them (``WatchedFileHandler``).  A
    rotation interrupted by a crash is finished first.  ``on_step`` is called
    with the name of each completed step (tests kill the process there).
    Raise :class:`RotationError` naming the file when it cannot be rotated.
    """
    live = Path(path)
    now = now or datetime.now()
    try:
        recovered = _recover(live, on_step)
        info = os.stat(live)
    except FileNotFoundError:
        return Rotation(live, "recovered" if recovered else "skipped", recovered, reason="missing")
    except OSError as exc:
        raise RotationError(f"cannot rotate {live}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise RotationError(f"cannot rotate {live}: not a regular file")
    if info.st_size < max(1, min_size):
        if recovered:
            return Rotation(live, "recovered", recovered)
        return Rotation(live, "skipped", reason=f"{info.st_size} bytes, below {max(1, min_size)}")
    try:
        if strategy == "auto":
            strategy = "rename" if open_holders(live) == set() else "copytruncate"
        if strategy == "rename":
            return _rotate_by_rename(live, info, now, on_step)
        return _rotate_by_copytruncate(live, now, on_step)
    except OSError as exc:
        raise RotationError(f"cannot rotate {live}: {exc.strerror or exc}") from exc


def _rotate_by_rename(live: Path, info: os.stat_result, now: datetime, on_step: StepHook) -> Rotation:
    archive = archive_name(live, now)
    os.rename(live, archive)  # atomic: a crash leaves either name, never both or neither
    on_step("renamed")
    _recreate_live(live, info)
    fsync_dir(live.parent)
    on_step("recreated")
    return Rotation(live, "renamed", archive, info.st_size)


def _recreate_live(live: Path, info: os.stat_result) -> None:
    """An empty live file with the old mode and owner, unless a writer made one already."""
    try:
        fd = os.open(live, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, stat.S_IMODE(info.st_mode))
        if hasattr(os, "fchown") and (info.st_uid, info.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.fchown(fd, info.st_uid, info.st_gid)
            except PermissionError:
                pass  # only root may give a file away; the mode is what matters
    finally:
        os.close(fd)


def _rotate_by_copytruncate(live: Path, now: datetime, on_step: StepHook) -> Rotation:
    archive = archive_name(live, now)
    partial = partial_path(archive)
    src_fd = os.open(live, os.O_RDWR)
    try:
        info = os.fstat(src_fd)
        _write_journal(live, {"phase": "copying", "archive": archive.name, "inode": info.st_ino})
        on_step("journal_written")
        dst_fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(dst_fd, stat.S_IMODE(info.st_mode))
            copied = _copy_range(src_fd, dst_fd, 0)
            on_step("copied")
            # Sync the bulk now, outside the lost-line window, so that the
            # window below holds only a short read and the truncate.
            os.fsync(dst_fd)
            for _ in range(MAX_TAIL_PASSES):
                grown = _copy_range(src_fd, dst_fd, copied)
                copied += grown
                if grown < SMALL_TAIL:
                    break
            on_step("tail_copied")
            # Start the window on a fresh time slice: being preempted inside it
            # is what makes it long (a busy machine, a writer spinning on a CPU).
            if hasattr(os, "sched_yield"):
                os.sched_yield()
            copied += _copy_to_eof_then_truncate(src_fd, dst_fd, copied)
            on_step("truncated")
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    _write_journal(live, {"phase": "truncated", "archive": archive.name, "inode": info.st_ino})
    on_step("journal_truncated")
    _finish_copytruncate(live, archive, on_step)
    return Rotation(live, "copytruncated", archive, copied)


def _finish_copytruncate(live: Path, archive: Path, on_step: StepHook) -> None:
    partial = partial_path(archive)
    if partial.exists():
        os.rename(partial, archive)
        fsync_dir(live.parent)
        on_step("archive_renamed")
    _remove_journal(live)
    on_step("journal_removed")


def _recover(live: Path, on_step: StepHook) -> Path | None:
    """Finish or undo a copy-truncate that a crash interrupted; return the archive it kept."""
    journal = _journal_path(live)
    try:
        data = json.loads(journal.read_text())
        name, phase = data["archive"], data["phase"]
        if not isinstance(name, str):
            raise TypeError(f"archive is {name!r}, not a file name")
        archive = live.parent / name
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # Only written by _write_journal (atomic), so this is someone else's file.
        raise RotationError(f"cannot rotate {live}: unreadable rotation journal {journal}; remove it") from None
    partial = partial_path(archive)
    if phase == "copying" and partial.exists() and not _was_truncated(live, partial, data.get("inode")):
        # The live file still holds everything the partial copy has: drop the copy.
        os.unlink(partial)
        _remove_journal(live)
        return None
    if not partial.exists() and not archive.exists():
        _remove_journal(live)  # crashed before the copy began
        return None
    _finish_copytruncate(live, archive, on_step)
    return archive


def _was_truncated(live: Path, partial: Path, inode: int | None) -> bool:
    """True when ``live`` no longer starts with the bytes copied into ``partial``.

    Compares the first and the last ``FINGERPRINT`` bytes of the copy.  A log
    rewritten after the truncate with byte-identical content would fool it;
    log lines carry timestamps, so that does not happen in practice.
    """
    try:
        live_fd = os.open(live, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        copy_fd = os.open(partial, os.O_RDONLY)
        try:
            live_info, copy_size = os.fstat(live_fd), os.fstat(copy_fd).st_size
            if inode is not None and live_info.st_ino != inode:
                return True  # replaced meanwhile; the copy is all that is left of the old file
            if live_info.st_size < copy_size:
                return True
            head = min(FINGERPRINT, copy_size)
            tail_start = max(0, copy_size - FINGERPRINT)
            return not (
                _same_bytes(live_fd, copy_fd, 0, head)
                and _same_bytes(live_fd, copy_fd, tail_start, copy_size - tail_start)
            )
        finally:
            os.close(copy_fd)
    finally:
        os.close(live_fd)


__all__ = [
    "Rotation",
    "RotationError",
    "rotate_file",
]
