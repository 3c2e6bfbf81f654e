"""The history writer: one thread writes every run record, so nobody else waits on SQLite.

The runner submits a record when an attempt starts and again when it ends
(:meth:`HistoryWriter.record_start`, :meth:`record_finish`, :meth:`mark_final`);
none of them raises, and only ``record_start`` waits (on its worker thread, at
most ``durable_wait`` seconds) for the row to be written, so that a run that
started is in the history after ``kill -9``.  A record that cannot be written
(disk full, the file locked by another process) stays in memory, newest
version per attempt, and is written when the database takes writes again.
The backlog is bounded (``max_backlog`` attempts; beyond it the oldest is
dropped and counted), and :meth:`health` says how it stands.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pmjobsd.core.history import RunHistory
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import Status

if TYPE_CHECKING:  # the writer's logger; status reads HistoryHealth without a jobs.log formatter
    from pmjobsd.observe.joblog import EventLogger

_Key = tuple[str, int]  # (run_id, attempt)


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
        durable_wait: float = 1.0,
        busy_timeout: float = 1.0,
        retry_initial: float = 0.25,
        retry_max: float = 5.0,
        mark_interrupted: bool = False,
    ):
        self.path = Path(path)
        if log is None:
            from pmjobsd.observe.joblog import EventLogger

            log = EventLogger("history")
        self.log = log
        self.reader = reader
        self.on_change = on_change
        self.max_backlog = max_backlog
        self.durable_wait = durable_wait
        self.busy_timeout = busy_timeout
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self._mark_interrupted = mark_interrupted
        self._cond = threading.Condition()
        self._pending: OrderedDict[_Key, RunRecord] = OrderedDict()
        self._written: dict[_Key, threading.Event] = {}
        self._closing = False
        self._dropped = 0
        self._failing_since: float | None = None
        self._error: str | None = None
        self.moved_aside: str | None = None
        self.damage: str | None = None
        self._conn: RunHistory | None = None
        self._thread = threading.Thread(target=self._run, name="pmjobsd-history", daemon=True)
        self._thread.start()

    # --- submitting (any thread; never raises, never blocks on SQLite) ------------------
    def record_start(self, record: RunRecord) -> None:
        """Submit a starting attempt and wait up to ``durable_wait`` s for its row (call from a worker)."""
        written = self._submit(record)
        written.wait(self.durable_wait)

    def record_finish(self, record: RunRecord) -> None:
        self._submit(record)

    def mark_final(self, record: RunRecord) -> None:
        """No retry follows ``record`` after all: its outcome is the run's."""
        self._submit(dataclasses.replace(record, final=True))

    def _submit(self, record: RunRecord) -> threading.Event:
        key = (record.run_id, record.attempt)
        snapshot = dataclasses.replace(record)
        with self._cond:
            if key in self._pending:
                self._pending[key] = snapshot  # the newer version replaces the unwritten one in place
            else:
                if len(self._pending) >= self.max_backlog:
                    lost_key, lost = self._pending.popitem(last=False)
                    self._dropped += 1
                    self._written.pop(lost_key, threading.Event()).set()
                    self.log.error("history.record_dropped", job=lost.job, run_id=lost.run_id, dropped=self._dropped)
                self._pending[key] = snapshot
            written = self._written.setdefault(key, threading.Event())
            written.clear()
            self._cond.notify_all()
        return written

    # --- reading what is not written yet ----------------------------------------------------
    def consecutive_failures(self, job: str, limit: int = 1000) -> int:
        """The job's failure streak over the history and the records still waiting here (as the history counts it)."""
        # Waiting records first, then the database: a record written in between is in both, and the
        # key (run_id, attempt) makes it one; read the other way round it could be in neither.
        with self._cond:
            attempts: dict[_Key, tuple[float, int, bool, bool, bool]] = {
                key: (r.started_at, r.attempt, r.final, r.status.failed, r.status.succeeded)
                for key, r in self._pending.items()
                if r.job == job
            }
        try:
            rows = self.reader.recent(job, limit=limit) if self.reader is not None else []
        except sqlite3.Error:
            rows = []
        for row in rows:
            status = Status(row["status"])
            fact = (row["started_at"], row["attempt"], row["final"], status.failed, status.succeeded)
            attempts.setdefault((row["run_id"], row["attempt"]), fact)
        streak = 0
        for _, _, final, failed, succeeded in sorted(attempts.values(), reverse=True):
            if not final:
                continue
            if succeeded:
                break
            streak += failed
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
            while self._pending:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def close(self, timeout: float = 5.0) -> int:
        """Write what is left (for up to ``timeout`` s), stop; return how many attempts stayed unwritten."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(1.0, self.busy_timeout + 1.0))
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
                while not self._pending and not self._closing and self._conn is not None:
                    self._cond.wait()
                if self._closing:
                    break
                item = next(iter(self._pending.items()), None)
            try:
                self._write(item)
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                with self._cond:
                    if not self._closing:
                        self._cond.wait(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            if item is not None:
                with self._cond:
                    key, record = item
                    if self._pending.get(key) is record:  # not replaced by a newer version meanwhile
                        del self._pending[key]
                        self._written.pop(key, threading.Event()).set()
                    self._cond.notify_all()
                    backlog_left = len(self._pending)
                if self._failing_since is not None and not backlog_left:
                    self._recovered()
        if self._conn is not None:
            self._conn.close()

    def _write(self, item: tuple[_Key, RunRecord] | None) -> None:
        if self._conn is None:
            conn = RunHistory(self.path, busy_timeout=self.busy_timeout)
            try:
                if self._mark_interrupted:
                    interrupted = conn.mark_interrupted()
                    if interrupted:
                        self.log.warning("history.interrupted_runs", count=interrupted)
            except BaseException:
                conn.close()
                raise
            self._mark_interrupted = False
            self._conn = conn
        if item is not None:
            self._conn.write(item[1])

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

    def _recovered(self) -> None:
        with self._cond:
            since, self._failing_since, self._error = self._failing_since, None, None
        self.log.info("history.recovered", failed_for_s=round(time.time() - (since or time.time()), 3))
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self.health())
            except Exception as exc:  # a broken observer must not stop the writer
                self.log.error("observer.failed", observer="history", error=f"{type(exc).__name__}: {exc}")
