"""Build the app's files the way secure-password-manager 1.11 builds them.

Reusable by every test that needs a real vault or real backups (jobs, doctor,
logs bundle).  Sources copied from the app: ``utils/database.py`` (``init_db``:
tables, default categories, indexes, the connection pragmas),
``utils/migrations.py`` (``metadata`` table, ``password_history``,
``schema_version`` = 1) and ``utils/backup.py`` (``_create_backup_zip``: the
zip layout and ``metadata.json``).  ``tests/test_vault.py`` checks the schema
built here against the real app's ``init_db`` when the app is installed.

Seed data carries canary strings (:data:`CANARY`) in every text column and in
the password blob; privacy tests assert that no output contains any of them.

Also here: :class:`AppProcess`, a separate process that behaves like the
running app — one long-lived WAL connection, so recent commits stay in the
``-wal`` file — and can hold a write transaction open or lock the vault.

Run as a script (``python tests/appfixtures.py app VAULT``) it *is* that process.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

CANARY = "zqcanary"  # every seeded secret contains this; it must never appear in any output
DAY = 86400

# The app's connection setup (utils/database.py: _initialize_connection).
APP_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
    "PRAGMA cache_size=-2000",
)

# utils/database.py: init_db(), verbatim statements.
APP_SCHEMA = (
    """
                CREATE TABLE IF NOT EXISTS passwords (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    website TEXT NOT NULL,
                    username TEXT NOT NULL,
                    password BLOB NOT NULL,
                    category TEXT DEFAULT 'General',
                    notes TEXT DEFAULT '',
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    expiry_date INTEGER DEFAULT NULL,
                    favorite BOOLEAN DEFAULT 0
                )
            """,
    """
                CREATE TABLE IF NOT EXISTS categories (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL UNIQUE,
                    color TEXT DEFAULT 'blue'
                )
            """,
)
APP_CATEGORIES = (
    ("General", "blue"),
    ("Work", "red"),
    ("Personal", "green"),
    ("Finance", "purple"),
    ("Social", "orange"),
)
APP_INDEXES = (
    "CREATE INDEX IF NOT EXISTS idx_passwords_category ON passwords(category)",
    "CREATE INDEX IF NOT EXISTS idx_passwords_favorite_website ON passwords(favorite DESC, website ASC)",
    "CREATE INDEX IF NOT EXISTS idx_passwords_expiry_date ON passwords(expiry_date)",
    "CREATE INDEX IF NOT EXISTS idx_passwords_website ON passwords(website)",
    "CREATE INDEX IF NOT EXISTS idx_passwords_username ON passwords(username)",
)
# utils/migrations.py: set_schema_version() and migration_001_add_password_history().
APP_MIGRATION_001 = (
    """
        CREATE TABLE IF NOT EXISTS metadata (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
    """,
    """
        CREATE TABLE IF NOT EXISTS password_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            password_id INTEGER NOT NULL,
            old_password BLOB NOT NULL,
            changed_at INTEGER NOT NULL,
            rotation_reason TEXT DEFAULT 'manual',
            changed_by TEXT DEFAULT 'user',
            FOREIGN KEY (password_id) REFERENCES passwords(id) ON DELETE CASCADE
        )
    """,
    """
        CREATE INDEX IF NOT EXISTS idx_password_history_password_id
        ON password_history(password_id)
    """,
    """
        CREATE INDEX IF NOT EXISTS idx_password_history_changed_at
        ON password_history(changed_at DESC)
    """,
)
BACKUP_MEMBERS = ("passwords_export.dat", "passwords.db", "secret.key", "auth.json", "crypto.salt", "metadata.json")


@dataclass
class SeedEntry:
    """One row of ``passwords`` as the app stores it (``password`` is the Fernet token, bytes)."""

    website: str
    username: str
    password: bytes
    created_at: int
    updated_at: int
    expiry_date: int | None = None
    category: str = "General"
    notes: str = ""
    favorite: int = 0

    def row(self) -> tuple:
        return (
            self.website,
            self.username,
            self.password,
            self.category,
            self.notes,
            self.created_at,
            self.updated_at,
            self.expiry_date,
            self.favorite,
        )


def canary_entry(
    n: int, *, now: int | None = None, age_days: float = 30, expires_in_days: float | None = None
) -> SeedEntry:
    """Entry ``n`` with canary strings in website, username, notes and the password blob.

    Created ``age_days`` before ``now``; ``expires_in_days`` (negative: already
    expired) sets ``expiry_date`` relative to ``now``.
    """
    now = int(time.time()) if now is None else now
    created = now - int(age_days * DAY)
    return SeedEntry(
        website=f"{CANARY}-site-{n}.example",
        username=f"{CANARY}-user-{n}@example.org",
        # A Fernet token starts with gAAAAA; the canary stands in for ciphertext.
        password=b"gAAAAA" + f"{CANARY}-password-{n}".encode() + secrets.token_bytes(16),
        created_at=created,
        updated_at=created,
        expiry_date=None if expires_in_days is None else now + int(expires_in_days * DAY),
        notes=f"{CANARY}-note-{n}",
    )


def app_connect(vault: Path) -> sqlite3.Connection:
    """A connection set up exactly like the app's (WAL, synchronous=NORMAL, foreign keys, busy timeout)."""
    conn = sqlite3.connect(str(vault), timeout=30.0, check_same_thread=False)
    for pragma in APP_PRAGMAS:
        conn.execute(pragma)
    return conn


def create_vault(vault: Path, entries: Sequence[SeedEntry] = (), *, history: int = 0) -> Path:
    """Create ``vault`` as the app's ``init_db()`` + migrations do, insert ``entries``, close.

    ``history`` adds that many ``password_history`` rows for the first entry.
    After the last connection closes SQLite checkpoints and removes the -wal
    and -shm files, as when the app has exited: the vault is WAL mode, alone.
    """
    vault.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = app_connect(vault)
    with conn:
        for statement in APP_SCHEMA:
            conn.execute(statement)
        conn.executemany("INSERT OR IGNORE INTO categories (name, color) VALUES (?, ?)", APP_CATEGORIES)
        for statement in APP_INDEXES:
            conn.execute(statement)
    conn.close()
    # The migrations open their own plain connections (utils/migrations.py).
    plain = sqlite3.connect(str(vault))
    plain.execute(APP_MIGRATION_001[0])
    for statement in APP_MIGRATION_001[1:]:
        plain.execute(statement)
    plain.commit()
    plain.execute("INSERT OR REPLACE INTO metadata (key, value) VALUES ('schema_version', ?)", ("1",))
    plain.commit()
    plain.close()
    if entries or history:
        conn = app_connect(vault)
        with conn:
            add_entries(conn, entries)
            for i in range(history):
                conn.execute(
                    "INSERT INTO password_history (password_id, old_password, changed_at, rotation_reason, changed_by)"
                    " VALUES (1, ?, ?, 'manual', 'user')",
                    (f"{CANARY}-old-password-{i}".encode(), int(time.time()) - i),
                )
        conn.close()
    return vault


def add_entries(conn: sqlite3.Connection, entries: Sequence[SeedEntry]) -> list[int]:
    """Insert ``entries`` with the app's INSERT; return their ids (caller commits)."""
    ids = []
    for entry in entries:
        cursor = conn.execute(
            "INSERT INTO passwords (website, username, password, category, notes, created_at, updated_at,"
            " expiry_date, favorite) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            entry.row(),
        )
        ids.append(cursor.lastrowid)
    return ids


def create_backup(
    backup_dir: Path,
    vault: Path,
    *,
    timestamp: int | None = None,
    key_dir: Path | None = None,
    omit: Sequence[str] = (),
    metadata: dict | str | None = None,
    export_bytes: int = 4096,
) -> Path:
    """Write ``password_manager_backup_<timestamp>.zip`` as ``_create_backup_zip`` does.

    ZIP_DEFLATED; ``passwords_export.dat`` (``export_bytes`` random bytes standing in for the
    encrypted export), the vault's *main file only* (the app does not include
    the -wal: the cause of incomplete backups), ``secret.key``/``auth.json``/
    ``crypto.salt`` from ``key_dir`` (default: the vault's folder) when they
    exist, and ``metadata.json`` (indent=2).  ``omit`` drops members;
    ``metadata`` replaces the metadata (a str is written verbatim).
    """
    timestamp = int(time.time()) if timestamp is None else timestamp
    key_dir = key_dir or vault.parent
    backup_dir.mkdir(parents=True, exist_ok=True)
    path = backup_dir / f"password_manager_backup_{timestamp}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        if "passwords_export.dat" not in omit:
            archive.writestr("passwords_export.dat", secrets.token_bytes(export_bytes))
        for source, name in (
            (vault, "passwords.db"),
            (key_dir / "secret.key", "secret.key"),
            (key_dir / "auth.json", "auth.json"),
            (key_dir / "crypto.salt", "crypto.salt"),
        ):
            if name not in omit and source.exists():
                archive.write(str(source), name)
        if "metadata.json" not in omit:
            if metadata is None:
                metadata = {"version": "2.0", "timestamp": timestamp, "description": "Full password manager backup"}
            archive.writestr("metadata.json", metadata if isinstance(metadata, str) else json.dumps(metadata, indent=2))
    return path


def create_hostile_backup(
    backup_dir: Path, vault: Path, *, timestamp: int, member: str, size: int, fill: bytes = b"\0"
) -> Path:
    """A backup in the app's layout whose ``member`` inflates to ``size`` bytes of ``fill``.

    Honest headers (declared size and CRC-32 match the data), so only a size cap
    stops it: 3 GiB of zeros is a 3 MB file.  Built without deflating ``size``
    bytes: after a full flush, deflate emits the same bytes for each identical
    1 MiB block, so one block's output is repeated.
    """
    block = fill * (_MIB // len(fill))
    assert size % len(block) == 0, "size must be a whole number of MiB"
    count = size // len(block)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH) == repeat
    data = first + repeat * (count - 1) + compressor.flush()
    members: list[tuple[str, bytes, int, int]] = []
    metadata = json.dumps({"version": "2.0", "timestamp": timestamp, "description": "Full password manager backup"})
    normal = {
        "passwords_export.dat": secrets.token_bytes(4096),
        "passwords.db": vault.read_bytes(),
        "metadata.json": metadata.encode(),
    }
    for name, content in normal.items():
        if name == member:
            members.append((name, data, _repeated_crc(block, count), size))
        else:
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            members.append((name, packer.compress(content) + packer.flush(), zlib.crc32(content), len(content)))
    backup_dir.mkdir(parents=True, exist_ok=True)
    path = backup_dir / f"password_manager_backup_{timestamp}.zip"
    _write_raw_zip(path, members)
    return path


_MIB = 1 << 20


@functools.lru_cache(maxsize=8)
def _repeated_crc(block: bytes, count: int) -> int:
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    return crc


def _write_raw_zip(path: Path, members: Sequence[tuple[str, bytes, int, int]]) -> None:
    """Write a ZIP of already-deflated members: (name, raw deflate data, crc32, uncompressed size)."""
    central, offset = b"", 0
    dos_time, dos_date = 0, (2026 - 1980) << 9 | 1 << 5 | 1
    with open(path, "wb") as out:
        for name, data, crc, size in members:
            encoded = name.encode()
            fixed = struct.pack("<HHHHHIII", 20, 0, 8, dos_time, dos_date, crc, len(data), size)
            out.write(b"PK\x03\x04" + fixed + struct.pack("<HH", len(encoded), 0) + encoded)
            out.write(data)
            central += b"PK\x01\x02" + struct.pack("<H", 20) + fixed
            central += struct.pack("<HHHHHII", len(encoded), 0, 0, 0, 0, 0, offset) + encoded
            offset += 30 + len(encoded) + len(data)
        out.write(central)
        out.write(b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(central), offset, 0))


def write_key_files(data_dir: Path) -> None:
    """The app's key material files (random content), so backups carry them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "secret.key").write_bytes(secrets.token_bytes(44))
    (data_dir / "crypto.salt").write_bytes(secrets.token_bytes(16))
    (data_dir / "auth.json").write_text(json.dumps({"hash": secrets.token_hex(32)}))


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut ``path`` to ``keep`` of its size (an interrupted copy or download)."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * keep))


def damage_member(zip_path: Path, member: str, at: float = 0.5) -> None:
    """Flip bytes inside ``member``'s compressed data, ``at`` that fraction of it, so its CRC (or inflate) fails."""
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo(member)
    with open(zip_path, "r+b") as handle:
        handle.seek(info.header_offset + 26)
        name_len = int.from_bytes(handle.read(2), "little")
        extra_len = int.from_bytes(handle.read(2), "little")
        start = info.header_offset + 30 + name_len + extra_len
        middle = start + int(info.compress_size * at)
        handle.seek(middle)
        chunk = handle.read(8)
        handle.seek(middle)
        handle.write(bytes(b ^ 0xFF for b in chunk))


def assert_no_canary(*outputs: object) -> None:
    """Fail if any canary string appears in ``outputs`` (results, notices, log text...)."""
    for output in outputs:
        text = output if isinstance(output, str) else json.dumps(output, default=_dump)
        assert CANARY not in text, f"canary leaked into output: {text[:300]}"


def _dump(value: object) -> object:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


# --- the running app, in its own process -----------------------------------


class AppProcess:
    """A separate process that holds the vault open like the running app.

    It keeps one WAL connection with the app's pragmas, so commits stay in
    ``-wal`` (no checkpoint below 1000 pages) and ``-wal``/``-shm`` exist while
    it runs.  Commands (each waits for the process to answer):

    * :meth:`add` — insert and commit entries, returns their ids
    * :meth:`touch` — set ``updated_at`` of an entry and commit
    * :meth:`begin_write` — ``BEGIN IMMEDIATE`` plus an uncommitted insert (the
      write transaction stays open until :meth:`commit` / :meth:`rollback`)
    * :meth:`lock_exclusive` — ``locking_mode=EXCLUSIVE`` + ``BEGIN EXCLUSIVE``:
      no other process can read until :meth:`close`
    * :meth:`close` — close the connection (SQLite then checkpoints and removes -wal/-shm)

    Use as a context manager; it is killed if still running at exit.
    """

    def __init__(self, vault: Path):
        self.vault = vault
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "app", str(vault)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._call({"cmd": "ping"})

    def _call(self, message: dict):
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"app process exited ({self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply.get("result")

    def add(self, entries: Sequence[SeedEntry]) -> list[int]:
        return self._call({"cmd": "add", "entries": [_entry_json(e) for e in entries]})

    def touch(self, entry_id: int, updated_at: int) -> None:
        self._call({"cmd": "touch", "id": entry_id, "updated_at": updated_at})

    def begin_write(self, entry: SeedEntry | None = None) -> None:
        self._call({"cmd": "begin", "entry": _entry_json(entry or canary_entry(9999))})

    def commit(self) -> None:
        self._call({"cmd": "commit"})

    def rollback(self) -> None:
        self._call({"cmd": "rollback"})

    def lock_exclusive(self) -> None:
        self._call({"cmd": "exclusive"})

    def close(self) -> None:
        if self.proc.poll() is None:
            self._call({"cmd": "close"})
            self.proc.wait(timeout=10)

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def write_transaction_held(vault: Path) -> Iterator[AppProcess]:
    """The app (another process) holds an uncommitted write transaction on ``vault`` for the block."""
    with AppProcess(vault) as app:
        app.begin_write()
        yield app
        app.rollback()


def _entry_json(entry: SeedEntry) -> dict:
    data = asdict(entry)
    data["password"] = entry.password.hex()
    return data


def _serve(vault: str) -> None:
    conn = app_connect(Path(vault))
    conn.isolation_level = None  # explicit transactions below
    conn.execute("SELECT count(*) FROM passwords").fetchone()  # opens -wal/-shm like the app's first query
    for line in sys.stdin:
        message = json.loads(line)
        cmd, result = message["cmd"], None
        try:
            if cmd == "add":
                entries = [SeedEntry(**{**e, "password": bytes.fromhex(e["password"])}) for e in message["entries"]]
                conn.execute("BEGIN")
                result = add_entries(conn, entries)
                conn.execute("COMMIT")
            elif cmd == "touch":
                conn.execute("UPDATE passwords SET updated_at = ? WHERE id = ?", (message["updated_at"], message["id"]))
            elif cmd == "begin":
                entry = message["entry"]
                conn.execute("BEGIN IMMEDIATE")
                add_entries(conn, [SeedEntry(**{**entry, "password": bytes.fromhex(entry["password"])})])
            elif cmd in ("commit", "rollback"):
                if conn.in_transaction:
                    conn.execute(cmd.upper())
            elif cmd == "exclusive":
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
                conn.execute("BEGIN EXCLUSIVE")
                conn.execute("UPDATE metadata SET value = value WHERE key = 'schema_version'")
            elif cmd == "close":
                conn.close()
                print(json.dumps({"result": None}), flush=True)
                return
        except Exception as exc:  # report to the test instead of dying silently
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "app":
    _serve(sys.argv[2])
