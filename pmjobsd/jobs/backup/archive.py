"""The app's backup zips: find them, test them, extract the embedded vault.

Layout (secure-password-manager ``utils/backup.py: _create_backup_zip``):
``password_manager_backup_<unix ts>.zip``, ZIP_DEFLATED, members
``passwords_export.dat`` (the encrypted export), ``passwords.db`` (the vault's
main file, copied *without* its ``-wal``), ``secret.key``, ``auth.json``,
``crypto.salt`` (each only when it exists) and ``metadata.json``
(``{"version", "timestamp", "description"}``).
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
    path: Path, extract_db_to: Path, *, check_cancelled: Callable[[], None] | None = None
) -> ArchiveReport:
    """Test every member's data and CRC, check the layout, parse ``metadata.json``,
    and write the embedded ``passwords.db`` to ``extract_db_to`` (0600).

    Raise :class:`BackupDefect` naming the first problem found.
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
        for info in archive.infolist():
            if check_cancelled is not None:
                check_cancelled()
            target = extract_db_to if info.filename == "passwords.db" else None
            _test_member(archive, info, target)
        try:
            metadata = json.loads(archive.read("metadata.json").decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BackupDefect(f"metadata.json is not valid JSON ({exc})") from None
        timestamp = metadata.get("timestamp") if isinstance(metadata, dict) else None
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise BackupDefect("metadata.json: expected an object with an integer 'timestamp' (unix seconds)")
        return ArchiveReport(metadata, timestamp, tuple(names))


def _test_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path | None) -> None:
    # Reading a member to its end makes zipfile compare the CRC-32; inflate errors
    # and a stream that ends early surface as zlib.error / EOFError.
    out = None
    try:
        if target is not None:
            out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        with archive.open(info) as member:
            while True:
                chunk = member.read(_CHUNK)
                if not chunk:
                    break
                if out is not None:
                    out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise BackupDefect(f"member {info.filename} is damaged ({exc})") from None
    finally:
        if out is not None:
            out.close()


def compare_with_live(
    backup: dict[int, EntryStamp], live: dict[int, EntryStamp], backup_timestamp: int, *, imports_possible: bool = True
) -> Completeness:
    """Entries the backup should hold but does not, judged by id and ``updated_at`` only.

    Strictly before ``backup_timestamp`` (whole seconds, so an entry saved in the
    same second as the backup is not held against it): an entry created then
    must be in the backup; an entry last changed then must be there in that
    version or a later one.  Entries changed after the backup are only
    required to exist.

    The app's import keeps the exported ``created_at``/``updated_at``, so an
    entry imported after the backup can look older than it.  An absent entry
    whose id is above the backup's highest id (ids only grow: AUTOINCREMENT)
    and that was never edited (``created_at == updated_at``) may be such an
    import: it goes to ``maybe_imported_ids``, not ``missing_ids``.  Pass
    ``imports_possible=False`` when the backup cannot have been followed by an
    import that explains it (its database has no ``passwords`` table at all).
    """
    highest_backup_id = max(backup, default=0)
    missing, older, maybe_imported = [], [], []
    for entry_id, entry in sorted(live.items()):
        if entry.created_at >= backup_timestamp:
            continue
        copy = backup.get(entry_id)
        if copy is None:
            if imports_possible and entry_id > highest_backup_id and entry.created_at == entry.updated_at:
                maybe_imported.append(entry_id)
            else:
                missing.append(entry_id)
        elif entry.updated_at < backup_timestamp and copy.updated_at < entry.updated_at:
            older.append(entry_id)
    return Completeness(tuple(missing), tuple(older), tuple(maybe_imported))
