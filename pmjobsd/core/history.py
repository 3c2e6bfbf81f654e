"""Run history: every attempt of every run, in SQLite (WAL) in the state folder.

A row is written when an attempt starts (status RUNNING, with the writer's
pid) and updated when it ends, so a run in flight when the process died is
never lost: the next daemon start — or any reader — sees a RUNNING row whose
pid is gone and reports it as INTERRUPTED.  A start the daemon's writer had
not committed yet is in the start journal (``core/start_journal.py``); every
opening of the history adds those rows first.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pmjobsd.core import start_journal
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
    member       TEXT,
    token        INTEGER,
    PRIMARY KEY (run_id, attempt)
);
CREATE INDEX IF NOT EXISTS runs_job_started ON runs (job, started_at);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_job_final ON runs (job, final, status, started_at);
"""


PURGE_BATCH = 100  # rows purge() deletes in its first transaction; later ones are sized to PURGE_HOLD
PURGE_HOLD = 0.002  # seconds a purge transaction aims to hold the write lock
# Seconds between two batches.  SQLite's busy handler retries a waiting writer 1, 3, 8, 18, 33 ms
# after it found the lock taken: a pause longer than a hold plus 3 ms lets every writer that came
# during a hold in at its first or second retry.  Shorter ones let the holds fall on its later,
# longer sleeps, and a run's start then waits hundreds of milliseconds (bench_scale measured it).
PURGE_PAUSE = 0.005
PURGE_MAX_BATCH = 5000
PURGE_CHECKPOINT_ROWS = 400  # rows purge() deletes between two checkpoints of its own (about as many pages)


def _sql_list(words: Iterable[Status | Trigger]) -> str:
    """A SQL list of the words' values, ``('FAIL', 'TIMEOUT')`` (the enums' own constants, never input)."""
    return "(" + ", ".join(f"'{word.value}'" for word in words) + ")"


_FINISHED = f"status != '{Status.RUNNING.value}'"
_FAILED = _sql_list(status for status in Status if status.failed)
_SUCCEEDED = _sql_list(status for status in Status if status.succeeded)
_SLOT_TRIGGERS = _sql_list(trigger for trigger in Trigger if trigger.for_slot)
# last_slots() seeks each job's newest slot here instead of reading every row.  By the slot's
# moment, not its text: an ISO time with an offset does not sort as text across a DST change.
_SLOT_ROWS = f"slot IS NOT NULL AND trigger IN {_SLOT_TRIGGERS}"
SLOT_INDEX = f"CREATE INDEX IF NOT EXISTS runs_job_slot ON runs (job, julianday(slot)) WHERE {_SLOT_ROWS}"


def _newest_final_success(job: str) -> str:
    """SQL: started_at of ``job``'s newest final success; one index seek per succeeded status."""
    parts = " UNION ALL ".join(
        f"SELECT MAX(started_at) AS m FROM runs WHERE job = {job} AND final = 1 AND status = '{status.value}'"
        for status in Status
        if status.succeeded
    )
    return f"(SELECT MAX(m) FROM ({parts}))"


def _newest_success(job: str) -> str:
    """SQL: (started_at, attempt, finished_at) of ``job``'s newest success, final or not (index seeks only)."""
    newest = " UNION ALL ".join(
        f"SELECT MAX(started_at) AS m FROM runs WHERE job = {job} AND final = {final} AND status = '{status.value}'"
        for status in Status
        if status.succeeded
        for final in (0, 1)
    )
    return (
        f"(SELECT started_at, attempt, finished_at FROM runs WHERE job = {job} AND status IN {_SUCCEEDED}"
        f" AND started_at = (SELECT MAX(m) FROM ({newest})) ORDER BY attempt DESC LIMIT 1)"
    )


def _streak_after(job: str, boundary: str) -> str:
    """SQL: how many final failures of ``job`` started after ``boundary`` (NULL: ever)."""
    return (
        f"(SELECT COUNT(*) FROM runs WHERE job = {job} AND final = 1 AND status IN {_FAILED}"
        f" AND started_at > COALESCE({boundary}, -1))"
    )


_RELEVANT = "{row}.status IN " + _SUCCEEDED + " OR ({row}.final = 1 AND {row}.status IN " + _FAILED + ")"


def _relevant(row: str) -> str:
    """SQL: can ``row`` (old/new) change its job's summary (a success, or a final failure)?"""
    return f"({_RELEVANT.format(row=row)})"


def _apply(row: str) -> str:
    """One trigger statement that adds ``row`` (new) to its job's summary (an upsert: one key lookup)."""
    success = f"{row}.status IN {_SUCCEEDED}"
    final_success = f"{row}.final = 1 AND {success}"
    final_failure = f"{row}.final = 1 AND {row}.status IN {_FAILED}"
    newer_success = (
        f"{success} AND (success_started IS NULL OR {row}.started_at > success_started"
        f" OR ({row}.started_at = success_started AND {row}.attempt >= success_attempt))"
    )
    newer_final_success = f"{final_success} AND {row}.started_at > COALESCE(final_success_started, -1)"
    counts = f"{final_failure} AND {row}.started_at > COALESCE(final_success_started, -1)"
    streak_after = _streak_after(f"{row}.job", f"{row}.started_at")
    return f"""
    INSERT INTO job_summary (job, success_started, success_attempt, success_finished, final_success_started, streak)
    VALUES ({row}.job, CASE WHEN {success} THEN {row}.started_at END, CASE WHEN {success} THEN {row}.attempt END,
            CASE WHEN {success} THEN {row}.finished_at END, CASE WHEN {final_success} THEN {row}.started_at END,
            CASE WHEN {final_success} THEN {streak_after} WHEN {final_failure} THEN 1 ELSE 0 END)
    ON CONFLICT (job) DO UPDATE SET
      success_started = CASE WHEN {newer_success} THEN {row}.started_at ELSE success_started END,
      success_attempt = CASE WHEN {newer_success} THEN {row}.attempt ELSE success_attempt END,
      success_finished = CASE WHEN {newer_success} THEN {row}.finished_at ELSE success_finished END,
      final_success_started = CASE WHEN {newer_final_success} THEN {row}.started_at ELSE final_success_started END,
      streak = CASE WHEN {newer_final_success} THEN {streak_after} WHEN {counts} THEN streak + 1 ELSE streak END;"""


def _unapply_failure(row: str) -> str:
    """Trigger statement that takes a final failure ``row`` (old) out of its job's streak."""
    return f"""
    UPDATE job_summary SET streak = streak - 1 WHERE job = {row}.job AND {row}.final = 1
      AND {row}.status IN {_FAILED} AND {row}.started_at > COALESCE(final_success_started, -1);"""


def _unapply_success(row: str) -> str:
    """Trigger statements that replace a success ``row`` (old) where the summary points at it."""
    return f"""
    UPDATE job_summary SET (success_started, success_attempt, success_finished) = {_newest_success(f"{row}.job")}
      WHERE job = {row}.job AND {row}.started_at = success_started AND {row}.attempt = success_attempt;
    UPDATE job_summary SET final_success_started = {_newest_final_success(f"{row}.job")}
      WHERE job = {row}.job AND {row}.final = 1 AND {row}.status IN {_SUCCEEDED}
        AND {row}.started_at = final_success_started;
    UPDATE job_summary SET streak = {_streak_after(f"{row}.job", "final_success_started")}
      WHERE job = {row}.job AND {row}.final = 1 AND {row}.status IN {_SUCCEEDED}
        AND COALESCE(final_success_started, -1) < {row}.started_at;"""


def _points_at(row: str) -> str:
    """SQL: is the success ``row`` (old) the one its job's summary names?"""
    return (
        f"{row}.status IN {_SUCCEEDED} AND EXISTS (SELECT 1 FROM job_summary WHERE job = {row}.job"
        f" AND (success_started = {row}.started_at OR final_success_started = {row}.started_at))"
    )


# The per-job summary a status or a scrape reads instead of the whole history: kept by triggers
# in the same transaction as each attempt's row (so it is right after kill -9, and whoever writes
# runs, the daemon's writer or a `run-now` without daemon, keeps it).  Only a success or a final
# failure fires one (a RUNNING row does not): one upsert on a small table per finished attempt.
# ``success_*``: the newest attempt that succeeded (OK/WARN, final or not: last_success_at);
# ``final_success_started``: the newest *final* success, where the failure streak starts;
# ``streak``: final FAIL/TIMEOUT attempts started after it (consecutive_failures).  A job with
# no row has neither.  The triggers' WHEN clauses exclude each other, so their order is moot.
# A REPLACE fires the delete triggers only with recursive_triggers on (RunHistory sets it).
SUMMARY_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS job_summary (
    job                    TEXT PRIMARY KEY,
    success_started        REAL,
    success_attempt        INTEGER,
    success_finished       REAL,
    final_success_started  REAL,
    streak                 INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID""",
    # mark_interrupted() looks for RUNNING rows: a partial index holds only those.
    f"CREATE INDEX IF NOT EXISTS runs_running ON runs (status) WHERE status = '{Status.RUNNING.value}'",
    f"CREATE TRIGGER IF NOT EXISTS runs_summary_insert AFTER INSERT ON runs WHEN {_relevant('new')}"
    f" BEGIN {_apply('new')}\nEND",
    f"CREATE TRIGGER IF NOT EXISTS runs_summary_update AFTER UPDATE ON runs"
    f" WHEN NOT {_relevant('old')} AND {_relevant('new')} BEGIN {_apply('new')}\nEND",
    f"CREATE TRIGGER IF NOT EXISTS runs_summary_reupdate AFTER UPDATE ON runs WHEN {_relevant('old')}"
    f" BEGIN {_unapply_failure('old')} {_unapply_success('old')} {_apply('new')}\nEND",
    f"CREATE TRIGGER IF NOT EXISTS runs_summary_delete_failure AFTER DELETE ON runs"
    f" WHEN old.final = 1 AND old.status IN {_FAILED} BEGIN {_unapply_failure('old')}\nEND",
    f"CREATE TRIGGER IF NOT EXISTS runs_summary_delete AFTER DELETE ON runs WHEN {_points_at('old')}"
    f" BEGIN {_unapply_success('old')}\nEND",
)
_SUMMARY_READY = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'runs_summary_delete'"

# Fills job_summary from the rows already there (a history written before it existed), once.
SUMMARY_FILL = f"""INSERT OR REPLACE INTO job_summary (job, success_started, success_attempt, success_finished, final_success_started, streak)
SELECT j.job, s.started_at, s.attempt, s.finished_at, j.final_success_started,
       {_streak_after("j.job", "j.final_success_started")}
FROM (SELECT job, {_newest_final_success("d.job")} AS final_success_started FROM (SELECT DISTINCT job FROM runs) d) j
LEFT JOIN runs s ON s.rowid = (SELECT rowid FROM runs r WHERE r.job = j.job AND r.status IN {_SUCCEEDED}
                               ORDER BY r.started_at DESC, r.attempt DESC LIMIT 1)"""


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
        _own_start = (os.getpid(), _proc_start_time() or process_start_time(os.getpid()))
    return _own_start[1]


def _proc_start_time() -> float | None:
    """This process's start time from Linux's /proc, as psutil computes it (boot time + start in clock ticks).

    Every start of a run names its writer's start time: importing psutil for it (2 MB, ~30 ms
    cold) made the first run late, or the idle daemon bigger when done ahead.  None elsewhere.
    """
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
        with open("/proc/stat", "rb") as handle:
            boot = next(line for line in handle if line.startswith(b"btime "))
        return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, StopIteration, IndexError, ValueError):
        return None


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


_NEWEST_COLUMNS = ", ".join(
    f"r.{column}"
    for column in (
        "job run_id attempt trigger started_at finished_at status summary duration_ms final pid pid_started member token"
    ).split()
)


@dataclass(frozen=True)
class JobSummary:
    """What the status needs of a job's whole history, kept by the summary table's triggers."""

    last_success_at: float | None  # end of the newest attempt that succeeded
    consecutive_failures: int


class RunHistory:
    """Thread-safe access to the run history database at ``path``.

    Use as a context manager or call :meth:`close`.  Readers that find the
    file missing get an empty history (``create=False``), as does ``empty=True``
    (a damaged file being reported, not read).  ``busy_timeout`` bounds each
    wait for another writer (the history writer keeps it short and retries).
    """

    def __init__(
        self,
        path: Path,
        *,
        create: bool = True,
        busy_timeout: float = 10.0,
        empty: bool = False,
        on_long_step: Callable[[], None] | None = None,
    ):
        self.path = Path(path)
        self._lock = threading.RLock()
        # Called when a migration step that reads every row starts, and about every second while
        # it runs (the daemon extends systemd's start timeout with it).
        self._on_long_step = on_long_step
        # (key, rows, the assembled answer when no row is RUNNING): see newest()
        self._newest_cache: tuple[tuple[Any, ...], list[dict[str, Any]], dict[str, list[dict[str, Any]]] | None] | None
        self._newest_cache = None
        if create and not empty:
            ensure_private_dir(self.path.parent)
            # Created 0600 here, and refused when it is a link or not ours: SQLite follows links.
            if not self.path.exists():
                os.close(open_private(self.path, os.O_WRONLY | os.O_CREAT))
        elif empty or not self.path.exists():
            self._conn = sqlite3.connect(":memory:", check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._migrate()
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
        # never started, while the database stays sound (the start journal is no safer against
        # a power loss either). FULL would put an fsync in every group commit.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._migrate()
        try:
            self.apply_start_journal()
        except sqlite3.Error:
            pass  # a reader that cannot write now still reads; the daemon's writer adds them
        for suffix in ("-wal", "-shm"):
            sidecar = Path(f"{self.path}{suffix}")
            if sidecar.exists() and sidecar.stat().st_uid == os.getuid():
                sidecar.chmod(PRIVATE_FILE_MODE)

    def _migrate(self) -> None:
        """The schema, then each of :data:`MIGRATIONS` in turn (each finds out itself whether it is done).

        Every step costs a lookup of the schema when it is done: opening stays O(1) whatever the
        history holds.  A step that must rewrite rows (an index over them) runs once, on the
        first open after an upgrade.
        """
        # The summary's triggers see a REPLACE as the delete it is only with recursive triggers on.
        self._conn.execute("PRAGMA recursive_triggers = ON")
        # A statement that fires a trigger keeps a statement journal: in memory, not a temporary file.
        self._conn.execute("PRAGMA temp_store = MEMORY")
        self._conn.executescript(SCHEMA)
        for step in MIGRATIONS:
            step(self)

    def _add_columns(self) -> None:
        """The columns a history written by an older pmjobsd lacks (the schema lists them all)."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        for column, kind in _ADDED_COLUMNS:
            if column not in columns:
                self._conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    def _add_slot_index(self) -> None:
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'runs_job_slot'"
        if self._conn.execute(exists).fetchone():
            return
        with self._long_step():
            self._conn.execute(SLOT_INDEX)  # once, on the first open after the upgrade: reads every row

    @contextlib.contextmanager
    def _long_step(self) -> Iterator[None]:
        """Around a statement that reads every row: ``on_long_step`` now and about every second."""
        report = self._on_long_step
        if report is None:
            yield
            return
        report()
        last = [time.monotonic()]

        def progress() -> int:
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                report()
            return 0  # go on

        self._conn.set_progress_handler(progress, 100_000)
        try:
            yield
        finally:
            self._conn.set_progress_handler(None, 0)

    def _add_summary(self) -> None:
        """The job_summary table and its triggers; filled from the rows already there when it is new."""
        if self._conn.execute(_SUMMARY_READY).fetchone():
            return
        in_transaction = self._conn.in_transaction
        if not in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")  # one process adds it; another one waits and finds it
        try:
            if not self._conn.execute(_SUMMARY_READY).fetchone():
                for statement in SUMMARY_SCHEMA:
                    self._conn.execute(statement)
                self._conn.execute(SUMMARY_FILL)
        except BaseException:
            if not in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        if not in_transaction:
            self._conn.execute("COMMIT")

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
        """Write ``record``'s row as it starts: RUNNING, with this process's pid (whatever ``record`` says)."""
        self._execute(_UPSERT, _upsert_params(record, os.getpid(), _own_start_time(), starting=True))

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
        that came in while the last transaction was written share one commit.  The rows
        go in as multi-row statements (``_UPSERT_ROWS`` to each), not one statement per
        row: each statement lets go of the GIL and takes it back, and a writer that
        takes the GIL back once per row competes with the workers that many times.
        """
        pid, pid_started = os.getpid(), _own_start_time()
        params = [_upsert_params(record, pid, pid_started) for record in records]
        if not params:
            return
        chunks = [params[index : index + _UPSERT_ROWS] for index in range(0, len(params), _UPSERT_ROWS)]
        with self._lock:
            conn = self._conn
            if len(chunks) == 1 and conn.isolation_level is None:
                # One statement in autocommit mode: its own transaction, the write lock taken at its start.
                conn.execute(_upsert_sql(len(params)), [value for row in params for value in row])
                return
            # IMMEDIATE: take the write lock now (busy_timeout waits for another writer here),
            # not halfway through the batch.
            conn.execute("BEGIN IMMEDIATE")
            try:
                for chunk in chunks:
                    conn.execute(_upsert_sql(len(chunk)), [value for row in chunk for value in row])
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

    def apply_start_journal(self) -> int:
        """Add the start journal's runs that have no row yet (RUNNING, with their writer's pid); how many.

        ``INSERT OR IGNORE``: a row the writer committed (a start or its end) is never replaced.
        """
        rows = start_journal.read_rows(self.path)
        if not rows:
            return 0
        with self._lock:
            before = self._conn.total_changes
            self._conn.executemany(_INSERT_STARTED, rows)
            return self._conn.total_changes - before

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

    def purge(
        self,
        older_than: float,
        *,
        batch: int = PURGE_BATCH,
        pause: float = PURGE_PAUSE,
        hold: float = PURGE_HOLD,
        stop: Callable[[], bool] | None = None,
    ) -> int:
        """Delete finished runs that started before ``older_than`` (epoch seconds); return how many.

        Oldest first, in transactions sized to hold the write lock about ``hold`` seconds (the
        first one ``batch`` rows) with ``pause`` seconds between them, so the writer of new
        attempts waits at most one batch (benchmarks/bench_scale.py measures it).  ``stop()`` is
        asked before each batch: when it says so the purge ends there, every batch so far
        committed, and a later purge goes on from where this one stopped (see :meth:`purgeable`).
        """
        total, size, per_row, unchecked = 0, max(1, batch), None, 0
        with self._lock:
            # The indexes by job and status are not in time order (nor are the random run ids of
            # histories written before the time-ordered ones): rows deleted dirty pages all over,
            # and the WAL fills fast.  The checkpoints are this thread's, every
            # PURGE_CHECKPOINT_ROWS rows (PASSIVE: never waiting for a writer), which keeps the WAL
            # under the 1000 pages at which the automatic one would run inside whichever commit
            # crosses them, often the history writer's.
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            while stop is None or not stop():
                began = time.perf_counter()
                with self._lock:
                    cursor = self._conn.execute(
                        "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs"
                        f" WHERE started_at < ? AND {_FINISHED} ORDER BY started_at LIMIT ?)",
                        (older_than, size),
                    )
                elapsed = time.perf_counter() - began
                removed = max(cursor.rowcount, 0)
                total += removed
                unchecked += removed
                if unchecked >= PURGE_CHECKPOINT_ROWS or (removed < size and unchecked):
                    with self._lock:
                        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    unchecked = 0
                if removed < size:
                    return total
                cost = elapsed / removed
                # A smoothed cost per row, an outlier (the disk busy) counted at 2x at most.
                per_row = cost if per_row is None else 0.7 * per_row + 0.3 * min(cost, 2 * per_row)
                size = max(10, min(PURGE_MAX_BATCH, 2 * size, int(hold / per_row)))
                if pause:
                    time.sleep(pause)
            return total
        finally:
            with self._lock:
                self._conn.execute("PRAGMA wal_autocheckpoint = 1000")

    def purgeable(self, older_than: float) -> bool:
        """Are there finished runs that started before ``older_than`` (what :meth:`purge` would delete)?"""
        row = self._execute(f"SELECT 1 FROM runs WHERE started_at < ? AND {_FINISHED} LIMIT 1", (older_than,))
        return row.fetchone() is not None

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
        rows = self._execute("SELECT job, success_finished FROM job_summary WHERE success_finished IS NOT NULL")
        return {row["job"]: row["success_finished"] for row in rows.fetchall()}

    def summaries(self, jobs: Iterable[str]) -> dict[str, JobSummary]:
        """Each named job's last success and failure streak, from the summary table (one row per job)."""
        names = list(jobs)
        if not names:
            return {}
        rows = self._execute(
            f"SELECT job, success_finished, streak FROM job_summary WHERE job IN ({', '.join('?' * len(names))})",
            tuple(names),
        ).fetchall()
        return {row["job"]: JobSummary(row["success_finished"], int(row["streak"])) for row in rows}

    def version(self) -> tuple[int, int]:
        """Changes whenever the database does: a commit of another connection or process
        (``PRAGMA data_version``) or of this one (``total_changes``).  Two equal versions, no change."""
        with self._lock:
            return self._conn.execute("PRAGMA data_version").fetchone()[0], self._conn.total_changes

    def newest(self, jobs: Iterable[str], limit: int) -> dict[str, list[dict[str, Any]]]:
        """The ``limit`` newest attempts of each named job, newest first, without details and metrics.

        One index walk of ``limit`` rows per job: the cost does not grow with the history.  The
        rows are kept until the database changes (``PRAGMA data_version``, and this connection's
        own changes), so scrapes between two attempts do not read it again; treat them as
        read-only.  A RUNNING row whose writer is gone is shown INTERRUPTED at every call.
        """
        names = tuple(jobs)
        if not names:
            return {}
        with self._lock:
            version = (self._conn.execute("PRAGMA data_version").fetchone()[0], self._conn.total_changes)
            cached = self._newest_cache
            if cached is not None and cached[0] == (version, names, limit):
                rows, assembled = cached[1], cached[2]
                if assembled is not None:
                    return assembled  # nothing RUNNING in it: nothing to look at again
            else:
                values = ", ".join("(?)" for _ in names)
                fetched = self._conn.execute(
                    f"WITH names(name) AS (VALUES {values}) SELECT {_NEWEST_COLUMNS} FROM names JOIN runs r"
                    " ON r.rowid IN (SELECT rowid FROM runs WHERE job = names.name"
                    " ORDER BY started_at DESC, attempt DESC LIMIT ?)",
                    (*names, limit),
                ).fetchall()
                rows = [dict(row, final=bool(row["final"])) for row in fetched]
                rows.sort(key=lambda data: (data["started_at"], data["attempt"]), reverse=True)
        newest: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        running = False
        for data in rows:
            if data["status"] == Status.RUNNING.value:
                running = True
                if not _writer_alive(data["pid"], data["pid_started"]):
                    data = dict(data, status=Status.INTERRUPTED.value)
            newest[data["job"]].append(data)
        with self._lock:
            self._newest_cache = ((version, names, limit), rows, None if running else newest)
        return newest

    def last_slots(self, jobs: Iterable[str]) -> dict[str, datetime]:
        """The newest scheduled slot each named job ran for (catch-up compares against it).

        One seek per job along ``runs_job_slot``: the cost does not grow with the history.
        """
        slots: dict[str, datetime] = {}
        with self._lock:
            for job in jobs:
                # A few by julianday (a double), the newest of them by the exact moment.
                rows = self._conn.execute(
                    f"SELECT slot FROM runs INDEXED BY runs_job_slot WHERE job = ? AND {_SLOT_ROWS}"
                    " ORDER BY julianday(slot) DESC LIMIT 3",
                    (job,),
                ).fetchall()
                if rows:
                    slots[job] = max(datetime.fromisoformat(row[0]) for row in rows)
        return slots

    def consecutive_failures(self, job: str) -> int:
        """Final outcomes of ``job`` that failed (FAIL, TIMEOUT), counted back from the newest success.

        INTERRUPTED runs (the daemon stopped) say nothing about the job: they neither
        count nor end the streak, like the alert rules treat them.  Read from the summary.
        """
        row = self._execute("SELECT streak FROM job_summary WHERE job = ?", (job,)).fetchone()
        return int(row[0]) if row else 0


# Columns added after pmjobsd 0.1.0, in the order they came: the pid's start time (pid reuse),
# and who ran a vault job's slot with which fencing token (jobs.coordination; NULL otherwise).
_ADDED_COLUMNS = (("pid_started", "REAL"), ("member", "TEXT"), ("token", "INTEGER"))

# The steps that bring a history written by an older pmjobsd up to date, run in this order at each
# open; a new one goes at the end and must be cheap to find done (see RunHistory._migrate).
MIGRATIONS: tuple[Callable[[RunHistory], None], ...] = (
    RunHistory._add_columns,
    RunHistory._add_summary,
    RunHistory._add_slot_index,
)


_COLUMNS = (
    "run_id, attempt, job, trigger, slot, started_at, finished_at, status, summary, error,"
    " duration_ms, details, metrics, final, pid, pid_started, member, token"
)
_ROW = "(" + ", ".join("?" * len(_COLUMNS.split(","))) + ")"
_UPSERT_HEAD = f"INSERT INTO runs ({_COLUMNS})"
_UPSERT_TAIL = (
    " ON CONFLICT (run_id, attempt) DO UPDATE SET finished_at=excluded.finished_at, status=excluded.status,"
    " summary=excluded.summary, error=excluded.error, duration_ms=excluded.duration_ms,"
    " details=excluded.details, metrics=excluded.metrics, final=excluded.final"
)
_UPSERT = f"{_UPSERT_HEAD} VALUES {_ROW}{_UPSERT_TAIL}"
# A start journal entry as a start row (status RUNNING), unless the attempt has a row already.
_INSERT_STARTED = (
    f"INSERT OR IGNORE INTO runs ({', '.join(start_journal.FIELDS)}, status)"
    f" VALUES ({', '.join('?' * len(start_journal.FIELDS))}, '{Status.RUNNING.value}')"
)

# Rows per multi-row upsert: their parameters stay under the 999 of SQLite before 3.32.
_UPSERT_ROWS = 999 // len(_COLUMNS.split(","))
_UPSERT_BY_ROWS: dict[int, str] = {}


def _upsert_sql(rows: int) -> str:
    """:data:`_UPSERT` for ``rows`` rows in one statement (made once per count)."""
    sql = _UPSERT_BY_ROWS.get(rows)
    if sql is None:
        values = ", ".join([_ROW] * rows)
        sql = _UPSERT_BY_ROWS[rows] = f"{_UPSERT_HEAD} VALUES {values}{_UPSERT_TAIL}"
    return sql


def _json_column(value: dict[str, Any]) -> str:
    return json.dumps(value, default=str) if value else "{}"  # most runs have neither details nor metrics


_RUNNING = Status.RUNNING.value


def _upsert_params(record: RunRecord, pid: int, pid_started: float | None, *, starting: bool = False) -> tuple:
    """The row of :data:`_UPSERT` for ``record``; ``starting``: its start (RUNNING, nothing of an end yet)."""
    slot = record.slot.isoformat() if record.slot else None
    if starting:
        return (record.run_id, record.attempt, record.job, record.trigger.value, slot, record.started_at,
                None, _RUNNING, "", None, None, "{}", "{}", 1, pid, pid_started, record.member, record.token)  # fmt: skip
    finished_at = record.finished_at
    return (
        record.run_id,
        record.attempt,
        record.job,
        record.trigger.value,
        slot,
        record.started_at,
        finished_at,
        record.status.value,
        record.summary,
        record.error,
        None if finished_at is None else int(round((finished_at - record.started_at) * 1000)),  # duration_ms
        _json_column(record.details),
        _json_column(record.metrics),
        int(record.final),
        pid,
        pid_started,
        record.member,
        record.token,
    )


def is_damage(exc: BaseException) -> bool:
    """Does this SQLite error say the file is damaged (not a database, malformed), not merely busy?"""
    # SQLITE_CORRUPT and SQLITE_NOTADB are raised as DatabaseError; busy, locked, full and I/O
    # errors as its subclass OperationalError: those are the disk's or another process's, not the file's.
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def check_file(path: Path) -> None:
    """Raise ``sqlite3.DatabaseError`` when ``path`` is not an SQLite file or shorter than its header says.

    O(1), reading the header.  Call it *before* opening a connection to ``path`` in this process:
    closing any descriptor of the file drops every POSIX lock the process holds on it, SQLite's
    too, and another process then believes it is the last one and resets the WAL under ours.
    """
    _check_header(path)


def check_history(history: RunHistory) -> None:
    """Raise ``sqlite3.DatabaseError`` when the open ``history`` is damaged; O(1), not O(history).

    After :func:`check_file` (the header and the length: a truncated copy, garbage): the schema
    and the summary table pass ``quick_check`` and the summary is read.  Damage deeper in the
    runs is found when those rows are read or written (an error of the history writer, of a
    purge); a full ``quick_check`` of a year of runs would take tens of seconds at every
    daemon start and every ``status``.
    """
    for table in ("sqlite_master", "job_summary"):
        problems = [row[0] for row in history._execute(f"PRAGMA quick_check({table})").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems)[:200])
    history.summaries(["-"])


def _check_header(path: Path) -> None:
    """Raise ``sqlite3.DatabaseError`` when ``path`` lacks SQLite's header or is shorter than its header says."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        return
    if not header:
        return  # empty: SQLite makes it a database
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise sqlite3.DatabaseError("file is not a database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is valid when its "version-valid-for" matches the change counter.
    if header[92:96] == header[24:28] and size < pages * page_size:
        raise sqlite3.DatabaseError(
            f"database disk image is malformed (truncated: {size} of {pages * page_size} bytes)"
        )


def open_history(
    path: Path, on_long_step: Callable[[], None] | None = None
) -> tuple[RunHistory, Path | None, str | None]:
    """Open the daemon's history; a damaged file is moved aside and a fresh one started.

    Returns the history, where the damaged file went (``history.db.corrupt-<ts>``,
    with its ``-wal``/``-shm``) and why, or ``(history, None, None)`` when it was sound.
    The runs to come matter more than the old rows, and the old file is kept.
    """
    history: RunHistory | None = None
    try:
        check_file(path)  # before any connection of ours to it (see check_file)
        history = RunHistory(path, on_long_step=on_long_step)
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
