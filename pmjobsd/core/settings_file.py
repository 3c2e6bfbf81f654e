"""Reading settings.json: its bytes, whether it can be trusted, and a fingerprint of what was read.

A settings file names code to run (``callable``), files to move (``log_rotation``)
and where alerts and metrics go, so it is trusted only when nobody but its user
(or root) can change it: the file owned by us and not group/other-writable, and
its folder likewise (else the file can be replaced).  A file that fails this is
not parsed at all.

The fingerprint covers the content, owner and mode of the file and its folder, so
a rewrite within the same mtime tick, or a ``chmod`` that makes the file
trusted again, is noticed as a change.
"""

from __future__ import annotations

import enum
import json
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmjobsd.system.digest import sha256_hex


class FileState(str, enum.Enum):
    """What reading settings.json found."""

    OK = "ok"  # a JSON object
    MISSING = "missing"
    EMPTY = "empty"  # zero bytes or only whitespace
    BROKEN = "broken"  # unreadable, not UTF-8, not JSON or not an object
    UNTRUSTED = "untrusted"  # others could change it: not parsed

    @property
    def transient(self) -> bool:
        """A state the app's own save passes through (truncate, then write): not a decision of the user."""
        return self in (FileState.MISSING, FileState.EMPTY, FileState.BROKEN)


@dataclass(frozen=True)
class SettingsRead:
    path: Path
    state: FileState
    data: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    fingerprint: tuple[Any, ...] = ()
    fixes: tuple[str, ...] = ()  # commands that make an untrusted file trusted


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _quote(path: Path) -> str:
    import shlex  # only an untrusted file needs its commands quoted: not imported by every start

    return shlex.quote(str(path))


def _trusted_owner(uid: int) -> bool:
    return uid in (os.getuid(), 0)


def trust_problems(path: Path, info: os.stat_result, folder: os.stat_result | None) -> list[tuple[str, str]]:
    """(why, the command that fixes it) for each way others could change the file (empty: it is the user's own)."""
    problems: list[tuple[str, str]] = []
    me = _user(os.getuid())
    if not _trusted_owner(info.st_uid):
        problems.append(
            (
                f"owned by {_user(info.st_uid)}, not by {me}: another user could add jobs to it",
                f"chown {me} {_quote(path)}",
            )
        )
    if info.st_mode & 0o022:
        problems.append(
            (
                f"writable by group/others ({stat.S_IMODE(info.st_mode):04o}): another user could add jobs to it",
                f"chmod 600 {_quote(path)}",
            )
        )
    if folder is not None:
        if not _trusted_owner(folder.st_uid):
            problems.append(
                (
                    f"its folder is owned by {_user(folder.st_uid)}, not by {me}: the file could be replaced",
                    f"chown {me} {_quote(path.parent)}",
                )
            )
        # A sticky folder (/tmp) lets nobody else rename or remove our file.
        if folder.st_mode & 0o022 and not folder.st_mode & stat.S_ISVTX:
            problems.append(
                (
                    f"its folder is writable by group/others ({stat.S_IMODE(folder.st_mode):04o}): "
                    "the file could be replaced",
                    f"chmod 700 {_quote(path.parent)}",
                )
            )
    return problems


def _stamp(info: os.stat_result | None) -> tuple[int, int] | None:
    return None if info is None else (info.st_uid, stat.S_IMODE(info.st_mode))


def read_settings_file(path: Path) -> SettingsRead:
    """Read, check and parse ``path``; never raises."""
    try:
        folder: os.stat_result | None = os.stat(path.parent)
    except OSError:
        folder = None
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())  # the file we read, not whatever the name points at later
            raw = handle.read()
    except FileNotFoundError:
        return SettingsRead(path, FileState.MISSING, fingerprint=("missing", _stamp(folder)))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return SettingsRead(path, FileState.BROKEN, problems=(f"cannot read: {reason}",), fingerprint=("error", reason))
    fingerprint = (sha256_hex(raw), _stamp(info), _stamp(folder))
    untrusted = trust_problems(path, info, folder)
    if untrusted:
        problems = tuple(f"{why}; not used (fix: {fix})" for why, fix in untrusted)
        fixes = tuple(fix for _, fix in untrusted)
        return SettingsRead(path, FileState.UNTRUSTED, problems=problems, fingerprint=fingerprint, fixes=fixes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start})"
        return SettingsRead(path, FileState.BROKEN, problems=(problem,), fingerprint=fingerprint)
    if not text.strip():
        return SettingsRead(path, FileState.EMPTY, fingerprint=fingerprint)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        return SettingsRead(path, FileState.BROKEN, problems=(problem,), fingerprint=fingerprint)
    if not isinstance(data, dict):
        problem = f"expected a JSON object, got {type(data).__name__}"
        return SettingsRead(path, FileState.BROKEN, problems=(problem,), fingerprint=fingerprint)
    return SettingsRead(path, FileState.OK, data, fingerprint=fingerprint)


def fingerprint(path: Path) -> tuple[Any, ...]:
    """What :func:`read_settings_file` would fingerprint now (content, owner and mode; cheap for a small file)."""
    return read_settings_file(path).fingerprint
