"""pmjobsd's own bookkeeping for the breach cache: per-prefix fetch metadata, last breach seen.

Kept in a SQLite file in the job's private state folder — never in the app's
cache file, whose format the app owns.  One row per prefix: when pmjobsd last
fetched it, its ETag, a fingerprint of what it stored (to notice when the app
rewrote the entry), and its consecutive failures.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from pmjobsd.system.files import PRIVATE_FILE_MODE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prefixes (
    prefix TEXT PRIMARY KEY,
    etag TEXT,
    fetched_at REAL,          -- wall-clock seconds of the last 200 or 304
    fingerprint TEXT,         -- digest of the entry pmjobsd last wrote
    suffix_count INTEGER,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


@dataclass(frozen=True)
class PrefixState:
    prefix: str
    etag: str | None
    fetched_at: float | None
    fingerprint: str | None
    suffix_count: int | None
    failures: int


class BreachState:
    """The state database; use from one thread (the run's main thread)."""

    def __init__(self, path: Path):
        self.path = path
        # Create the file 0600 ourselves: sqlite3 would use the umask.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE))
        os.chmod(path, PRIVATE_FILE_MODE)
        self._db = sqlite3.connect(path, timeout=10.0)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BreachState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def all(self) -> dict[str, PrefixState]:
        rows = self._db.execute(
            "SELECT prefix, etag, fetched_at, fingerprint, suffix_count, failures FROM prefixes"
        ).fetchall()
        return {row[0]: PrefixState(*row) for row in rows}

    def record_fetched(
        self, prefix: str, etag: str | None, fetched_at: float, fingerprint: str, suffix_count: int
    ) -> None:
        self._db.execute(
            "INSERT INTO prefixes (prefix, etag, fetched_at, fingerprint, suffix_count, failures, last_error)"
            " VALUES (?, ?, ?, ?, ?, 0, NULL) ON CONFLICT(prefix) DO UPDATE SET etag=excluded.etag,"
            " fetched_at=excluded.fetched_at, fingerprint=excluded.fingerprint,"
            " suffix_count=excluded.suffix_count, failures=0, last_error=NULL",
            (prefix, etag, fetched_at, fingerprint, suffix_count),
        )

    def record_unchanged(self, prefix: str, etag: str | None, fetched_at: float) -> None:
        self._db.execute(
            "UPDATE prefixes SET fetched_at=?, etag=COALESCE(?, etag), failures=0, last_error=NULL WHERE prefix=?",
            (fetched_at, etag, prefix),
        )

    def record_failed(self, prefix: str, error: str) -> None:
        self._db.execute(
            "INSERT INTO prefixes (prefix, failures, last_error) VALUES (?, 1, ?)"
            " ON CONFLICT(prefix) DO UPDATE SET failures=failures+1, last_error=excluded.last_error",
            (prefix, error),
        )

    def commit(self) -> None:
        self._db.commit()

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )
