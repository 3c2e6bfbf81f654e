"""pmjobsd's own files: private modes, no links, own folders, and crash-safe replacement.

Every file pmjobsd creates is 0600 and every folder it creates 0700.  Its own files are
opened with :func:`open_private` (never through a symbolic link, never someone else's
file) and live only in folders that :func:`check_private_dir` accepts: owned by the user
running pmjobsd and writable by nobody else.  Running as root on a user's HOME is refused
(:func:`check_not_root_on_user_home`): the system unit runs pmjobsd as the vault's owner.

A reader (or a crash) sees either the old file or the new one, never a half
file: the rename is atomic, and the fsyncs make the data and then the folder
entry durable before anyone is told it was written.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class UnsafePathError(OSError):
    """pmjobsd refused one of its own files or folders; the message names it and says why."""

    def __init__(self, path: str | os.PathLike, why: str):
        super().__init__(errno.EPERM, why, str(path))
        self.message = f"{path}: {why}"

    def __str__(self) -> str:
        return self.message


def open_private(path: str | os.PathLike, flags: int, mode: int = PRIVATE_FILE_MODE) -> int:
    """``os.open`` for pmjobsd's own files: never through a link, only a regular file of ours.

    Adds ``O_NOFOLLOW | O_CLOEXEC`` (and ``O_NONBLOCK`` for the open only, so that a fifo
    planted at ``path`` cannot block us).  A new file gets ``mode`` (0600).  Raises
    :class:`UnsafePathError` for a link, a non-regular file or a file of another user.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: FreeBSD's answer to O_NOFOLLOW
            raise UnsafePathError(path, "is a symbolic link; pmjobsd never follows links for its own files") from None
        if exc.errno == errno.ENXIO:  # a fifo without a reader
            raise UnsafePathError(path, "is not a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(path, "is not a regular file")
        if info.st_uid != os.geteuid():
            raise UnsafePathError(path, f"belongs to uid {info.st_uid}, not to uid {os.geteuid()} that runs pmjobsd")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_private_dir(path: Path) -> Path:
    """Accept ``path`` as a folder for pmjobsd's own files, or raise :class:`UnsafePathError`.

    It must be a folder owned by the running user, writable by no other user (group-writable
    only for the user's own primary group, as with user private groups), and if it is reached
    through a symbolic link, the link must be the user's too.
    """
    uid = os.geteuid()
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
        raise UnsafePathError(path, f"is a symbolic link made by uid {link.st_uid}, not by uid {uid} that runs pmjobsd")
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(path, "is not a folder")
    if info.st_uid != uid:
        raise UnsafePathError(
            path, f"belongs to uid {info.st_uid}; pmjobsd (uid {uid}) keeps its files only in its own user's folders"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o002 or (mode & 0o020 and info.st_gid != os.getegid()):
        raise UnsafePathError(path, f"is writable by other users (mode {mode:04o}); expected 0700 (chmod go-w {path})")
    return path


def describe_error(exc: BaseException) -> str:
    """One line for a failure, naming the file when there is one: ``PATH: reason``."""
    if isinstance(exc, UnsafePathError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename is None:
            return exc.strerror
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        return f"{target}: {exc.strerror}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700 folders, then :func:`check_private_dir` it.

    An existing folder keeps its mode: the app's ``logs/`` (0755) is the app's business, and
    ``doctor`` reports the app's modes.  Raises :class:`UnsafePathError` for a folder that
    pmjobsd must not use.
    """
    path = Path(path)
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileNotFoundError:
        ensure_parents(path.parent)
        try:
            os.mkdir(path, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass
    except FileExistsError:
        pass
    return check_private_dir(path)


def ensure_parents(path: Path) -> None:
    """Create the missing folders of ``path`` 0700 (the ones that exist are not checked or changed)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass


def check_not_root_on_user_home() -> None:
    """Refuse to run as root with a ``HOME`` another user owns (its folders are that user's).

    The system unit runs pmjobsd as the vault's owner; root working in a user's folders
    could be led by a planted link to overwrite any file.
    """
    if os.geteuid() != 0:
        return
    home = os.environ.get("HOME")
    if not home:
        return
    try:
        owner = os.stat(home).st_uid
    except OSError:
        return
    if owner != 0:
        raise UnsafePathError(
            f"HOME={home}",
            f"pmjobsd runs as root but HOME belongs to uid {owner}; run it as that user "
            "(sudo -u USER pmjobsd run, or pmjobsd service install --system)",
        )


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def existing_mode(path: Path, default: int = PRIVATE_FILE_MODE) -> int:
    """The permission bits of ``path``, or ``default`` when it does not exist (to keep a mode across a rewrite)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return default


@contextmanager
def atomic_writer(
    path: Path, mode: int = PRIVATE_FILE_MODE, before_replace: Callable[[], None] | None = None
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` (with ``mode``) when the block ends without error.

    On an error the temp file is removed and ``path`` is left as it was; so it is when
    ``before_replace`` (called after the fsync, just before the rename) raises.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; the umask never narrows fchmod
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_atomic(
    path: Path, data: bytes | str, mode: int = PRIVATE_FILE_MODE, before_replace: Callable[[], None] | None = None
) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) atomically and durably (see atomic_writer)."""
    with atomic_writer(path, mode, before_replace) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
