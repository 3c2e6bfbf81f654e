"""The runner: a pool of worker threads that run jobs under a deadline.

Python cannot kill a thread.  So a run that passes its deadline is recorded
as TIMEOUT at once, its cancel flag is set, and its worker is *abandoned*: a
fresh worker takes its seat, the old thread is counted until it returns (its
late result is logged, not recorded), and no new run of that job starts while
it lives, so a hanging job can never pile up threads.

Every attempt goes through :meth:`Runner._started` and :meth:`Runner._record`:
history record, log events and observers, in that order, for start and for end.
The history is written through a :class:`RunRecorder` that never raises and
never blocks the caller on the database (``core/history_writer.py``), so a
TIMEOUT recorded by the main loop cannot stall or kill it.

Scheduled runs (schedule, catch-up, retry) are taken from the pool queue
before manual ones, and manual runs never hold the last free worker
(with ``max_workers`` above 1), so a burst of ``run-now`` cannot starve the
schedule.
"""

from __future__ import annotations

import _thread
import itertools
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pmjobsd.app.paths import AppPaths
from pmjobsd.core.context import JobCancelled, JobContext, JobFenced, JobResult, Notice
from pmjobsd.core.observers import RunObserver, RunRecord
from pmjobsd.core.outcomes import Overlap, Status, Trigger
from pmjobsd.core.privacy import scrub_text
from pmjobsd.core.settings import ResolvedJob
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.observe.joblog import EventLogger

if TYPE_CHECKING:
    from pmjobsd.coord.coordinator import Coordinator


def new_run_id(now: float | None = None) -> str:
    """A run id: the 32 hex digits of a UUID version 7 (RFC 9562), the Unix time in ms then 74 random bits.

    Time-ordered, so the history's key index grows at its end: a start's row goes in next to
    the last one and a purge of the oldest runs empties whole pages.  With uuid4's random ids
    every insert and every delete touched a random page of it (the purge of a year of runs
    was bound by that).  ``now``: the epoch seconds to stamp (the time of the call by default).
    """
    millis = int((time.time() if now is None else now) * 1000)
    raw = bytearray(millis.to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 9562 variant
    return raw.hex()


class OnceFlag:
    """Set once, never cleared, waited on by any number of threads: a run request's ``started``/``done``.

    One lock held until :meth:`set` and passed on by every waiter it lets
    through; a ``threading.Event`` builds a Condition (a lock, a deque, bound
    methods), and the main loop makes two flags for every due run.
    """

    def __init__(self) -> None:
        self._gate = _thread.allocate_lock()
        self._gate.acquire()
        self._setters = itertools.count()  # next() is atomic: exactly one set() opens the gate
        self._is_set = False

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if next(self._setters) == 0:
            self._is_set = True
            self._gate.release()

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False after ``timeout`` seconds without it (None: wait for ever)."""
        if self._is_set:
            return True
        if self._gate.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._gate.release()  # let the next waiter through
            return True
        return self._is_set


class RunRecorder(Protocol):
    """Where attempts are recorded (:class:`~pmjobsd.core.history_writer.HistoryWriter`); never raises."""

    def record_start(self, record: RunRecord) -> None: ...

    def record_finish(self, record: RunRecord) -> None: ...

    def mark_final(self, record: RunRecord) -> None: ...

    def consecutive_failures(self, job: str) -> int: ...


class _WorkQueue:
    """The pool's queue: scheduled requests first, manual ones only while a worker stays free for the schedule.

    ``manual_limit`` manual attempts run at once at most; :meth:`manual_done`
    gives the seat back when one is recorded.  ``None`` (stop one worker) goes first.
    """

    def __init__(self, manual_limit: int):
        self._cond = threading.Condition()
        self._scheduled: deque[RunRequest] = deque()
        self._manual: deque[RunRequest] = deque()
        self._stops = 0
        self._manual_running = 0
        self.manual_limit = manual_limit

    def put(self, request: RunRequest | None) -> None:
        with self._cond:
            if request is None:
                self._stops += 1
            elif request.trigger is Trigger.MANUAL:
                self._manual.append(request)
            else:
                self._scheduled.append(request)
            # One request, one worker: any waiting worker can take it (the manual limit is the
            # pool's, not a worker's), and waking all of them for each of a burst costs the burst.
            self._cond.notify()

    def put_many(self, requests: Sequence[RunRequest]) -> None:
        """Queue ``requests`` (none ``None``) in one step, waking a worker for each."""
        with self._cond:
            for request in requests:
                (self._manual if request.trigger is Trigger.MANUAL else self._scheduled).append(request)
            self._cond.notify(len(requests))

    def _take(self) -> RunRequest | None:
        if self._stops:
            self._stops -= 1
            return None
        if self._scheduled:
            return self._scheduled.popleft()
        if self._manual and self._manual_running < self.manual_limit:
            self._manual_running += 1
            return self._manual.popleft()
        raise queue.Empty

    def get(self) -> RunRequest | None:
        with self._cond:
            while True:
                try:
                    return self._take()
                except queue.Empty:
                    self._cond.wait()

    def get_nowait(self) -> RunRequest | None:
        """A queued request regardless of the manual limit (shutdown drains the queue), else queue.Empty."""
        with self._cond:
            if self._scheduled:
                return self._scheduled.popleft()
            if self._manual:
                return self._manual.popleft()
            raise queue.Empty

    def manual_done(self) -> None:
        with self._cond:
            self._manual_running = max(0, self._manual_running - 1)
            self._cond.notify_all()

    def set_limit(self, manual_limit: int) -> None:
        with self._cond:
            self.manual_limit = manual_limit
            self._cond.notify_all()


_TO_POOL = "\0to the pool"  # Runner._admit: the request goes to the pool queue (never shown)


def manual_limit(max_workers: int) -> int:
    """How many manual attempts may run at once: all but one worker (one with a single worker)."""
    return max(1, max_workers - 1)


@dataclass
class RunRequest:
    """A run to start: which job, why, and (for retries) which run it continues."""

    job: ResolvedJob
    trigger: Trigger
    slot: datetime | None = None
    attempt: int = 1
    run_id: str = field(default_factory=new_run_id)
    done: OnceFlag = field(default_factory=OnceFlag)
    started: OnceFlag = field(default_factory=OnceFlag)  # a worker took it (a wait counts from here)
    record: RunRecord | None = None  # the final record, once done

    def __post_init__(self) -> None:
        self.trigger = Trigger(self.trigger)  # the word itself ("manual") will do


@dataclass
class ActiveRun:
    request: RunRequest
    record: RunRecord
    context: JobContext
    worker: _Worker
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    progress: tuple[float | None, str] | None = None


class _Worker(threading.Thread):
    _ids = itertools.count(1)

    def __init__(self, runner: Runner):
        super().__init__(name=f"pmjobsd-worker-{next(self._ids)}", daemon=True)
        self.runner = runner
        self.abandoned = False

    def run(self) -> None:
        while not self.abandoned:
            request = self.runner._queue.get()
            if request is None:  # shutdown sentinel
                return
            try:
                self.runner._execute(request, self)
            except Exception as exc:  # the history or log could not be written: keep worker and daemon alive
                self.runner._execute_failed(request, exc)


class Runner:
    """Runs requests on ``max_workers`` threads; the daemon's main loop drives timeouts.

    ``wake`` is called (from worker threads) whenever the main loop has
    something to do: a run finished and may need a retry.
    """

    def __init__(
        self,
        *,
        max_workers: int,
        history: RunRecorder,
        paths: AppPaths,
        hash_entry_id: Callable[[Any], str],
        observers: Sequence[RunObserver] = (),
        wake: Callable[[], None] = lambda: None,
        app_settings: Callable[[], dict] = dict,
        log: EventLogger | None = None,
        coordinator: Coordinator | None = None,
    ):
        self.history = history
        self.coordinator = coordinator  # with jobs.coordination: vault jobs claim their slot first
        self.paths = paths
        self.hash_entry_id = hash_entry_id
        self.observers = list(observers)
        self.wake = wake
        self.app_settings = app_settings
        self.log = log or EventLogger("runner")
        self._job_log = EventLogger("job")  # bound to each attempt (a bind is cheaper than a logger lookup)
        self._queue = _WorkQueue(manual_limit(max_workers))
        self._lock = threading.Lock()
        self._active: dict[str, ActiveRun] = {}  # run_id -> running attempt
        self._queued: dict[str, int] = {}  # job -> requests in the pool queue
        self._queued_total = 0  # their sum (idle() is asked at the end of every run)
        self._waiting: dict[str, deque[RunRequest]] = {}  # job -> runs waiting for the running one (overlap=queue)
        self._awaiting_retry: dict[str, RunRecord] = {}  # run_id -> its last, non-final attempt
        self._abandoned: dict[str, int] = {}  # job -> live abandoned threads
        self._completed: deque[RunRecord] = deque()
        self._workers: list[_Worker] = []
        self._stopping = False
        self.max_workers = max_workers
        for _ in range(max_workers):
            self._add_worker()

    # --- pool ---------------------------------------------------------------
    def _add_worker(self) -> None:
        worker = _Worker(self)
        self._workers.append(worker)
        worker.start()

    def resize(self, max_workers: int) -> None:
        """Grow or shrink the pool (settings reload); busy workers finish first."""
        with self._lock:
            live = [worker for worker in self._workers if not worker.abandoned and worker.is_alive()]
            self._workers = live
            for _ in range(max_workers - len(live)):
                self._add_worker()
            for _ in range(len(live) - max_workers):
                self._queue.put(None)
            self.max_workers = max_workers
            self._queue.set_limit(manual_limit(max_workers))

    # --- admission ------------------------------------------------------------
    def idle(self) -> bool:
        """No request is waiting for a worker (the main loop's deferred work may go now)."""
        with self._lock:
            return not self._queued_total

    def busy(self, job: str) -> bool:
        with self._lock:
            return self._busy(job)

    def _busy(self, job: str) -> bool:
        running = any(active.record.job == job for active in self._active.values())
        return running or self._queued.get(job, 0) > 0 or bool(self._waiting.get(job))

    def offer(self, request: RunRequest, overlap: Overlap) -> str | None:
        """Start or queue ``request`` under the overlap policy; return None, or why it was skipped."""
        return self.offer_many([(request, overlap)])[0]

    def offer_many(self, offers: Sequence[tuple[RunRequest, Overlap]]) -> list[str | None]:
        """:meth:`offer` each request, in order, in one step: one lock, one hand-over to the pool.

        The main loop offers a burst of due runs at once; offered one by one, each would
        wake a worker that then competes with the loop for the interpreter while the
        loop still offers the rest.
        """
        reasons: list[str | None] = []
        admitted: list[RunRequest] = []
        policies = [(request, Overlap(overlap)) for request, overlap in offers]  # the word itself ("skip") will do
        with self._lock:
            for request, overlap in policies:
                reason = self._admit(request, overlap)
                if reason is _TO_POOL:
                    # Counted as queued at once: a later offer of the same job in this batch sees it busy.
                    self._queued_one(request.job.name)
                    admitted.append(request)
                    reason = None
                reasons.append(reason)
            if admitted:
                self._queue.put_many(admitted)
        return reasons

    def _admit(self, request: RunRequest, overlap: Overlap) -> str | None:
        """Why ``request`` may not start now; :data:`_TO_POOL`; or None: it waits for the run before (hold _lock)."""
        job = request.job.name
        if self._stopping:
            return "pmjobsd is stopping"
        if self._abandoned.get(job):
            return "a timed-out run of this job is still running"
        if self._busy(job):
            if overlap is Overlap.SKIP:
                return f"the previous run is still running (overlap={overlap})"
            if overlap is Overlap.QUEUE:
                waiting = self._waiting.setdefault(job, deque())
                if waiting:
                    return f"one run is already queued (overlap={overlap})"
                waiting.append(request)
                return None
        return _TO_POOL

    def _enqueue(self, request: RunRequest) -> None:
        self._queued_one(request.job.name)
        self._queue.put(request)

    def _queued_one(self, job: str) -> None:
        """A request of ``job`` goes to the pool queue (hold _lock)."""
        self._queued[job] = self._queued.get(job, 0) + 1
        self._queued_total += 1

    def _dequeued(self, job: str) -> None:
        """A request of ``job`` left the pool queue (hold _lock)."""
        self._queued[job] -= 1
        self._queued_total -= 1

    # --- one attempt -----------------------------------------------------------
    def _execute(self, request: RunRequest, worker: _Worker) -> None:
        job = request.job
        try:
            record = RunRecord(request.run_id, job.name, request.attempt, request.trigger, request.slot, time.time())
            run_log = self._job_log.bind(job=job.name, run_id=request.run_id, attempt=request.attempt)
            context = JobContext(
                job_name=job.name,
                run_id=request.run_id,
                attempt=request.attempt,
                options=job.options,
                paths=self.paths,
                log=run_log,
                deadline=time.monotonic() + job.definition.timeout,
                app_settings=self.app_settings(),
                hash_entry_id=self.hash_entry_id,
                slot=utc_iso(request.slot.timestamp()) if request.slot else None,
            )
        except BaseException:
            with self._lock:  # never started: it leaves the queue all the same
                self._dequeued(job.name)
            raise
        active = ActiveRun(request, record, context, worker)
        claim = self.coordinator.begin(request, context.cancel_event) if self.coordinator else None
        if claim is not None:
            record.member, record.token = claim.member, claim.token
            if not claim.run:  # another member holds or ran the slot, or the engine is down: say so, no run
                with self._lock:
                    self._dequeued(job.name)  # it leaves the queue without becoming a running attempt
                request.started.set()
                self._record(active, claim.status or Status.SKIPPED, claim.summary, None, {}, {})
                return
            context.fencing_token, context.fence = claim.token, claim.fence
        context.notifier = lambda notice: self._notice(job.name, request.run_id, notice)
        context.progress_callback = lambda fraction, message: setattr(
            active, "progress", (fraction, scrub_text(message))
        )
        # One step from the queue to the running attempts: no moment in which the job looks neither
        # queued nor running (an overlap=skip offer then would start a second run).
        with self._lock:
            self._dequeued(job.name)
            self._awaiting_retry.pop(request.run_id, None)
            self._active[request.run_id] = active
            if self._stopping:
                context.cancel_event.set()
        request.started.set()
        try:
            self._started(record)
            status, summary, error, details, metrics = self._call(job, context)
            if claim is not None and claim.lost:
                status, summary = Status.INTERRUPTED, f"lease lost: {claim.lost}"  # another member may run it
            self._finish(active, status, summary, error, details, metrics)
        finally:
            if claim is not None:
                claim.end(record)  # the slot is done, waits for its retry, or is given up
        if worker.abandoned:
            with self._lock:
                self._abandoned[job.name] -= 1
                self._start_waiting(job.name)
            self.log.warning("job.abandoned_thread_exited", job=job.name, run_id=request.run_id, status=status.value)
            self.wake()

    def _execute_failed(self, request: RunRequest, exc: Exception) -> None:
        """Recording an attempt failed (disk full, database locked too long): forget it, say so, go on."""
        with self._lock:
            self._active.pop(request.run_id, None)
            self._start_waiting(request.job.name)
        if request.trigger is Trigger.MANUAL:
            self._queue.manual_done()
        self.log.error(
            "job.record_failed",
            job=request.job.name,
            run_id=request.run_id,
            attempt=request.attempt,
            error=f"{type(exc).__name__}: {exc}",
        )
        request.done.set()
        self.wake()

    @staticmethod
    def _call(job: ResolvedJob, context: JobContext) -> tuple[Status, str, str | None, dict, dict]:
        """Run the job: (status, summary, error, details, metrics); its exception is its FAIL."""
        try:
            result = job.func(context)
        except JobFenced as exc:
            return Status.INTERRUPTED, scrub_text(str(exc))[:300], None, {}, {}
        except JobCancelled:
            return Status.INTERRUPTED, "cancelled before it finished", None, {}, {}
        except Exception as exc:  # a job's failure is a FAIL, never a dead daemon
            error = f"{type(exc).__name__}: {exc}"
            return Status.FAIL, scrub_text(error)[:300], scrub_text(error)[:2000], {}, {}
        if result is None:
            return Status.OK, "", None, {}, {}
        if not isinstance(result, JobResult):
            return Status.FAIL, f"job returned {type(result).__name__}, expected JobResult or None", None, {}, {}
        try:
            status = Status(result.status)
        except ValueError:
            status = Status.FAIL
        if not status.returnable:  # TIMEOUT, INTERRUPTED and RUNNING are the runner's to say
            status = Status.FAIL
        return status, scrub_text(result.summary)[:500], None, dict(result.details), dict(result.metrics)

    def _started(self, record: RunRecord) -> None:
        self.history.record_start(record)
        self.log.info(
            record.status.event,  # RUNNING: job.started
            component="runner",
            job=record.job,
            run_id=record.run_id,
            attempt=record.attempt,
            trigger=record.trigger,
        )
        self._tell("run_started", record)

    def _claim(self, active: ActiveRun, *, abandon: bool = False) -> bool:
        """Take the right to record ``active``'s outcome; only the first caller gets it.

        With ``abandon`` (a timeout), the worker is marked abandoned in the same
        step, so a job returning at that moment can never see a half-made decision.
        """
        with active.lock:
            if active.finished:
                return False
            active.finished = True
            if abandon:
                with self._lock:
                    active.worker.abandoned = True
                    self._abandoned[active.record.job] = self._abandoned.get(active.record.job, 0) + 1
                    if not self._stopping:
                        self._add_worker()  # the seat is free again
            return True

    def _finish(
        self, active: ActiveRun, status: Status, summary: str, error: str | None, details: dict, metrics: dict
    ) -> bool:
        """Record the outcome of ``active`` once; return False if it was already recorded."""
        if not self._claim(active):
            if active.worker.abandoned:
                self.log.info(
                    "job.late_result",
                    job=active.record.job,
                    run_id=active.record.run_id,
                    attempt=active.record.attempt,
                    status=status.value,
                )
            return False
        self._record(active, status, summary, error, details, metrics)
        return True

    def _record(
        self, active: ActiveRun, status: Status, summary: str, error: str | None, details: dict, metrics: dict
    ) -> None:
        record = active.record
        request = active.request
        record.finished_at = time.time()
        record.status, record.summary, record.error = status, summary, error
        record.details, record.metrics = details, metrics
        retries_left = request.job.definition.retries - (request.attempt - 1)
        retried = retries_left > 0 and request.trigger is not Trigger.MANUAL and not self._stopping
        record.final = not (status.failed and retried)
        if request.trigger is Trigger.MANUAL:
            self._queue.manual_done()  # its seat is free (a timed-out one's thread is abandoned)
        self.history.record_finish(record)
        if record.final and status.failed:
            record.consecutive_failures = self.history.consecutive_failures(record.job)
        self.log.log(
            status.log_level,
            status.event,
            component="runner",
            job=record.job,
            run_id=record.run_id,
            attempt=record.attempt,
            status=status.value,
            duration_ms=record.duration_ms,
            summary=summary or None,
            error=error,
        )
        self._tell("run_finished", record)
        with self._lock:
            self._active.pop(record.run_id, None)
            if not record.final:
                self._awaiting_retry[record.run_id] = record
            self._start_waiting(record.job)
            self._completed.append(record)
            idle = not self._queued_total
        request.record = record
        request.done.set()
        # The main loop has work from a run's end when a retry is due (not final), a held job
        # may be released (manual runs), or the queue ran dry (deferred rescheduling). In the
        # middle of a burst, waking it for every run would only take CPU from the runs.
        if not record.final or request.trigger is Trigger.MANUAL or idle:
            self.wake()

    def record_outcome(
        self, job: ResolvedJob, slot: datetime, status: Status, summary: str, member: str | None, token: int | None
    ) -> None:
        """Record a slot of ``job`` that was decided without running it here (coordination: who ran it)."""
        now = time.time()
        record = RunRecord(new_run_id(), job.name, 1, Trigger.SCHEDULE, slot, now, status, now, summary)
        record.member, record.token = member, token
        self.history.record_finish(record)
        self.log.log(
            status.log_level,
            status.event,
            component="runner",
            job=job.name,
            run_id=record.run_id,
            status=status.value,
            summary=summary,
        )
        self._tell("run_finished", record)

    def _start_waiting(self, job: str) -> None:
        """Start the run queued behind ``job`` (overlap=queue) unless a thread of it still runs (hold _lock)."""
        waiting = self._waiting.get(job)
        if waiting and not self._stopping and not self._abandoned.get(job):
            self._enqueue(waiting.popleft())

    def give_up(self, run_id: str, reason: str) -> RunRecord | None:
        """A retry of ``run_id`` will not run: make its last attempt the final outcome.

        Without this, a run whose retry was dropped (its timed-out thread still
        runs, the job was disabled, the daemon stops) would never be final,
        never counted as a failure and never alerted on.
        """
        with self._lock:
            record = self._awaiting_retry.pop(run_id, None)
        if record is None:
            return None
        record.final = record.given_up = True
        self.history.mark_final(record)
        record.consecutive_failures = self.history.consecutive_failures(record.job)
        self.log.warning(
            "job.retry_dropped",
            component="runner",
            job=record.job,
            run_id=record.run_id,
            attempt=record.attempt,
            status=record.status.value,
            reason=reason,
        )
        self._tell("run_finished", record)
        return record

    def awaiting_retry(self) -> list[RunRecord]:
        with self._lock:
            return list(self._awaiting_retry.values())

    def _tell(self, method: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception as exc:  # an observer must never hide the job's own outcome
                self.log.error(
                    "observer.failed", observer=type(observer).__name__, error=f"{type(exc).__name__}: {exc}"
                )

    def _notice(self, job: str, run_id: str, notice: Notice) -> None:
        self._tell("notice", job, run_id, notice)

    # --- driven by the main loop ---------------------------------------------
    def expire_overdue(self, now_monotonic: float | None = None) -> list[RunRecord]:
        """Record TIMEOUT for every run past its deadline and free its seat."""
        now_monotonic = time.monotonic() if now_monotonic is None else now_monotonic
        with self._lock:
            overdue = [a for a in self._active.values() if not a.finished and a.context.deadline <= now_monotonic]
        expired = []
        for active in overdue:
            if not self._claim(active, abandon=True):
                continue  # it finished on its own just now
            active.context.cancel_event.set()
            timeout = active.request.job.definition.timeout
            self._record(active, Status.TIMEOUT, f"timed out after {timeout:g}s", None, {}, {})
            expired.append(active.record)
        return expired

    def next_deadline(self) -> float | None:
        """The earliest monotonic deadline among running attempts."""
        with self._lock:
            deadlines = [a.context.deadline for a in self._active.values() if not a.finished]
        return min(deadlines) if deadlines else None

    def take_completed(self) -> list[RunRecord]:
        """Records finished since the last call (the main loop schedules retries from them)."""
        with self._lock:
            done = list(self._completed)
            self._completed.clear()
        return done

    def abandoned_count(self, job: str | None = None) -> int:
        with self._lock:
            if job is not None:
                return self._abandoned.get(job, 0)
            return sum(self._abandoned.values())

    def running(self) -> list[ActiveRun]:
        with self._lock:
            return [active for active in self._active.values() if not active.finished]

    def shutdown(self, grace: float) -> int:
        """Stop taking work, cancel running attempts, wait up to ``grace`` s; return how many were cut off.

        Attempts still running after the grace period are recorded INTERRUPTED,
        so the history is complete when the process exits.
        """
        with self._lock:
            self._stopping = True
            never_started = [request for waiting in self._waiting.values() for request in waiting]
            for waiting in self._waiting.values():
                waiting.clear()
            for active in self._active.values():
                active.context.cancel_event.set()
        for request in never_started:
            request.done.set()  # a `run-now --wait` on it gets its answer instead of a timeout
        # Requests still in the pool queue never started: nothing to record.
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            if queued is not None:
                with self._lock:
                    self._dequeued(queued.job.name)
                queued.done.set()
        end = time.monotonic() + grace
        while self.running() and time.monotonic() < end:
            time.sleep(0.05)
        cut_off = 0
        for active in self.running():
            if self._finish(active, Status.INTERRUPTED, "interrupted: pmjobsd stopped during the run", None, {}, {}):
                cut_off += 1
        # A worker may be recording an outcome it claimed just before the deadline; let it land
        # before the history is closed (entries leave _active once recorded).
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            with self._lock:
                if not any(active.finished for active in self._active.values()):
                    break
            time.sleep(0.01)
        for _ in self._workers:
            self._queue.put(None)
        return cut_off
