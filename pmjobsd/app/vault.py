"""Read the app's vault (``passwords.db``) strictly read-only while the app may write it.

The app keeps the vault in WAL mode with a long-lived connection, so at any
moment committed entries may live only in ``passwords.db-wal``.  No SQLite
open of the live files is safe (checked with strace against SQLite 3.40 in
``tests/app/test_vault_readonly_race.py``):

* ``?mode=ro`` on a WAL database whose ``-wal``/``-shm`` are absent *creates*
  both files, and with them present writes read marks into the ``-shm``.
* ``?mode=ro&readonly_shm=1`` changes no byte, yet SQLite's unix VFS still
  opens the ``-wal`` ``O_RDWR|O_CREAT`` (read-only is only its fallback after
  ``EACCES``): as root, racing the app's close, it leaves an orphan 0-byte
  ``-wal``, fails with ``SQLITE_CANTOPEN``, and changes the sidecars' owner (``fchown``).
* ``?immutable=1`` without ``mode=ro`` opens the main file ``O_RDWR|O_CREAT``;
  with it, it ignores the ``-wal`` (stale data, torn pages under a checkpoint).

So :func:`read_vault` never lets SQLite near the live files: it copies the
database and its ``-wal`` (when present) with ``O_RDONLY`` opens into a private
0700 scratch folder, checks that the copy is consistent
(:mod:`pmjobsd.app.snapshot`: the ``-wal`` header unchanged, or the main file
unchanged when there is no ``-wal``), opens the copy and removes it.  A copy
that may be torn, a file that vanished mid-copy, and ``database is locked`` are
retried with backoff until ``lock_timeout``.  pmjobsd never creates, changes,
deletes or re-owns a file next to the vault.
"""

from __future__ import annotations

import random
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from pmjobsd.app.snapshot import Inconsistent, private_scratch, snapshot_database

T = TypeVar("T")

SQLITE_MAGIC = b"SQLite format 3\x00"
SNAPSHOT_PREFIX = "vault-"
# schema_version in the vault's metadata table: 0 = created before migrations
# existed (no metadata table), 1 = secure-password-manager 1.11 (migration 001).
KNOWN_SCHEMA_VERSIONS = frozenset({0, 1})
REQUIRED_PASSWORD_COLUMNS = frozenset({"id", "website", "created_at", "updated_at", "expiry_date"})

# SQLite result codes (extended names) that mean "someone else is busy, try again".
_RETRYABLE_ERRORS = frozenset(
    {
        "SQLITE_BUSY",
        "SQLITE_BUSY_RECOVERY",
        "SQLITE_BUSY_SNAPSHOT",
        "SQLITE_BUSY_TIMEOUT",
        "SQLITE_LOCKED",
        "SQLITE_LOCKED_SHAREDCACHE",
        "SQLITE_PROTOCOL",
        "SQLITE_READONLY_RECOVERY",
        "SQLITE_READONLY_CANTINIT",
        "SQLITE_READONLY_CANTLOCK",
    }
)


class VaultError(Exception):
    """The vault cannot be read.  ``reason`` is one of: ``missing``, ``not_a_database``,
    ``not_a_vault``, ``unknown_schema``, ``locked``, ``corrupt``, ``unreadable``.

    The message names the file and what was expected; it never quotes vault content.
    """

    def __init__(self, path: Path, reason: str, message: str):
        super().__init__(message)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class VaultRead(Generic[T]):
    """The value ``read`` returned, with how it was obtained."""

    value: T
    schema_version: int | None  # None when the schema was not checked
    access: str  # "snapshot": always a private, consistent copy
    attempts: int


@dataclass(frozen=True)
class EntryStamp:
    """An entry's id and timestamps: enough to compare two copies without decrypting."""

    id: int
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class ExpiryEntry:
    """An entry with an expiry date.  ``website`` is plaintext in the vault: keep it in memory only."""

    id: int
    website: str
    expiry_date: int


class _Retry(Exception):
    """This attempt met a lock or a changing file; try again after a pause."""


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def read_header(path: Path) -> bytes:
    """Return the 100-byte SQLite header of ``path``; raise VaultError (missing / not_a_database / unreadable)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        raise VaultError(path, "missing", f"{path}: no such file (has the app created its vault yet?)") from None
    except IsADirectoryError:
        raise VaultError(path, "not_a_database", f"{path}: is a folder, expected an SQLite database file") from None
    except OSError as exc:
        raise VaultError(path, "unreadable", f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise VaultError(
            path, "not_a_database", f"{path}: not an SQLite database (expected the 'SQLite format 3' header)"
        )
    return header


def _error_name(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)  # Python 3.11+
    if isinstance(name, str) and name:
        return name
    text = str(exc).lower()  # Python 3.10: only the message is available
    if "locked" in text or "busy" in text:
        return "SQLITE_BUSY"
    if "not a database" in text:
        return "SQLITE_NOTADB"
    if "malformed" in text:
        return "SQLITE_CORRUPT"
    return "SQLITE_ERROR"


def _connect(uri: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")  # belt and braces: this connection must never write
    return conn


def check_schema(conn: sqlite3.Connection, path: Path) -> int:
    """Return the vault's schema version; raise VaultError (not_a_vault / unknown_schema)."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "passwords" not in tables:
        raise VaultError(
            path, "not_a_vault", f"{path}: SQLite database without a 'passwords' table, not a password vault"
        )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(passwords)")}
    missing = sorted(REQUIRED_PASSWORD_COLUMNS - columns)
    if missing:
        raise VaultError(path, "unknown_schema", f"{path}: table 'passwords' lacks column(s) {', '.join(missing)}")
    version = 0
    if "metadata" in tables:
        row = conn.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row else 0
        except (TypeError, ValueError):
            raise VaultError(path, "unknown_schema", f"{path}: metadata.schema_version is not an integer") from None
    if version not in KNOWN_SCHEMA_VERSIONS:
        known = ", ".join(str(v) for v in sorted(KNOWN_SCHEMA_VERSIONS))
        raise VaultError(
            path,
            "unknown_schema",
            f"{path}: schema_version {version} is not one pmjobsd knows ({known}); update pmjobsd to match the app",
        )
    return version


def _read_once(
    path: Path, read: Callable[[sqlite3.Connection], T], *, vault: bool, scratch_dir: Path, busy_timeout: float
) -> tuple[T, int | None, str]:
    header = read_header(path)
    wal_mode = header[18] == 2 or header[19] == 2
    with private_scratch(scratch_dir, SNAPSHOT_PREFIX) as folder:
        copy = folder / path.name
        try:
            snapshot_database(path, folder, wal_mode=wal_mode)
        except Inconsistent as exc:
            raise _Retry(str(exc)) from None
        except OSError as exc:
            raise VaultError(path, "unreadable", f"{path}: cannot copy: {exc.strerror or exc}") from None
        try:
            conn = _connect(copy.as_uri() + "?mode=ro", busy_timeout)
            try:
                conn.execute("BEGIN")  # one read transaction: every query sees the same snapshot
                version = check_schema(conn, path) if vault else None
                value = read(conn)
            finally:
                conn.close()
            return value, version, "snapshot"
        except sqlite3.Error as exc:
            name = _error_name(exc)
            if name in _RETRYABLE_ERRORS:
                raise _Retry(name) from None
            if name.startswith("SQLITE_NOTADB"):
                raise VaultError(path, "not_a_database", f"{path}: not an SQLite database ({exc})") from None
            if name.startswith("SQLITE_CORRUPT"):
                raise VaultError(path, "corrupt", f"{path}: database is damaged ({exc})") from None
            raise VaultError(path, "unreadable", f"{path}: cannot read ({name}: {exc})") from None


def read_vault(
    path: Path,
    read: Callable[[sqlite3.Connection], T],
    *,
    lock_timeout: float = 10.0,
    vault: bool = True,
    scratch_dir: Path | None = None,
    check_cancelled: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VaultRead[T]:
    """Run ``read(conn)`` inside one read transaction on the database at ``path``, read-only.

    With ``vault=True`` the schema is checked first (:func:`check_schema`).
    ``read`` must only query; it may run more than once (after a lock or a
    copy that may be torn).  ``scratch_dir`` holds the private copy (a 0700
    ``vault-*`` folder, removed after the read; stale ones left by a killed
    process are removed first; default: the system temp folder).  Raises
    :class:`VaultError`; ``reason="locked"`` once ``lock_timeout`` seconds
    passed without a clean read.
    """
    path = Path(path)
    scratch = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
    give_up_at = clock() + lock_timeout
    delay, attempts, last = 0.01, 0, "locked"
    while True:
        attempts += 1
        if check_cancelled is not None:
            check_cancelled()
        remaining = give_up_at - clock()
        try:
            value, version, access = _read_once(
                path, read, vault=vault, scratch_dir=scratch, busy_timeout=max(0.05, min(0.25, remaining))
            )
            return VaultRead(value, version, access, attempts)
        except _Retry as retry:
            last = str(retry)
        if clock() + delay > give_up_at:
            raise VaultError(
                path,
                "locked",
                f"{path}: no consistent read while the app keeps writing"
                f" (still {last} after {lock_timeout:g}s, {attempts} attempts)",
            )
        # Short, jittered pauses: a copy is torn only while the app writes, and a
        # writer with a steady rhythm must not meet every attempt in the same phase.
        sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 0.2)


# --- queries ---------------------------------------------------------------


def entry_stamps(conn: sqlite3.Connection) -> dict[int, EntryStamp]:
    """Every entry's id, created_at and updated_at (no secret column is read)."""
    rows = conn.execute("SELECT id, created_at, updated_at FROM passwords")
    return {row[0]: EntryStamp(row[0], int(row[1] or 0), int(row[2] or 0)) for row in rows}


def entries_expiring_by(conn: sqlite3.Connection, until: int) -> list[ExpiryEntry]:
    """Entries whose ``expiry_date`` is at or before ``until`` (unix seconds), nearest first."""
    rows = conn.execute(
        "SELECT id, website, expiry_date FROM passwords"
        " WHERE expiry_date IS NOT NULL AND expiry_date <= ? ORDER BY expiry_date ASC, id ASC",
        (until,),
    )
    return [ExpiryEntry(row[0], str(row[1] or ""), int(row[2])) for row in rows]


def integrity_problems(
    conn: sqlite3.Connection, quick: bool = False, limit: int = 10, hash_id: Callable[[int], str] | None = None
) -> list[str]:
    """Problems found by ``PRAGMA integrity_check`` (or ``quick_check``) and ``foreign_key_check``.

    Returns at most ``limit`` messages; an empty list means the database is sound.
    SQLite's messages name pages, tables and indexes, never row content, but
    may name a rowid ("row 5 missing from index ..."), which is an entry id:
    it is replaced by ``hash_id(rowid)`` (or ``<id>``).
    """
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = [row[0] for row in conn.execute(f"PRAGMA {pragma}({int(limit)})")]
        problems = [] if rows == ["ok"] else [str(row) for row in rows]
        violations: dict[tuple[str, str], int] = {}
        for table, _rowid, parent, _fkid in conn.execute("PRAGMA foreign_key_check"):
            violations[(table, parent)] = violations.get((table, parent), 0) + 1
    except sqlite3.DatabaseError as exc:  # a badly damaged file fails the check itself
        return [f"{pragma} could not complete: {exc}"]
    problems += [
        f"foreign key: {count} row(s) of {table} reference missing {parent} rows"
        for (table, parent), count in sorted(violations.items())
    ]
    redact = (lambda m: f"row {hash_id(int(m.group(1)))}") if hash_id else (lambda m: "row <id>")
    return [_ROWID.sub(redact, problem) for problem in problems[:limit]]


_ROWID = re.compile(r"\brow (\d+)")


def describe_access(access: str) -> str:
    """One line for logs: how the vault was opened."""
    return {"snapshot": "private consistent copy of the vault and its -wal"}.get(access, access)


def sidecar_files(path: Path) -> Iterable[Path]:
    """The files SQLite may keep beside ``path`` (for checks that nothing new appeared)."""
    return [_sidecar(path, suffix) for suffix in ("-wal", "-shm", "-journal")]
