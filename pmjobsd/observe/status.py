"""The status document (``status --json``, ``/v1/jobs``, docs/metrics.md) and its exit code.

:func:`build_status` makes a :class:`StatusSnapshot`: typed, times as epoch
seconds (``next_run`` as a datetime in the job's zone), states as enums.  The
metrics and the status page read it as it is; :meth:`StatusSnapshot.to_json`
formats it into the JSON document (:class:`StatusDocument`) where JSON is
produced.  Built by the daemon (with its live next-run times and running
attempts) or, when no daemon runs, by the CLI from the settings and the run history.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from pmjobsd import __version__
from pmjobsd.core.held import Hold
from pmjobsd.core.history import JobSummary, RunHistory, check_file, check_history, is_damage
from pmjobsd.core.history_writer import HistoryHealth
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import JobState, Severity, Status, Trigger
from pmjobsd.core.privacy import escape_control
from pmjobsd.core.timestamps import utc_iso

if TYPE_CHECKING:  # `status` with a daemon running reads its answer without validating settings
    from pmjobsd.coord.state import CoordinationSnapshot
    from pmjobsd.core.settings import LoadedSettings, ResolvedJob

RECENT_RUNS = 20  # attempts per job in the document's "recent" list (the status page's marks)


# --- what the builder needs from a live daemon ------------------------------------------------


class RunningAttempt(Protocol):
    """An attempt in progress, as the runner tracks it."""

    @property
    def record(self) -> RunRecord: ...

    @property
    def progress(self) -> tuple[float | None, str] | None: ...


class LiveState(Protocol):
    """A live daemon's scheduler and runner, as far as the status goes."""

    def next_run(self, job: str) -> datetime | None: ...

    def running(self) -> Sequence[RunningAttempt]: ...

    def abandoned_count(self, job: str | None = None) -> int: ...

    def held(self, job: str) -> Hold | None: ...

    def unwritten(self) -> Mapping[str, RunRecord]: ...


# --- the JSON document ----------------------------------------------------------------------------


class _LastRunDocument(TypedDict):
    run_id: str
    status: str
    trigger: str
    started_at: str
    finished_at: str | None
    duration_ms: int | None
    attempt: int
    summary: str


class LastRunDocument(_LastRunDocument, total=False):
    member: str  # with jobs.coordination, a vault job's: who ran the slot (SKIPPED: who did)
    token: int


class RecentDocument(TypedDict):
    status: str
    started_at: str
    duration_ms: int | None
    final: bool


class RunningDocument(TypedDict):
    run_id: str
    attempt: int
    started_at: str
    progress: float | None
    progress_message: str


class _JobDocument(TypedDict):
    name: str
    enabled: bool
    cron: str | None
    status: str
    next_run: str | None
    last_run: LastRunDocument | None
    consecutive_failures: int
    last_success_at: str | None
    recent: list[RecentDocument]


class HeldDocument(TypedDict):
    reason: str
    hangs: int
    since: str
    until: str


class JobDocument(_JobDocument, total=False):
    description: str  # absent for a job that is not scheduled (its definition is invalid)
    running: RunningDocument
    abandoned_threads: int
    config_errors: list[str]
    held: HeldDocument
    scope: str  # with jobs.coordination: "vault" (once per slot in the group) or "device"


class _HistoryDocument(TypedDict):
    recording: bool
    backlog: int
    dropped: int


class HistoryDocument(_HistoryDocument, total=False):
    failing_since: str
    error: str
    moved_aside: str
    damage: str


class _DaemonDocument(TypedDict):
    running: bool
    pid: int | None
    version: str
    started_at: str | None


class DaemonDocument(_DaemonDocument, total=False):
    responding: bool
    abandoned_threads: int
    heartbeat_age_s: float
    host: str
    history: HistoryDocument


class CoordinationDocument(TypedDict):
    group: str
    member: str
    engine: str
    reachable: bool
    since: str | None
    reconnect_at: str | None
    last_error: str | None
    leases_held: int
    claims_won: int
    claims_lost: int
    leases_lost: int
    engine_down_skips: int
    engine_down_local: int
    last_heartbeat: str | None
    duplicate_member: str | None


class SettingsDocument(TypedDict):
    path: str
    valid: bool
    issues: list[str]


class _StatusDocument(TypedDict):
    generated_at: str
    daemon: DaemonDocument
    settings: SettingsDocument
    jobs: list[JobDocument]
    status: str  # OK, WARN or FAIL: the exit code's name


class StatusDocument(_StatusDocument, total=False):
    coordination: CoordinationDocument  # a daemon with jobs.coordination


# --- the typed snapshot ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LastRun:
    """A job's newest attempt."""

    run_id: str
    status: Status
    trigger: Trigger
    started_at: float
    finished_at: float | None
    duration_ms: int | None
    attempt: int
    summary: str
    final: bool  # no retry follows (not in the document: its job's status says it)
    member: str | None = None
    token: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LastRun:
        return cls(
            row["run_id"],
            Status(row["status"]),
            Trigger(row["trigger"]),
            row["started_at"],
            row["finished_at"],
            row["duration_ms"],
            row["attempt"],
            row["summary"],
            row["final"],
            row.get("member"),
            row.get("token"),
        )

    def to_json(self) -> LastRunDocument:
        document: LastRunDocument = {
            "run_id": self.run_id,
            "status": self.status.value,
            "trigger": self.trigger.value,
            "started_at": utc_iso(self.started_at),
            "finished_at": utc_iso(self.finished_at),
            "duration_ms": self.duration_ms,
            "attempt": self.attempt,
            "summary": self.summary,
        }
        if self.member is not None:
            document["member"] = self.member
        if self.token is not None:
            document["token"] = self.token
        return document


@dataclass(frozen=True)
class RecentAttempt:
    """One of a job's newest attempts (the status page draws them as marks)."""

    status: Status
    started_at: float
    duration_ms: int | None
    final: bool

    def to_json(self) -> RecentDocument:
        return {
            "status": self.status.value,
            "started_at": utc_iso(self.started_at),
            "duration_ms": self.duration_ms,
            "final": self.final,
        }


@dataclass(frozen=True)
class RunningNow:
    """The attempt a live daemon is running, with the progress the job reported."""

    run_id: str
    attempt: int
    started_at: float
    progress: float | None
    progress_message: str

    def to_json(self) -> RunningDocument:
        return {
            "run_id": self.run_id,
            "attempt": self.attempt,
            "started_at": utc_iso(self.started_at),
            "progress": self.progress,
            "progress_message": self.progress_message,
        }


@dataclass(frozen=True)
class JobStatus:
    """One job's entry.  ``description`` is None for a job that is not scheduled (invalid definition)."""

    name: str
    enabled: bool
    cron: str | None
    status: JobState
    next_run: datetime | None  # in the job's own zone
    last_run: LastRun | None
    consecutive_failures: int
    description: str | None
    last_success_at: float | None
    recent: tuple[RecentAttempt, ...]
    running: RunningNow | None = None
    abandoned_threads: int = 0
    config_errors: tuple[str, ...] = ()
    held: Hold | None = None  # held back after it hung the daemon into a restart (status FAIL)
    scope: str | None = None  # shown with jobs.coordination only

    def to_json(self) -> JobDocument:
        last_run = self.last_run.to_json() if self.last_run else None
        next_run = self.next_run.isoformat() if self.next_run else None
        recent = [attempt.to_json() for attempt in self.recent]
        if self.description is None:  # not scheduled: the config errors are what there is to say
            return {
                "name": self.name,
                "enabled": self.enabled,
                "cron": self.cron,
                "status": self.status.value,
                "next_run": next_run,
                "last_run": last_run,
                "consecutive_failures": self.consecutive_failures,
                "config_errors": list(self.config_errors),
                "last_success_at": utc_iso(self.last_success_at),
                "recent": recent,
            }
        entry: JobDocument = {
            "name": self.name,
            "enabled": self.enabled,
            "cron": self.cron,
            "status": self.status.value,
            "next_run": next_run,
            "last_run": last_run,
            "consecutive_failures": self.consecutive_failures,
            "description": self.description,
            "last_success_at": utc_iso(self.last_success_at),
            "recent": recent,
        }
        if self.running is not None:
            entry["running"] = self.running.to_json()
        if self.abandoned_threads:
            entry["abandoned_threads"] = self.abandoned_threads
        if self.config_errors:  # running with its last good definition
            entry["config_errors"] = list(self.config_errors)
        if self.held is not None:
            entry["held"] = {
                "reason": self.held.reason,
                "hangs": self.held.hangs,
                "since": utc_iso(self.held.since),
                "until": utc_iso(self.held.until),
            }
        if self.scope is not None:
            entry["scope"] = self.scope
        return entry


@dataclass(frozen=True)
class DaemonState:
    """The daemon as the status sees it; the last three fields come from a live daemon only."""

    running: bool
    pid: int | None
    version: str
    started_at: float | None
    responding: bool | None = None  # False: a process holds the lock but does not answer
    abandoned_threads: int | None = None
    heartbeat_age_s: float | None = None
    host: str | None = None
    history: HistoryHealth | None = None  # is the run history being written (a daemon's), or damaged

    def to_json(self) -> DaemonDocument:
        document: DaemonDocument = {
            "running": self.running,
            "pid": self.pid,
            "version": self.version,
            "started_at": utc_iso(self.started_at),
        }
        if self.responding is not None:
            document["responding"] = self.responding
        if self.abandoned_threads is not None:
            document["abandoned_threads"] = self.abandoned_threads
        if self.heartbeat_age_s is not None:
            document["heartbeat_age_s"] = self.heartbeat_age_s
        if self.host is not None:
            document["host"] = self.host
        if self.history is not None:
            document["history"] = history_document(self.history)
        return document


def history_document(health: HistoryHealth) -> HistoryDocument:
    document: HistoryDocument = {"recording": health.recording, "backlog": health.backlog, "dropped": health.dropped}
    if health.failing_since is not None:
        document["failing_since"] = utc_iso(health.failing_since)
    if health.error:
        document["error"] = health.error
    if health.moved_aside:
        document["moved_aside"] = health.moved_aside
    if health.damage:
        document["damage"] = health.damage
    return document


def history_severity(recording: bool, damaged: bool) -> Severity:
    """Runs not reaching the history are a FAIL; a damaged file (moved aside, or found by ``status``) a WARN."""
    if not recording:
        return Severity.FAIL
    return Severity.WARN if damaged else Severity.OK


@dataclass(frozen=True)
class SettingsState:
    path: str
    valid: bool
    issues: tuple[str, ...]

    def to_json(self) -> SettingsDocument:
        return {"path": self.path, "valid": self.valid, "issues": list(self.issues)}


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything ``pmjobsd status`` reports, typed; :meth:`to_json` is the document."""

    generated_at: float
    daemon: DaemonState
    settings: SettingsState
    jobs: tuple[JobStatus, ...]
    coordination: CoordinationSnapshot | None = None  # a daemon with jobs.coordination

    @property
    def severity(self) -> Severity:
        """The exit code of ``pmjobsd status`` (see :func:`overall_severity`); an unreachable engine warns."""
        if self.coordination is not None and not self.coordination.reachable:
            return max(Severity.WARN, self._severity())
        return self._severity()

    def _severity(self) -> Severity:
        return overall_severity(
            (_worst(self.jobs),),
            running=self.daemon.running,
            responding=self.daemon.responding,
            abandoned_threads=self.daemon.abandoned_threads or 0,
            settings_valid=self.settings.valid,
            history=history_severity(
                self.daemon.history.recording, bool(self.daemon.history.moved_aside or self.daemon.history.damage)
            )
            if self.daemon.history is not None
            else Severity.OK,
        )

    def to_json(self, jobs: list[JobDocument] | None = None) -> StatusDocument:
        """The document; ``jobs``: the jobs' entries already formatted (see :meth:`StatusCache.document`)."""
        document: StatusDocument = {
            "generated_at": utc_iso(self.generated_at),
            "daemon": self.daemon.to_json(),
            "settings": self.settings.to_json(),
            "jobs": [job.to_json() for job in self.jobs] if jobs is None else jobs,
            "status": self.severity.name,
        }
        if self.coordination is not None:
            document["coordination"] = coordination_document(self.coordination)
        return document


def coordination_document(state: CoordinationSnapshot) -> CoordinationDocument:
    """The ``coordination`` object of the status document (no password: the engine's display URL)."""
    return {
        "group": state.group,
        "member": state.member,
        "engine": state.engine,
        "reachable": state.reachable,
        "since": utc_iso(state.reachable_since),
        "reconnect_at": utc_iso(state.reconnect_at),
        "last_error": state.last_error,
        "leases_held": state.leases_held,
        "claims_won": state.claims_won,
        "claims_lost": state.claims_lost,
        "leases_lost": state.leases_lost,
        "engine_down_skips": state.engine_down_skips,
        "engine_down_local": state.engine_down_local,
        "last_heartbeat": utc_iso(state.last_heartbeat),
        "duplicate_member": state.duplicate_member,
    }


_worst_kept: tuple[tuple[JobStatus, ...], Severity] | None = None


def _worst(jobs: tuple[JobStatus, ...]) -> Severity:
    """The worst of the jobs' severities, kept for the last tuple of entries (a live daemon reuses it)."""
    global _worst_kept
    kept = _worst_kept
    if kept is None or kept[0] is not jobs:
        kept = _worst_kept = (jobs, max((job.status.severity for job in jobs), default=Severity.OK))
    return kept[1]


def overall_severity(
    job_severities: Iterable[Severity],
    *,
    running: bool,
    responding: bool | None,
    abandoned_threads: int,
    settings_valid: bool,
    history: Severity = Severity.OK,
) -> Severity:
    """The worst of the jobs' severities; a daemon that is not running, has stuck threads or
    invalid settings is at least a WARN, one that holds the lock but does not answer is a FAIL."""
    if responding is False:  # wedged
        return Severity.FAIL
    worst = max(max(job_severities, default=Severity.OK), history)
    if not running or abandoned_threads or not settings_valid:
        worst = max(worst, Severity.WARN)
    return worst


def exit_code(document: Mapping[str, Any]) -> Severity:
    """0 when all is OK, 1 on any WARN, 2 on any FAIL, for a document read as JSON (maybe from
    another pmjobsd version over the control socket: a state it does not know is a FAIL)."""
    daemon = document["daemon"]
    history = daemon.get("history") or {}
    coordination = document.get("coordination")
    unreachable = Severity.WARN if coordination is not None and not coordination.get("reachable") else Severity.OK
    return max(unreachable, _document_severity(document, daemon, history))


def _document_severity(document: Mapping[str, Any], daemon: Mapping[str, Any], history: Mapping[str, Any]) -> Severity:
    return overall_severity(
        (JobState.severity_of(job["status"]) for job in document["jobs"]),
        running=bool(daemon.get("running")),
        responding=daemon.get("responding"),
        abandoned_threads=daemon.get("abandoned_threads") or 0,
        settings_valid=document["settings"]["valid"],
        history=history_severity(
            history.get("recording", True), bool(history.get("moved_aside") or history.get("damage"))
        ),
    )


# --- building it ----------------------------------------------------------------------------------


def _recent(rows: Sequence[Mapping[str, Any]]) -> tuple[RecentAttempt, ...]:
    """A job's newest attempts, newest first, from :meth:`RunHistory.newest` rows."""
    return tuple(
        RecentAttempt(Status(row["status"]), row["started_at"], row["duration_ms"], row["final"]) for row in rows
    )


def _job_state(enabled: bool, running: bool, last: LastRun | None, held: bool = False) -> JobState:
    if not enabled:
        return JobState.DISABLED
    if held:
        return JobState.FAIL
    if running:
        return JobState.RUNNING
    if last is None:
        return JobState.NEVER_RUN
    return JobState.of_attempt(last.status, last.final)


def _running_now(attempt: RunningAttempt) -> RunningNow:
    fraction, message = attempt.progress or (None, "")
    record = attempt.record
    return RunningNow(record.run_id, record.attempt, record.started_at, fraction, message)


def build_status(
    loaded: LoadedSettings,
    history: RunHistory,
    *,
    daemon: DaemonState,
    live: LiveState | None = None,
    jobs: Mapping[str, ResolvedJob] | None = None,
    now: datetime | None = None,
    coordination: CoordinationSnapshot | None = None,
) -> StatusSnapshot:
    """The status; ``live`` and ``jobs`` are given by a running daemon.

    ``jobs`` are the jobs the daemon actually runs (default: those of ``loaded``):
    a job whose new definition is invalid keeps running with its last good one.
    """
    now = now or datetime.now(timezone.utc)
    effective = loaded.jobs if jobs is None else jobs
    names = sorted(set(effective) | set(loaded.job_errors))
    # O(jobs), not O(history): RECENT_RUNS rows per job along an index, one summary row per job.
    newest = history.newest(names, RECENT_RUNS)
    summaries = history.summaries(names)
    last_runs = {name: LastRun.from_row(rows[0]) for name, rows in newest.items() if rows}
    for name, record in (live.unwritten() if live else {}).items():  # recorded, on its way to the database
        if name not in last_runs or record.started_at >= last_runs[name].started_at:
            last_runs[name] = LastRun(
                record.run_id,
                record.status,
                record.trigger,
                record.started_at,
                record.finished_at,
                record.duration_ms,
                record.attempt,
                record.summary,
                record.final,
            )
    never = JobSummary(None, 0)
    running = {attempt.record.job: attempt for attempt in live.running()} if live else {}
    entries = []
    for name in names:
        summary = summaries.get(name, never)
        errors = tuple(str(issue) for issue in loaded.job_errors.get(name, ()))
        job = effective.get(name)
        if job is None:  # not scheduled: its definition is invalid and there is no good one to run
            entries.append(
                JobStatus(
                    name=name,
                    enabled=False,
                    cron=None,
                    status=JobState.FAIL,
                    next_run=None,
                    last_run=last_runs.get(name),
                    consecutive_failures=summary.consecutive_failures,
                    description=None,
                    last_success_at=summary.last_success_at,
                    recent=_recent(newest.get(name, ())),
                    config_errors=errors,
                )
            )
            continue
        enabled = job.definition.enabled
        held = live.held(name) if live is not None else None
        next_run = None
        if enabled:
            if live is not None:
                next_run = live.next_run(name)
            elif not daemon.running:
                next_run = job.schedule.next_after(now)
        entries.append(
            JobStatus(
                name=name,
                enabled=enabled,
                cron=job.definition.cron,
                status=_job_state(enabled, name in running, last_runs.get(name), held is not None),
                next_run=next_run.astimezone(job.schedule.tz) if next_run else None,
                last_run=last_runs.get(name),
                consecutive_failures=summary.consecutive_failures,
                description=job.description,
                last_success_at=summary.last_success_at,
                recent=_recent(newest.get(name, ())),
                running=_running_now(running[name]) if name in running else None,
                abandoned_threads=live.abandoned_count(name) if live else 0,
                config_errors=errors,  # running with its last good definition
                held=held,
                scope=job.definition.scope if loaded.settings.coordination is not None else None,
            )
        )
    return StatusSnapshot(
        generated_at=now.timestamp(),
        daemon=daemon,
        settings=SettingsState(str(loaded.source), loaded.ok, tuple(str(issue) for issue in loaded.issues)),
        jobs=tuple(entries),
        coordination=coordination,
    )


class StatusCache:
    """:func:`build_status` for a live daemon, its job entries built once per change of state.

    The entries (the history's newest attempts and summaries, the live next runs, running
    attempts and their progress, holds, abandoned threads, unwritten records, the settings)
    are reused while none of them changed: the key is the history's version (bumped by every
    commit, the history writer's or another process's) and the live values, all O(jobs) to
    read.  Only ``generated_at`` and the daemon's own state are new at each call.  A RUNNING
    row of another process is never reused (its writer may die without a commit).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._kept: tuple[Any, ...] = ()  # what the key names by id(), kept alive
        self._jobs: tuple[JobStatus, ...] = ()
        self._settings: SettingsState | None = None
        self._names: tuple[tuple[int, int], list[str]] | None = None
        self._documents: tuple[tuple[JobStatus, ...], list[JobDocument]] | None = None

    def document(self, snapshot: StatusSnapshot) -> StatusDocument:
        """``snapshot.to_json()``, the jobs' entries formatted once per set of them (treat as read-only)."""
        kept = self._documents
        if kept is None or kept[0] is not snapshot.jobs:
            kept = self._documents = (snapshot.jobs, [job.to_json() for job in snapshot.jobs])
        return snapshot.to_json(kept[1])

    def build(
        self,
        loaded: LoadedSettings,
        history: RunHistory,
        *,
        daemon: DaemonState,
        live: LiveState,
        jobs: Mapping[str, ResolvedJob],
        now: datetime,
        coordination: CoordinationSnapshot | None = None,
    ) -> StatusSnapshot:
        names = self._names
        if names is None or names[0] != (id(loaded), id(jobs)):
            names = ((id(loaded), id(jobs)), sorted(set(jobs) | set(loaded.job_errors)))
        running = tuple(
            (attempt.record.job, attempt.record.run_id, attempt.record.attempt, attempt.progress)
            for attempt in live.running()
        )
        unwritten = tuple(
            (name, record.run_id, record.attempt, record.status, record.finished_at, record.final)
            for name, record in live.unwritten().items()
        )
        key = (
            history.version(),
            id(loaded),
            id(jobs),
            tuple(map(live.next_run, names[1])),
            tuple(map(live.held, names[1])),
            tuple(map(live.abandoned_count, names[1])),
            running,
            unwritten,
        )
        with self._lock:
            if key == self._key and self._settings is not None:
                return StatusSnapshot(now.timestamp(), daemon, self._settings, self._jobs, coordination)
        snapshot = build_status(
            loaded, history, daemon=daemon, live=live, jobs=jobs, now=now, coordination=coordination
        )
        # A RUNNING row of a job this daemon does not run now: another process's (or one of ours
        # whose end is on its way); read again next time.
        ours = {entry[0] for entry in running}
        foreign = any(
            attempt.status is Status.RUNNING and job.name not in ours for job in snapshot.jobs for attempt in job.recent
        )
        with self._lock:
            self._names = names
            if not foreign:
                self._key, self._kept = key, (loaded, jobs)
                self._jobs, self._settings = snapshot.jobs, snapshot.settings
            else:
                self._key = None
        return snapshot


def document_text(snapshot: StatusSnapshot, jobs_text: str | None = None) -> str:
    """``json.dumps(snapshot.to_json(), indent=2)``, the same text, with the jobs' part given.

    ``jobs_text`` is :func:`jobs_text` of ``snapshot.jobs`` (kept while they are the same); the
    rest (generated_at, the daemon, the settings, the status) is formatted here.
    """
    if jobs_text is None:
        return json.dumps(snapshot.to_json(), indent=2)
    head, tail = _around_jobs(snapshot)
    return head + jobs_text + tail


def document_bytes(snapshot: StatusSnapshot, jobs: bytes) -> bytes:
    """:func:`document_text` and a newline, UTF-8, around ``jobs`` (:func:`jobs_text`, encoded once)."""
    head, tail = _around_jobs(snapshot)
    return b"".join((head.encode(), jobs, tail.encode(), b"\n"))


_settings_kept: tuple[SettingsState, str] | None = None


def _around_jobs(snapshot: StatusSnapshot) -> tuple[str, str]:
    """The document's text before and after the jobs' part, as json.dumps(indent=2) writes it:
    a top-level object, member by member, each member's own lines one level deeper."""
    global _settings_kept
    kept = _settings_kept
    if kept is None or kept[0] is not snapshot.settings:  # a live daemon hands out the same one
        kept = _settings_kept = (snapshot.settings, _nested(snapshot.settings.to_json()))
    head = (
        f'{{\n  "generated_at": {_compact(utc_iso(snapshot.generated_at))},\n  "daemon": '
        f'{_nested(snapshot.daemon.to_json())},\n  "settings": {kept[1]},\n  "jobs": '
    )
    tail = f',\n  "status": {_compact(snapshot.severity.name)}'
    if snapshot.coordination is not None:
        tail += f',\n  "coordination": {_nested(coordination_document(snapshot.coordination))}'
    return head, tail + "\n}"


def _nested(value: Any, level: int = 1) -> str:
    """``value`` as ``json.dumps(indent=2)`` writes it ``level`` levels down, byte for byte.

    The containers are laid out here and every scalar and key goes through the C encoder
    (``json.dumps`` with ``indent`` set takes the pure-Python one, several times slower).
    """
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = "\n" + "  " * (level + 1)
        members = ("," + inner).join(f"{_compact(key)}: {_nested(item, level + 1)}" for key, item in value.items())
        return "{" + inner + members + "\n" + "  " * level + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        inner = "\n" + "  " * (level + 1)
        return "[" + inner + ("," + inner).join(_nested(item, level + 1) for item in value) + "\n" + "  " * level + "]"
    return _compact(value)


_compact = json.JSONEncoder().encode  # the C encoder, json.dumps's defaults


def jobs_text(jobs: Sequence[JobStatus]) -> str:
    """The ``jobs`` member of the document as :func:`document_text` puts it in."""
    return _nested([job.to_json() for job in jobs])


def offline_status(history_path: Path, loaded: LoadedSettings, pid: int | None) -> StatusDocument:
    """The status document when no daemon answers, from the run history.

    ``pid`` is the holder of the daemon's lock: a live process that does not
    answer on the control socket is reported as running but not responding (FAIL).
    """
    if pid is None:
        daemon = DaemonState(running=False, pid=None, version=__version__, started_at=None)
    else:
        daemon = DaemonState(running=True, pid=pid, version=__version__, started_at=None, responding=False)
    try:
        check_file(history_path)  # before our connection opens it (see check_file)
        with RunHistory(history_path, create=False) as history:
            check_history(history)  # O(1): status costs the same with any history
            return build_status(loaded, history, daemon=daemon).to_json()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        # Reported, never repaired here: the daemon moves the file aside when it starts.
        damage = f"{history_path} is damaged ({exc}); pmjobsd run moves it aside and starts a fresh one"
        daemon = replace(daemon, history=HistoryHealth(damage=damage))
    with RunHistory(history_path, create=False, empty=True) as history:
        return build_status(loaded, history, daemon=daemon).to_json()


def render_text(document: Mapping[str, Any]) -> str:
    """A table for people: one line per job, then the daemon and settings state.

    Every line passes :func:`escape_control`: summaries and settings issues quote text from outside
    (a backup member name, an exception), whose ESC, CR or LF must not reach the terminal.
    """
    daemon = document["daemon"]
    lines = []
    if daemon.get("running"):
        lines.append(
            f"pmjobsd {daemon.get('version')} running, pid {daemon.get('pid')}, since {daemon.get('started_at')}"
        )
    else:
        lines.append("pmjobsd is not running (status from the run history)")
    if daemon.get("abandoned_threads"):
        lines.append(f"WARNING: {daemon['abandoned_threads']} timed-out job thread(s) still running")
    lines += history_lines(daemon.get("history") or {})
    lines += coordination_lines(document.get("coordination"))
    # Times are shown whole, with their zone: a next run (in the job's zone) may have fractions of a
    # second (jitter, a retry's backoff); the columns are as wide as their longest time.
    rows = []
    for job in document["jobs"]:
        last = job.get("last_run") or {}
        summary = "; ".join(job.get("config_errors", [])) or last.get("summary") or ""
        rows.append((job["name"], job["status"], last.get("started_at") or "-", job.get("next_run") or "-", summary))
    last_width = max([len("LAST RUN"), *(len(row[2]) for row in rows)])
    next_width = max([len("NEXT RUN"), *(len(row[3]) for row in rows)])
    lines += ["", f"{'JOB':<26} {'STATUS':<9} {'LAST RUN':<{last_width}} {'NEXT RUN':<{next_width}} SUMMARY"]
    for name, state, last_run, next_run, summary in rows:
        lines.append(f"{name:<26} {state:<9} {last_run:<{last_width}} {next_run:<{next_width}} {summary}".rstrip())
    for issue in document["settings"]["issues"]:
        lines.append(f"settings: {issue}")
    lines += ["", f"overall: {document['status']}"]
    return "\n".join(escape_control(line) for line in lines)


def coordination_lines(state: Mapping[str, Any] | None) -> list[str]:
    """One line on the coordination group, when there is one (a WARNING while the engine does not answer)."""
    if not state:
        return []
    who = f"group {state.get('group')} as {state.get('member')} via {state.get('engine')}"
    counts = f"{state.get('leases_held')} lease(s) held, claims won {state.get('claims_won')}, lost {state.get('claims_lost')}"
    if state.get("reachable"):
        return [f"coordination: {who}: reachable since {state.get('since')}; {counts}"]
    return [
        f"WARNING: coordination: {who}: unreachable since {state.get('since') or 'start'} "
        f"({state.get('last_error') or 'no answer'}); next attempt {state.get('reconnect_at') or 'soon'}; {counts}"
    ]


def history_lines(history: Mapping[str, Any]) -> list[str]:
    """What ``status`` says about the run history when something is wrong with it (one line each)."""
    lines = []
    if history.get("moved_aside"):
        lines.append(
            f"WARNING: the run history was damaged ({history.get('damage') or 'unreadable'}); moved aside to "
            f"{history['moved_aside']}, a fresh one was started"
        )
    elif history.get("damage"):
        lines.append(f"WARNING: run history: {history['damage']}")
    if history and not history.get("recording", True):
        lines.append(
            f"FAIL: runs are not being recorded ({history.get('error') or 'history full'}); "
            f"{history.get('backlog', 0)} waiting in memory, {history.get('dropped', 0)} lost"
        )
    return lines
