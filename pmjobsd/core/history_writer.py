"""The history writer: one thread writes every run record, so nobody else waits on SQLite.

The runner submits a record when an attempt starts and again when it ends
(:meth:`HistoryWriter.record_start`, :meth:`record_finish`, :meth:`mark_final`);
none of them raises or waits on the database.  A start is first written into
the start journal (``core/start_journal.py``: one ``pwrite``), so that a run
that started is in the history after ``kill -9`` before its row is committed;
its journal slot is freed once the row is.  Only when the journal cannot take
it (every slot waiting for a commit, the file not ours) does ``record_start``
wait, at most ``durable_wait`` seconds, for the row itself.
A record that cannot be written
(disk full, the file locked by another process) stays in memory, newest
version per attempt, and is written when the database takes writes again.
The backlog is bounded (``max_backlog`` attempts; beyond it the oldest is
dropped and counted), and :meth:`health` says how it stands.

Group commit: each round the thread takes every record waiting (up to
``max_batch``) and writes them in one transaction, then frees their journal
slots (and wakes a start that waits for its row).  Nobody waits for a
journaled start or an end, so the first record of a round lingers up to
``linger`` seconds for company: the starts and ends of a burst share one
commit.  A crash in that window shows an ended attempt INTERRUPTED, as a crash
during the attempt would.

Checkpoints (copying the WAL into the database file, with an fsync of each)
are a second thread's work, on its own connection, a moment after writes
came in: SQLite would otherwise run one inside every ~1,000th commit, and
the starts in that commit would wait for the fsyncs.  A checkpoint never
blocks a commit; should the WAL still grow past ``CHECKPOINT_PAGES`` (writes
never pausing long enough for a checkpoint to catch up), the writer's own
commit checkpoints, as SQLite does by default.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pmjobsd.core.history import RunHistory, _own_start_time
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.start_journal import StartJournal

if TYPE_CHECKING:  # the writer's logger; status reads HistoryHealth without a jobs.log formatter
    from pmjobsd.observe.joblog import EventLogger

_Key = tuple[str, int]  # (run_id, attempt)

CHECKPOINT_PAGES = 4000  # the writer's own checkpoint once the WAL holds this many pages (16 MB at 4 KiB)
CHECKPOINT_DELAY = 0.5  # seconds from a commit to the background checkpoint (commits within it share it)


def _snapshot(record: RunRecord) -> RunRecord:
    """A copy of ``record`` as it is now (the runner goes on changing its own).

    A plain copy of the fields: ``dataclasses.replace`` would validate them all
    again, a cost on every start and end of a run.
    """
    copy = object.__new__(RunRecord)
    copy.__dict__.update(record.__dict__)
    return copy


@dataclass(frozen=True)
class HistoryHealth:
    """Whether runs are being recorded, as status, ``/healthz`` and the metrics show it.

    ``failing_since`` is set while writes fail (the backlog waits in memory);
    ``dropped`` counts attempts lost because the backlog was full; ``moved_aside``
    names a damaged history file the daemon replaced at start.
    """

    writable: bool = True
    backlog: int = 0
    dropped: int = 0
    failing_since: float | None = None
    error: str | None = None
    moved_aside: str | None = None
    damage: str | None = None

    @property
    def recording(self) -> bool:
        """False while runs are not reaching the history (FAIL)."""
        return self.writable and not self.dropped


class HistoryWriter:
    """Writes run records to the history at ``path`` on its own thread (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        log: EventLogger | None = None,
        reader: RunHistory | None = None,
        on_change: Callable[[HistoryHealth], None] | None = None,
        max_backlog: int = 10_000,
        max_batch: int = 1000,
        linger: float = 0.005,
        durable_wait: float = 1.0,
        busy_timeout: float = 1.0,
        retry_initial: float = 0.25,
        retry_max: float = 5.0,
        mark_interrupted: bool = False,
        journal: bool = True,
    ):
        self.path = Path(path)
        if log is None:
            from pmjobsd.observe.joblog import EventLogger

            log = EventLogger("history")
        self.log = log
        self.reader = reader
        self.on_change = on_change
        self.max_backlog = max_backlog
        self.max_batch = max_batch
        self.linger = linger
        self.durable_wait = durable_wait
        self.busy_timeout = busy_timeout
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self._mark_interrupted = mark_interrupted
        lock = threading.RLock()
        self._cond = threading.Condition(lock)  # the writer thread waits on it for work
        self._drained = threading.Condition(lock)  # flush() waits on it: the backlog is written
        self._pending: OrderedDict[_Key, RunRecord] = OrderedDict()
        self._written: dict[_Key, threading.Event] = {}  # starts someone waits for, until their row is committed
        self._thread_events = threading.local()
        self._closing = False
        self._urgent = False  # someone waits for a write: no lingering
        self._dropped = 0
        self._failing_since: float | None = None
        self._error: str | None = None
        self.moved_aside: str | None = None
        self.damage: str | None = None
        self._conn: RunHistory | None = None
        self._journal = self._open_journal() if journal else None
        self._journaled: dict[_Key, int] = {}  # starts in the journal whose row is not committed -> slot
        # The checkpointer's own condition: the writer's is notified at every submission and commit.
        self._checkpoint_due = threading.Condition()
        self._dirty = False  # committed since the last checkpoint
        self._checkpointer: threading.Thread | None = None  # started with the connection
        self._thread = threading.Thread(target=self._run, name="pmjobsd-history", daemon=True)
        self._thread.start()

    def _open_journal(self) -> StartJournal | None:
        """The start journal, or None (every start then waits for its row): another process owns it, or no file."""
        try:
            journal = StartJournal(self.path)
        except OSError as exc:
            self.log.warning("history.journal_unavailable", path=str(self.path.parent), error=str(exc))
            return None
        return journal

    # --- submitting (any thread; never raises, never blocks on SQLite) ------------------
    def record_start(self, record: RunRecord) -> None:
        """Submit a starting attempt; when this returns it is on disk (call from a worker).

        On disk in the start journal, or (the journal full or missing) as its committed row
        after a wait of up to ``durable_wait`` s: a run that starts afterwards is in the
        history even if the process is killed right then.
        """
        if self._journal is not None:
            slot = self._journal.write(record, os.getpid(), _own_start_time())  # the entry names its writer
            if slot is not None:
                self._submit(record, journal_slot=slot)
                return
        written = self._submit(record, wait=True)
        if written is not None and not written.wait(self.durable_wait):
            with self._cond:  # not written in time: this thread's event must not be set for it later
                key = (record.run_id, record.attempt)
                if self._written.get(key) is written:
                    del self._written[key]

    def record_finish(self, record: RunRecord) -> None:
        self._submit(record)

    def mark_final(self, record: RunRecord) -> None:
        """No retry follows ``record`` after all: its outcome is the run's."""
        self._submit(dataclasses.replace(record, final=True))

    def _submit(self, record: RunRecord, wait: bool = False, journal_slot: int | None = None) -> threading.Event | None:
        """Queue ``record``; with ``wait``, return the event set once its row is committed."""
        key = (record.run_id, record.attempt)
        snapshot = _snapshot(record)
        with self._cond:
            if journal_slot is not None:
                self._journaled[key] = journal_slot
            if key in self._pending:
                self._pending[key] = snapshot  # the newer version replaces the unwritten one in place
            else:
                if len(self._pending) >= self.max_backlog:
                    lost_key, lost = self._pending.popitem(last=False)
                    self._dropped += 1
                    dropped = self._written.pop(lost_key, None)
                    if dropped is not None:
                        dropped.set()
                    self.log.error("history.record_dropped", job=lost.job, run_id=lost.run_id, dropped=self._dropped)
                self._pending[key] = snapshot
            written = None
            if wait:
                # One event per thread, reused: a thread waits for one start at a time, and an
                # event costs more to make than the rest of the submission.
                written = self._thread_events.__dict__.get("event")
                if written is None:
                    written = self._thread_events.event = threading.Event()
                written.clear()
                self._written[key] = written
                self._urgent = True
            # Wake the writer for a start (someone waits), for the first record (it sleeps with
            # nothing to do; an end then lingers there), and between retries of a failing write
            # (a new record tries again at once).
            if wait or len(self._pending) == 1 or self._failing_since is not None:
                self._cond.notify()
        return written

    # --- reading what is not written yet ----------------------------------------------------
    def consecutive_failures(self, job: str) -> int:
        """The job's failure streak: the history's summary, with the records still waiting here on top.

        O(1) in the history: the summary row, and the rows of the job's waiting final records
        (one, usually: the attempt that just ended), read in one statement, so a record written
        between the two reads is seen as written and not counted twice.
        """
        with self._cond:
            waiting = sorted(
                (r for r in self._pending.values() if r.job == job and r.final),
                key=lambda r: (r.started_at, r.attempt),
            )
        streak, counted = 0, set()
        if self.reader is not None:
            keys = [(r.run_id, r.attempt) for r in waiting]
            rows = ", ".join("(?, ?)" for _ in keys)
            sql = "SELECT NULL, NULL, NULL, streak FROM job_summary WHERE job = ?"
            if keys:  # the waiting records already in the history as they are here (the summary has them)
                sql += (
                    " UNION ALL SELECT run_id, attempt, status, NULL FROM runs WHERE final = 1"
                    f" AND (run_id, attempt) IN (VALUES {rows})"
                )
            try:
                for run_id, attempt, status, summary_streak in self.reader._execute(
                    sql, (job, *(part for key in keys for part in key))
                ).fetchall():
                    if run_id is None:
                        streak = int(summary_streak)
                    else:
                        counted.add((run_id, attempt, status))
            except sqlite3.Error:
                pass
        for record in waiting:
            if (record.run_id, record.attempt, record.status.value) in counted:
                continue
            if record.status.succeeded:
                streak = 0
            elif record.status.failed:
                streak += 1
        return streak

    def unwritten(self) -> dict[str, RunRecord]:
        """The newest record of each job that is not in the database yet (status shows it meanwhile)."""
        newest: dict[str, RunRecord] = {}
        with self._cond:
            for record in self._pending.values():
                if record.job not in newest or record.started_at >= newest[record.job].started_at:
                    newest[record.job] = record
        return newest

    def health(self) -> HistoryHealth:
        with self._cond:
            return HistoryHealth(
                writable=self._failing_since is None,
                backlog=len(self._pending),
                dropped=self._dropped,
                failing_since=self._failing_since,
                error=self._error,
                moved_aside=self.moved_aside,
                damage=self.damage,
            )

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the backlog to be written; True when it was."""
        end = time.monotonic() + timeout
        with self._cond:
            self._urgent = True
            self._cond.notify()
            while self._pending:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(min(left, 0.1))
            return True

    def close(self, timeout: float = 5.0) -> int:
        """Write what is left (for up to ``timeout`` s), stop; return how many attempts stayed unwritten."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        with self._checkpoint_due:
            self._checkpoint_due.notify_all()
        self._thread.join(max(1.0, self.busy_timeout + 1.0))
        if self._checkpointer is not None:
            self._checkpointer.join(max(1.0, self.busy_timeout + 1.0))
        with self._cond:
            lost = len(self._pending)
        if lost:
            self.log.error("history.unwritten", count=lost, error=self._error)
        return lost

    # --- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        delay = self.retry_initial
        while True:
            with self._cond:
                while not self._closing and self._conn is not None and not self._urgent:
                    if not self._pending:
                        self._cond.wait()
                    else:  # only ends wait: give the next start a moment to share the commit
                        self._cond.wait(self.linger)
                        break
                if self._closing:
                    break
                self._urgent = False
                # Everything waiting now goes into one transaction (the group commit).
                batch = list(itertools.islice(self._pending.items(), self.max_batch))
            try:
                self._write(batch)
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                with self._cond:
                    if not self._closing:
                        self._cond.wait(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            self._committed(batch)
        if self._conn is not None:
            self._conn.close()
        if self._journal is not None:
            self._journal.close()

    def _committed(self, batch: list[tuple[_Key, RunRecord]]) -> None:
        """``batch`` is in the database: forget what was not replaced meanwhile, wake its starts."""
        if batch and not self._dirty:
            self._checkpoint_soon()
        slots = []
        with self._cond:
            for key, record in batch:
                if self._pending.get(key) is record:  # not replaced by a newer version meanwhile
                    del self._pending[key]
                # Its row is committed (in this version or an older one): a start waiting for it may go,
                # and its journal entry is no longer needed.
                waiting = self._written.pop(key, None)
                if waiting is not None:
                    waiting.set()
                slot = self._journaled.pop(key, None)
                if slot is not None:
                    slots.append(slot)
            backlog_left = len(self._pending)
            failed_since = None
            if not backlog_left:
                # Recovered in the same step as drained: health() never shows an empty backlog
                # that is still failing.
                failed_since, self._failing_since, self._error = self._failing_since, None, None
                self._drained.notify_all()
        if self._journal is not None and slots:
            self._journal.clear(slots)
        if failed_since is not None:
            self._recovered(failed_since)

    def _write(self, batch: list[tuple[_Key, RunRecord]]) -> None:
        if self._conn is None:
            conn = RunHistory(self.path, busy_timeout=self.busy_timeout)
            try:
                if self._journal is not None and self._journal.leftover:
                    conn.apply_start_journal()  # the previous owner's unwritten starts (also done at open)
                if self._mark_interrupted:
                    interrupted = conn.mark_interrupted()
                    if interrupted:
                        self.log.warning("history.interrupted_runs", count=interrupted)
            except BaseException:
                conn.close()
                raise
            self._mark_interrupted = False
            if self._journal is not None:
                self._journal.clear([slot for slot, _ in self._journal.leftover])  # their rows are in now
                self._journal.leftover = []
            # Checkpoints are the checkpointer's (see the module docstring); this is the backstop.
            conn._execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
            if self._checkpointer is None:  # started here, not in the first commit a start waits for
                self._checkpointer = threading.Thread(
                    target=self._checkpoints, name="pmjobsd-history-checkpoint", daemon=True
                )
                self._checkpointer.start()
            self._conn = conn
        if batch:
            self._conn.write_many(record for _, record in batch)

    def _checkpoint_soon(self) -> None:
        """Tell the checkpointer that commits came in."""
        with self._checkpoint_due:
            self._dirty = True
            self._checkpoint_due.notify()

    def _checkpoints(self) -> None:
        """The checkpointer thread: a PASSIVE checkpoint ``CHECKPOINT_DELAY`` s after writes came in.

        PASSIVE: it copies what no reader still needs and never waits for, nor blocks, the
        writer. It wakes only after commits, so an idle daemon has no wake-ups from it.
        """
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._checkpoint_due:
                    while not self._dirty and not self._closing:
                        self._checkpoint_due.wait()
                    if self._closing:
                        return
                    self._checkpoint_due.wait(CHECKPOINT_DELAY)  # let the commits of a burst share it
                    if self._closing:
                        return
                    self._dirty = False
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # the writer's own checkpoint remains; the next commit tries again
        finally:
            if conn is not None:
                conn.close()

    def _failed(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            first = self._failing_since is None
            if first:
                self._failing_since = time.time()
            self._error = error
            backlog = len(self._pending)
        if first:
            self.log.error("history.write_failed", error=error, backlog=backlog)
            self._changed()

    def _recovered(self, since: float) -> None:
        self.log.info("history.recovered", failed_for_s=round(time.time() - since, 3))
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self.health())
            except Exception as exc:  # a broken observer must not stop the writer
                self.log.error("observer.failed", observer="history", error=f"{type(exc).__name__}: {exc}")
