"""The outcome vocabulary: how bad, what an attempt ended as, what state a job is in, why it ran.

Each meaning is stated here once and asked everywhere else: a status's
severity (the exit code of ``status``, ``doctor`` and ``run-now --wait``),
its jobs.log event, whether it counts as a failure, its ``pmjobsd_job_status``
code.  The values are the strings of the run history, jobs.log, the status
document and the settings, so the enums compare equal to them and msgspec
validates them from them.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass


class _Word(str, enum.Enum):
    """A str enum that formats as its bare value, on every Python version (like 3.11's ``StrEnum``)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


class Severity(enum.IntEnum):
    """How bad: 0 OK, 1 WARN, 2 FAIL; exit codes and gauge values (the monitoring-plugin convention)."""

    OK = 0
    WARN = 1
    FAIL = 2


class Status(_Word):
    """What one attempt ended as (RUNNING until it ends); a job may return OK, WARN or FAIL.

    * ``failed``: it counts as a failure: retried, alerted on, part of a failure streak;
    * ``succeeded``: the job did its work: its last success, it ends a streak, resolves an alert;
    * neither (INTERRUPTED, SKIPPED, RUNNING): it says nothing about the job's health.

    SKIPPED is a vault job's slot that another member of the coordination group
    ran (or holds): recorded here so that every history shows who ran it.
    """

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    TIMEOUT = "TIMEOUT"
    INTERRUPTED = "INTERRUPTED"
    RUNNING = "RUNNING"
    SKIPPED = "SKIPPED"

    @property
    def severity(self) -> Severity:
        return _STATUS_FACTS[self].severity

    @property
    def event(self) -> str:
        """The jobs.log event of an attempt that ended so (``job.succeeded``, ``job.timeout``...)."""
        return _STATUS_FACTS[self].event

    @property
    def log_level(self) -> int:
        """The ``logging`` level of that event."""
        return _STATUS_FACTS[self].log_level

    @property
    def failed(self) -> bool:
        return _STATUS_FACTS[self].failed

    @property
    def succeeded(self) -> bool:
        return _STATUS_FACTS[self].succeeded

    @property
    def conclusive(self) -> bool:
        """True when the outcome says something about the job's health (it failed, or it did its work)."""
        return self.failed or self.succeeded

    @property
    def returnable(self) -> bool:
        """True for what a job may return in its JobResult (anything else is recorded as FAIL)."""
        return _STATUS_FACTS[self].returnable

    @property
    def finished(self) -> bool:
        return self is not Status.RUNNING

    @property
    def metric_code(self) -> Severity | None:
        """The ``pmjobsd_job_status`` value an attempt that ended so shows; None while it runs."""
        return self.severity if self.finished else None

    @classmethod
    def of_severity(cls, severity: Severity) -> Status:
        """OK, WARN or FAIL: the status named like ``severity``."""
        return cls(severity.name)


@dataclass(frozen=True)
class _StatusFacts:
    severity: Severity
    event: str
    log_level: int
    failed: bool = False
    succeeded: bool = False
    returnable: bool = False


_STATUS_FACTS = {
    Status.OK: _StatusFacts(Severity.OK, "job.succeeded", logging.INFO, succeeded=True, returnable=True),
    Status.WARN: _StatusFacts(Severity.WARN, "job.succeeded", logging.WARNING, succeeded=True, returnable=True),
    Status.FAIL: _StatusFacts(Severity.FAIL, "job.failed", logging.ERROR, failed=True, returnable=True),
    Status.TIMEOUT: _StatusFacts(Severity.FAIL, "job.timeout", logging.ERROR, failed=True),
    Status.INTERRUPTED: _StatusFacts(Severity.WARN, "job.failed", logging.ERROR),  # pmjobsd stopped it
    Status.RUNNING: _StatusFacts(Severity.OK, "job.started", logging.INFO),
    Status.SKIPPED: _StatusFacts(Severity.OK, "job.skipped", logging.INFO),  # another member ran the slot
}


class JobState(_Word):
    """A job's state in the status document: its newest attempt's verdict, or why it has none."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    RUNNING = "RUNNING"
    NEVER_RUN = "NEVER_RUN"
    DISABLED = "DISABLED"

    @property
    def verdict(self) -> Severity | None:
        """OK, WARN or FAIL; None for the states that are no verdict on the job."""
        return _VERDICTS.get(self)

    @property
    def severity(self) -> Severity:
        """Its verdict; a running, never run or disabled job is no reason to worry."""
        return _VERDICTS.get(self, Severity.OK)

    @property
    def metric_code(self) -> Severity | None:
        """The ``pmjobsd_job_status`` value: its verdict (a running job's gauge shows its previous one)."""
        return self.verdict

    @classmethod
    def of_attempt(cls, status: Status, final: bool) -> JobState:
        """The state a job's newest attempt puts it in: a failure with a retry still to come only warns."""
        code = status.metric_code
        if code is None:  # still running (when the daemon does not know of it: another process's run-now)
            return cls.RUNNING
        if status.failed and not final:
            return cls.WARN
        return cls(code.name)  # the verdict named like its code

    @classmethod
    def severity_of(cls, value: str) -> Severity:
        """The severity of a state read from a document; a name this version does not know is a FAIL."""
        try:
            return cls(value).severity
        except ValueError:
            return Severity.FAIL


# The states that are a verdict on the job.
_VERDICTS = {JobState.OK: Severity.OK, JobState.WARN: Severity.WARN, JobState.FAIL: Severity.FAIL}


class Trigger(_Word):
    """Why an attempt ran."""

    SCHEDULE = "schedule"  # its cron slot came
    CATCH_UP = "catch_up"  # at start, for a slot missed while pmjobsd was down (or a first run)
    RETRY = "retry"  # a failed attempt of the same run is tried again
    MANUAL = "manual"  # ``run-now``: never retried

    @property
    def for_slot(self) -> bool:
        """True when the attempt ran for a cron slot (catch-up compares against those)."""
        return self in (Trigger.SCHEDULE, Trigger.CATCH_UP)


class Overlap(_Word):
    """What a due run does while the job's previous run is still running (setting ``overlap``)."""

    SKIP = "skip"
    QUEUE = "queue"  # one run waits for the running one
    ALLOW = "allow"  # runs alongside
