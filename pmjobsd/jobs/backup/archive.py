"""The app's backup zips: find them, test them, extract the embedded vault.

Layout (secure-password-manager ``utils/backup.py: _create_backup_zip``):
``password_manager_backup_<unix ts>.zip``, ZIP_DEFLATED, members
``passwords_export.dat`` (the encrypted export), ``passwords.db`` (the vault's
main file, copied *without* its ``-wal``), ``secret.key``, ``auth.json``,
``crypto.salt`` (each only when it exists) and ``metadata.json``
(``{"version", "timestamp", "description"}``).

A backup zip is untrusted input (anyone who can write the backups folder made
it): every member is capped by its declared and by its actual size
(:class:`Limits`), the cancel flag is checked every 1 MiB inside a member,
``metadata.json`` is read to at most ``metadata_bytes`` and parsed only when
its nesting is at most ``json_depth`` deep.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pmjobsd.app.vault import EntryStamp

BACKUP_NAME = re.compile(r"^password_manager_backup_(\d+)\.zip$")
# restore_from_backup() refuses a backup without the export; without passwords.db
# or metadata.json there is nothing for us to verify.
REQUIRED_MEMBERS = ("passwords_export.dat", "passwords.db", "metadata.json")
_CHUNK = 1 << 20
MAX_MEMBERS = 256  # the app writes 6; a zip with thousands is not one of its backups


@dataclass(frozen=True)
class Limits:
    """What one backup may cost: ``member_bytes`` per member (declared and actual),
    ``metadata_bytes`` for ``metadata.json`` and its JSON nesting depth."""

    member_bytes: int
    metadata_bytes: int = 1 << 20
    json_depth: int = 32


class BackupDefect(Exception):
    """The backup is unusable; the message says why (the caller prefixes the file name)."""


@dataclass(frozen=True)
class BackupFile:
    path: Path
    name_timestamp: int  # from the file name: when the app started the backup

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class ArchiveReport:
    metadata: dict
    timestamp: int  # metadata.json "timestamp"
    members: tuple[str, ...]


@dataclass(frozen=True)
class Completeness:
    """How a backup's entries compare with the live vault's (ids of entries, not their content)."""

    missing_ids: tuple[int, ...]  # existed before the backup, still exist, absent from it
    older_ids: tuple[int, ...]  # changed before the backup, yet the backup holds an older version
    # Absent, dated before the backup, but possibly imported after it (see compare_with_live): a warning.
    maybe_imported_ids: tuple[int, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing_ids and not self.older_ids


def find_backups(folders: Iterable[Path]) -> list[BackupFile]:
    """Every ``password_manager_backup_<ts>.zip`` directly in ``folders``, newest first."""
    found: dict[Path, BackupFile] = {}
    for folder in folders:
        try:
            children = list(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for child in children:
            match = BACKUP_NAME.match(child.name)
            if match and child.is_file():
                found[child.resolve()] = BackupFile(child, int(match.group(1)))
    return sorted(found.values(), key=lambda b: (b.name_timestamp, b.name), reverse=True)


def check_archive(
    path: Path, extract_db_to: Path, limits: Limits, *, check_cancelled: Callable[[], None] | None = None
) -> ArchiveReport:
    """Test every member's data and CRC, check the layout, parse ``metadata.json``,
    and write the embedded ``passwords.db`` to ``extract_db_to`` (0600).

    Nothing is read past ``limits``.  Raise :class:`BackupDefect` naming the first
    problem found.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise BackupDefect(f"not a readable zip archive, truncated or damaged ({exc})") from None
    except OSError as exc:
        raise BackupDefect(f"cannot open: {exc.strerror or exc}") from None
    with archive:
        names = archive.namelist()
        missing = [name for name in REQUIRED_MEMBERS if name not in names]
        if missing:
            raise BackupDefect(f"missing member(s) {', '.join(missing)}")
        if len(names) > MAX_MEMBERS:
            raise BackupDefect(f"holds {len(names)} members, the app's backups hold at most {MAX_MEMBERS}")
        for info in archive.infolist():
            cap = limits.metadata_bytes if info.filename == "metadata.json" else limits.member_bytes
            if info.file_size > cap:
                raise BackupDefect(
                    f"member {info.filename} declares {info.file_size} bytes, more than the limit of {cap}"
                    " (member_limit_factor times the live vault, at least member_limit_min_mb)"
                )
        metadata_bytes = b""
        for info in archive.infolist():
            if check_cancelled is not None:
                check_cancelled()
            target = extract_db_to if info.filename == "passwords.db" else None
            cap = limits.metadata_bytes if info.filename == "metadata.json" else limits.member_bytes
            kept = _test_member(archive, info, target, cap, check_cancelled, keep=info.filename == "metadata.json")
            if info.filename == "metadata.json":
                metadata_bytes = kept
        metadata = _parse_metadata(metadata_bytes, limits.json_depth)
        timestamp = metadata.get("timestamp") if isinstance(metadata, dict) else None
        if not isinstance(metadata, dict) or not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise BackupDefect("metadata.json: expected an object with an integer 'timestamp' (unix seconds)")
        return ArchiveReport(metadata, timestamp, tuple(names))


def _test_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path | None,
    cap: int,
    check_cancelled: Callable[[], None] | None,
    *,
    keep: bool = False,
) -> bytes:
    """Read ``info`` to its end (zipfile then compares the CRC-32), at most ``cap`` bytes,
    writing it to ``target`` when given; return its bytes when ``keep``."""
    # Inflate errors and a stream that ends early surface as zlib.error / EOFError.
    out = None
    kept = bytearray()
    total = 0
    try:
        if target is not None:
            out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        with archive.open(info) as member:
            while True:
                if check_cancelled is not None:
                    check_cancelled()
                chunk = member.read(min(_CHUNK, cap + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
                if total > cap:  # zipfile stops at the declared size; this guards the rest
                    raise BackupDefect(f"member {info.filename} holds more than the limit of {cap} bytes")
                if out is not None:
                    out.write(chunk)
                if keep:
                    kept += chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise BackupDefect(f"member {info.filename} is damaged ({exc})") from None
    finally:
        if out is not None:
            out.close()
    return bytes(kept)


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON ``text`` (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _parse_metadata(data: bytes, max_depth: int) -> object:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BackupDefect(f"metadata.json is not valid JSON ({exc})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise BackupDefect(f"metadata.json nests {depth} levels deep, expected at most {max_depth}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BackupDefect(f"metadata.json is not valid JSON ({exc})") from None


def compare_with_live(
    backup: dict[int, EntryStamp], live: dict[int, EntryStamp], backup_timestamp: int, *, imports_possible: bool = True
) -> Completeness:
    """Entries the backup should hold but does not, judged by id and timestamps only.

    Created at or before ``backup_timestamp`` (whole seconds: an entry saved in
    the same second as the backup must be in it): the entry must be in the
    backup.  Last changed strictly before it: in that version or a later one.
    Entries changed later are only required to exist.

    The app's import keeps the exported ``created_at``/``updated_at``, so an
    entry imported after the backup can look older than it.  The app gives a new
    entry the next id *and* the current time, so ids and ``created_at`` grow
    together for everything it creates.  An absent entry goes to
    ``maybe_imported_ids`` (a warning, not a failure) only when that cannot be
    how it was made: its id is above the backup's highest id, it was never
    edited (``created_at == updated_at``), and it is dated *before* the newest
    entry the backup holds.  An absent entry dated after that one is what the
    app added and the backup lost (its ``-wal``): missing.  Pass
    ``imports_possible=False`` when the backup cannot have been followed by an
    import that explains it (its database has no ``passwords`` table at all).
    """
    highest_backup_id = max(backup, default=0)
    newest_backup_entry = max((entry.created_at for entry in backup.values()), default=None)
    missing, older, maybe_imported = [], [], []
    for entry_id, entry in sorted(live.items()):
        if entry.created_at > backup_timestamp:
            continue
        copy = backup.get(entry_id)
        if copy is None:
            if (
                imports_possible
                and entry_id > highest_backup_id
                and entry.created_at == entry.updated_at
                and newest_backup_entry is not None
                and entry.created_at < newest_backup_entry
            ):
                maybe_imported.append(entry_id)
            else:
                missing.append(entry_id)
        elif entry.updated_at < backup_timestamp and copy.updated_at < entry.updated_at:
            older.append(entry_id)
    return Completeness(tuple(missing), tuple(older), tuple(maybe_imported))
