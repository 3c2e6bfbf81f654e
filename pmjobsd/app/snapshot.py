"""Private, consistent copies of an SQLite database, and the scratch folders that hold them.

Why a copy: every way of letting SQLite open the live vault can write beside it.
Its unix VFS opens ``-wal`` ``O_RDWR|O_CREAT`` whatever the URI says (read-only
is only a fallback after ``EACCES``), so as root it creates an orphan ``-wal``
when it races the app's close, and changes the owner of the app's sidecars;
``immutable=1`` without ``mode=ro`` opens the main file ``O_RDWR|O_CREAT``.
A copy made with ``O_RDONLY`` opens creates and changes nothing.

When is a copy consistent?  The database is copied first, then its ``-wal``.

* With a valid ``-wal`` whose 32-byte header (salts, checksums) and inode are the
  same before the copy and after it, the WAL was only appended to meanwhile.  A
  checkpoint may have written the main file under the copy, but only pages the
  copied WAL holds, and SQLite reads those from the WAL: the copy is consistent.
  A WAL reset or truncation changes the header, and the attempt is retried.
* Without a valid ``-wal`` (absent or empty), the main file must be unchanged:
  same inode, size, mtime and ctime, and that mtime must be older than
  :data:`MTIME_GRANULARITY` before the copy started, since the kernel stamps
  files with a coarse clock (one tick, up to 10 ms) and a write in the same tick
  as an earlier one leaves the mtime unchanged.
* A rollback-journal database with a ``-journal`` beside it is mid-transaction:
  retried.

Scratch folders are ``flock()``-ed while in use, so a folder whose lock is
free belongs to a process that died (``kill -9``): :func:`remove_stale` deletes
those and nothing in use.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
MTIME_GRANULARITY = 0.05  # seconds; a safe bound on the kernel's coarse file-time clock tick
_CHUNK = 1 << 20


class Inconsistent(Exception):
    """The copy may be torn (the app wrote meanwhile, or a file vanished): take another."""


@dataclass(frozen=True)
class _FileState:
    stamp: tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns
    head: bytes  # the first 32 bytes (a WAL header)


def _state(path: Path) -> _FileState | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        head = os.pread(fd, 32, 0)
    finally:
        os.close(fd)
    return _FileState((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), head)


def _valid_wal(state: _FileState | None) -> bool:
    return state is not None and len(state.head) == 32 and state.head[:4] in WAL_MAGIC


def _copy(source: Path, target: Path) -> int:
    """Copy ``source`` (opened ``O_RDONLY``) to a new 0600 ``target``; return the bytes copied."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        src = os.open(source, flags)
    except FileNotFoundError:
        raise Inconsistent(f"{source.name} vanished") from None
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(src, "rb", closefd=False) as reader, os.fdopen(dst, "wb") as writer:
            shutil.copyfileobj(reader, writer, _CHUNK)
            return writer.tell()
    finally:
        os.close(src)


def snapshot_database(path: Path, folder: Path, *, wal_mode: bool) -> int:
    """Copy the database ``path`` (+ its ``-wal``) into ``folder`` under the same names, consistently.

    Returns the bytes copied.  Raises :class:`Inconsistent` when the copy may be
    torn; the caller removes ``folder``'s content and tries again later.
    """
    wal = path.with_name(path.name + "-wal")
    journal = path.with_name(path.name + "-journal")
    started = time.time_ns()
    db_before, wal_before = _state(path), _state(wal)
    if db_before is None:
        raise Inconsistent(f"{path.name} vanished")
    if not wal_mode and journal.exists():
        raise Inconsistent("a write transaction is in progress (-journal present)")
    copied = _copy(path, folder / path.name)
    use_wal = wal_mode and _valid_wal(wal_before)
    if use_wal:
        copied += _copy(wal, folder / wal.name)
    db_after, wal_after = _state(path), _state(wal)
    if db_after is None or db_after.stamp[:2] != db_before.stamp[:2]:
        raise Inconsistent(f"{path.name} was replaced while being copied")
    if use_wal:
        assert wal_before is not None
        if wal_after is None or (wal_after.head, wal_after.stamp[:2]) != (wal_before.head, wal_before.stamp[:2]):
            raise Inconsistent("the -wal was reset or removed while being copied")
        with open(folder / wal.name, "rb") as handle:
            if handle.read(32) != wal_before.head:
                raise Inconsistent("the -wal was reset while being copied")
        return copied
    if db_after.stamp != db_before.stamp:
        raise Inconsistent(f"{path.name} changed while being copied")
    if started - db_before.stamp[3] < MTIME_GRANULARITY * 1e9:
        raise Inconsistent(f"{path.name} was written moments ago")
    if (wal_after is None) != (wal_before is None) or (wal_mode and _valid_wal(wal_after)):
        raise Inconsistent("a -wal appeared or vanished while copying")
    if not wal_mode and journal.exists():
        raise Inconsistent("a write transaction started (-journal present)")
    return copied


# --- scratch folders ----------------------------------------------------------


@contextmanager
def private_scratch(parent: Path, prefix: str) -> Iterator[Path]:
    """A new 0700 folder ``parent/<prefix>XXXX``, ``flock()``-ed until the block ends, then removed.

    Stale folders of the same prefix (their owner died) are removed first.
    """
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    remove_stale(parent, prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mkdtemp folders are 0700
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def remove_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove every ``parent/<prefix>*`` folder nobody holds locked; return them."""
    removed: list[Path] = []
    try:
        children = list(parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for child in children:
        if not child.name.startswith(prefix) or child.is_symlink() or not child.is_dir():
            continue
        try:
            fd = os.open(child, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # in use by a live process
            continue
        try:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
        finally:
            os.close(fd)
    return removed
