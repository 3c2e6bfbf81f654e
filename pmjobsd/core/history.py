"""Run history: every attempt of every run, in SQLite (WAL) in the state folder.

A row is written when an attempt starts (status RUNNING, with the writer's
pid) and updated when it ends, so a run in flight when the process died is
never lost: the next daemon start — or any reader — sees a RUNNING row whose
pid is gone and reports it as INTERRUPTED.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import Status, Trigger
from pmjobsd.system.files import PRIVATE_FILE_MODE, ensure_private_dir, open_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    job          TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    slot         TEXT,
    started_at   REAL NOT NULL,
    finished_at  REAL,
    status       TEXT NOT NULL,
    summary      TEXT NOT NULL DEFAULT '',
    error        TEXT,
    duration_ms  INTEGER,
    details      TEXT NOT NULL DEFAULT '{}',
    metrics      TEXT NOT NULL DEFAULT '{}',
    final        INTEGER NOT NULL DEFAULT 1,
    pid          INTEGER NOT NULL,
    pid_started  REAL,
    PRIMARY KEY (run_id, attempt)
);
CREATE INDEX IF NOT EXISTS runs_job_started ON runs (job, started_at);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_job_final ON runs (job, final, status, started_at);
"""


def _sql_list(words: Iterable[Status | Trigger]) -> str:
    """A SQL list of the words' values, ``('FAIL', 'TIMEOUT')`` (the enums' own constants, never input)."""
    return "(" + ", ".join(f"'{word.value}'" for word in words) + ")"


_FINISHED = f"status != '{Status.RUNNING.value}'"
_FAILED = _sql_list(status for status in Status if status.failed)
_SUCCEEDED = _sql_list(status for status in Status if status.succeeded)
_SLOT_TRIGGERS = _sql_list(trigger for trigger in Trigger if trigger.for_slot)


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None when there is no such process."""
    import psutil  # only when a RUNNING row must be told from an interrupted one

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # alive, start time unknown


_own_start: tuple[int, float | None] = (-1, None)


def _own_start_time() -> float | None:
    """This process's start time, cached per pid (a detached daemon has a new pid after fork)."""
    global _own_start
    if _own_start[0] != os.getpid():
        _own_start = (os.getpid(), process_start_time(os.getpid()))
    return _own_start[1]


def _writer_alive(pid: int, started: float | None) -> bool:
    """Is the process that wrote a row still the one running under ``pid``?

    A pid alone is not enough: after a crash the pid is reused (in a container the
    daemon is PID 1 every time), so the writer's start time is compared too.
    """
    now_started = process_start_time(pid)
    if now_started is None:
        return False
    if started is None or now_started < 0:
        return True
    return abs(now_started - started) < 1.0


class RunHistory:
    """Thread-safe access to the run history database at ``path``.

    Use as a context manager or call :meth:`close`.  Readers that find the
    file missing get an empty history (``create=False``), as does ``empty=True``
    (a damaged file being reported, not read).  ``busy_timeout`` bounds each
    wait for another writer (the history writer keeps it short and retries).
    """

    def __init__(self, path: Path, *, create: bool = True, busy_timeout: float = 10.0, empty: bool = False):
        self.path = Path(path)
        self._lock = threading.RLock()
        if create and not empty:
            ensure_private_dir(self.path.parent)
            # Created 0600 here, and refused when it is a link or not ours: SQLite follows links.
            if not self.path.exists():
                os.close(open_private(self.path, os.O_WRONLY | os.O_CREAT))
        elif empty or not self.path.exists():
            self._conn = sqlite3.connect(":memory:", check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.executescript(SCHEMA)
            return
        # Several processes may write (the daemon, a `run-now` without daemon):
        # WAL lets readers go on while one writes; busy_timeout waits for the writer.
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL, not FULL: in WAL mode a commit is appended to the -wal file without an fsync
        # (the fsync comes at checkpoints). A process crash (kill -9, OOM) loses nothing: what
        # was committed is in the OS's page cache and in the -wal file, and the next open
        # replays it. Only a power loss or a kernel crash can lose the last transactions, and
        # those are whole transactions (never a torn row): their runs then look like runs that
        # never started, while the database stays sound. FULL would put an fsync in every
        # group commit, which is what every start of a run waits for.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        if "pid_started" not in columns:  # a history written by pmjobsd 0.1.0 before this column
            self._conn.execute("ALTER TABLE runs ADD COLUMN pid_started REAL")
        for suffix in ("-wal", "-shm"):
            sidecar = Path(f"{self.path}{suffix}")
            if sidecar.exists() and sidecar.stat().st_uid == os.getuid():
                sidecar.chmod(PRIVATE_FILE_MODE)

    def __enter__(self) -> RunHistory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    # --- writing ----------------------------------------------------------
    def record_start(self, record: RunRecord) -> None:
        self._execute(
            "INSERT OR REPLACE INTO runs (run_id, attempt, job, trigger, slot, started_at, status, pid, pid_started)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.run_id,
                record.attempt,
                record.job,
                record.trigger.value,
                record.slot.isoformat() if record.slot else None,
                record.started_at,
                Status.RUNNING.value,
                os.getpid(),
                _own_start_time(),
            ),
        )

    def record_finish(self, record: RunRecord) -> None:
        self._execute(
            "UPDATE runs SET finished_at=?, status=?, summary=?, error=?, duration_ms=?, details=?, metrics=?, final=?"
            " WHERE run_id=? AND attempt=?",
            (
                record.finished_at,
                record.status.value,
                record.summary,
                record.error,
                record.duration_ms,
                json.dumps(record.details, default=str),
                json.dumps(record.metrics, default=str),
                int(record.final),
                record.run_id,
                record.attempt,
            ),
        )

    def write(self, record: RunRecord) -> None:
        """Write ``record`` as it is now, whether its row exists or not (the history writer's one statement)."""
        self._execute(_UPSERT, _upsert_params(record, os.getpid(), _own_start_time()))

    def write_many(self, records: Iterable[RunRecord]) -> None:
        """Write ``records`` as :meth:`write` does, all in one transaction: all of them land, or none.

        This is the history writer's group commit: the starts and ends of every run
        that came in while the last transaction was written share one commit.
        """
        pid, pid_started = os.getpid(), _own_start_time()
        with self._lock:
            conn = self._conn
            # IMMEDIATE: take the write lock now (busy_timeout waits for another writer here),
            # not halfway through the batch.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, [_upsert_params(record, pid, pid_started) for record in records])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    def mark_final(self, run_id: str, attempt: int) -> None:
        """No retry follows this attempt after all: its outcome is the run's."""
        self._execute("UPDATE runs SET final=1 WHERE run_id=? AND attempt=?", (run_id, attempt))

    def mark_interrupted(self) -> int:
        """Turn RUNNING rows whose writer is gone into INTERRUPTED; return how many."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT run_id, attempt, pid, pid_started FROM runs WHERE status=?", (Status.RUNNING.value,)
            ).fetchall()
            dead = [row for row in rows if not _writer_alive(row["pid"], row["pid_started"])]
            for row in dead:
                self._conn.execute(
                    "UPDATE runs SET status=?, finished_at=?, summary=?, final=1 WHERE run_id=? AND attempt=?",
                    (
                        Status.INTERRUPTED.value,
                        time.time(),
                        "interrupted: pmjobsd stopped during the run",
                        row["run_id"],
                        row["attempt"],
                    ),
                )
            return len(dead)

    def purge(self, older_than: float) -> int:
        """Delete finished runs that started before ``older_than`` (epoch seconds); return how many."""
        with self._lock:
            cursor = self._conn.execute(f"DELETE FROM runs WHERE started_at < ? AND {_FINISHED}", (older_than,))
            return cursor.rowcount

    # --- reading ------------------------------------------------------------
    def _row_to_dict(self, row: sqlite3.Row) -> dict[str, Any]:
        data = dict(row)
        data.pop("newest", None)
        if data["status"] == Status.RUNNING.value and not _writer_alive(data["pid"], data.get("pid_started")):
            data["status"] = Status.INTERRUPTED.value
        data["details"] = json.loads(data["details"] or "{}")
        data["metrics"] = json.loads(data["metrics"] or "{}")
        data["final"] = bool(data["final"])
        return data

    def last_runs(self) -> dict[str, dict[str, Any]]:
        """The newest attempt of each job."""
        # SQLite returns the other columns from the row that holds MAX(): one index walk per job.
        rows = self._execute("SELECT *, MAX(started_at) AS newest FROM runs GROUP BY job").fetchall()
        return {row["job"]: self._row_to_dict(row) for row in rows}

    def recent(self, job: str | None = None, limit: int = 20, since: float | None = None) -> list[dict[str, Any]]:
        """Newest first; all jobs when ``job`` is None."""
        clauses: list[str] = []
        params: list[Any] = []
        if job is not None:
            clauses.append("job = ?")
            params.append(job)
        if since is not None:
            clauses.append("started_at >= ?")
            params.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._execute(
            f"SELECT * FROM runs {where} ORDER BY started_at DESC, attempt DESC LIMIT ?", (*params, limit)
        ).fetchall()
        return [self._row_to_dict(row) for row in rows]

    def last_success_times(self) -> dict[str, float]:
        """When each job last finished an attempt that succeeded (OK or WARN; epoch seconds): it did its work."""
        # Per job, newest first along the (job, started_at) index: stops at the first success.
        rows = self._execute(
            f"SELECT j.job, (SELECT finished_at FROM runs r WHERE r.job = j.job AND r.status IN {_SUCCEEDED}"
            " ORDER BY r.started_at DESC, r.attempt DESC LIMIT 1) AS finished FROM (SELECT DISTINCT job FROM runs) j"
        ).fetchall()
        return {row["job"]: row["finished"] for row in rows if row["finished"] is not None}

    def last_slots(self) -> dict[str, datetime]:
        """The newest scheduled slot each job ran for (catch-up compares against it)."""
        rows = self._execute(
            f"SELECT job, slot FROM runs WHERE slot IS NOT NULL AND trigger IN {_SLOT_TRIGGERS}"
        ).fetchall()
        slots: dict[str, datetime] = {}
        for row in rows:
            slot = datetime.fromisoformat(row["slot"])
            if row["job"] not in slots or slot > slots[row["job"]]:
                slots[row["job"]] = slot
        return slots

    def consecutive_failures(self, job: str) -> int:
        """Final outcomes of ``job`` that failed (FAIL, TIMEOUT), counted back from the newest success.

        INTERRUPTED runs (the daemon stopped) say nothing about the job: they neither
        count nor end the streak, like the alert rules treat them.
        """
        row = self._execute(
            f"SELECT COUNT(*) FROM runs WHERE job = ?1 AND final = 1 AND status IN {_FAILED}"
            " AND started_at > COALESCE((SELECT MAX(started_at) FROM runs WHERE job = ?1 AND final = 1"
            f" AND status IN {_SUCCEEDED}), -1)",
            (job,),
        ).fetchone()
        return int(row[0])


_UPSERT = (
    "INSERT INTO runs (run_id, attempt, job, trigger, slot, started_at, finished_at, status, summary, error,"
    " duration_ms, details, metrics, final, pid, pid_started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, attempt) DO UPDATE SET finished_at=excluded.finished_at, status=excluded.status,"
    " summary=excluded.summary, error=excluded.error, duration_ms=excluded.duration_ms,"
    " details=excluded.details, metrics=excluded.metrics, final=excluded.final"
)


def _json_column(value: dict[str, Any]) -> str:
    return json.dumps(value, default=str) if value else "{}"  # most runs have neither details nor metrics


def _upsert_params(record: RunRecord, pid: int, pid_started: float | None) -> tuple:
    return (
        record.run_id,
        record.attempt,
        record.job,
        record.trigger.value,
        record.slot.isoformat() if record.slot else None,
        record.started_at,
        record.finished_at,
        record.status.value,
        record.summary,
        record.error,
        record.duration_ms,
        _json_column(record.details),
        _json_column(record.metrics),
        int(record.final),
        pid,
        pid_started,
    )


def is_damage(exc: BaseException) -> bool:
    """Does this SQLite error say the file is damaged (not a database, malformed), not merely busy?"""
    # SQLITE_CORRUPT and SQLITE_NOTADB are raised as DatabaseError; busy, locked, full and I/O
    # errors as its subclass OperationalError: those are the disk's or another process's, not the file's.
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def check_history(history: RunHistory) -> None:
    """Raise ``sqlite3.DatabaseError`` when the file is damaged (``PRAGMA quick_check`` and a read of every index)."""
    problems = [row[0] for row in history._execute("PRAGMA quick_check(3)").fetchall()]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(problems)[:200])
    history.last_runs()


def open_history(path: Path) -> tuple[RunHistory, Path | None, str | None]:
    """Open the daemon's history; a damaged file is moved aside and a fresh one started.

    Returns the history, where the damaged file went (``history.db.corrupt-<ts>``,
    with its ``-wal``/``-shm``) and why, or ``(history, None, None)`` when it was sound.
    The runs to come matter more than the old rows, and the old file is kept.
    """
    history: RunHistory | None = None
    try:
        history = RunHistory(path)
        check_history(history)
        return history, None, None
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        reason = str(exc)
        if history is not None:
            history.close()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    moved = Path(f"{path}.corrupt-{stamp}")
    for suffix in ("-wal", "-shm", ""):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{moved}{suffix}"))
    return RunHistory(path), moved, reason
