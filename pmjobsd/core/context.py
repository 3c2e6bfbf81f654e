"""The job interface (README, "Writing a job"): what a job receives and what it returns.

A job is ``def job(ctx: JobContext) -> JobResult | None``.  ``None`` means OK;
an exception means FAIL with the error recorded.  Built-in and user jobs use
exactly this interface.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pmjobsd.app.paths import AppPaths
from pmjobsd.core.outcomes import Status


@dataclass(frozen=True)
class JobResult:
    """What a run reports: a status, a one-line summary without secrets, details.

    ``metrics`` holds the job's own numbers (e.g. ``{"prefixes_refreshed": 12}``),
    kept in the run history and exported as metrics: named ones for those the
    job's ``JobSpec.metrics`` declares, ``pmjobsd_job_result_value`` for all.
    """

    status: Status = Status.OK
    summary: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def ok(cls, summary: str = "", **kw: Any) -> JobResult:
        return cls(Status.OK, summary, **kw)

    @classmethod
    def warn(cls, summary: str, **kw: Any) -> JobResult:
        return cls(Status.WARN, summary, **kw)

    @classmethod
    def fail(cls, summary: str, **kw: Any) -> JobResult:
        return cls(Status.FAIL, summary, **kw)


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.check_cancelled` once the run must stop."""


class JobFenced(JobCancelled):
    """Raised by :meth:`JobContext.check_fence`: another member claimed this job since; do not commit."""


@dataclass(frozen=True)
class Notice:
    """A user-facing message from a job (e.g. the expiry digest).

    ``private_body`` may name websites: it is shown only by local desktop sinks
    and only when the job allows it; every other sink gets ``body``.
    """

    title: str
    body: str
    private_body: str | None = None
    urgency: str = "normal"  # "low" | "normal" | "critical"


@dataclass
class JobContext:
    """Everything one run may use.  Jobs must check :attr:`cancelled` between steps."""

    job_name: str
    run_id: str
    attempt: int
    options: Any
    paths: AppPaths
    log: EventLogger  # bound to job, run_id and attempt
    deadline: float  # time.monotonic() value after which the run is timed out
    cancel_event: threading.Event = field(default_factory=threading.Event)
    app_settings: Mapping[str, Any] = field(default_factory=dict)
    hash_entry_id: Callable[[Any], str] = lambda entry_id: ""
    notifier: Callable[[Notice], None] = lambda notice: None
    progress_callback: Callable[[float | None, str], None] = lambda fraction, message: None
    slot: str | None = None  # the cron slot this run serves (UTC ISO 8601); None for a manual run
    fencing_token: int | None = None  # a vault job's claim token with jobs.coordination (docs/coordination.md)
    fence: Callable[[], bool] = lambda: True  # is fencing_token still the job's newest? (the coordinator's)

    @property
    def cancelled(self) -> bool:
        """True once the run timed out or the daemon is stopping."""
        return self.cancel_event.is_set()

    def time_left(self) -> float:
        """Seconds until the deadline (never negative); bound blocking calls by it."""
        return max(0.0, self.deadline - time.monotonic())

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the run must stop now."""
        if self.cancel_event.is_set():
            raise JobCancelled(f"{self.job_name} cancelled")

    def check_fence(self) -> None:
        """Raise :class:`JobFenced` when a newer claim of this job exists; call it just before the atomic rename.

        Without coordination, and for device jobs, it never raises.  What the check
        cannot close (the moment between it and the rename) is in docs/coordination.md.
        """
        if self.fencing_token is not None and not self.fence():
            raise JobFenced(f"{self.job_name}: token {self.fencing_token} is no longer the newest; nothing committed")

    def progress(self, fraction: float | None = None, message: str = "") -> None:
        """Report progress (0.0–1.0) with a short message without secrets."""
        self.progress_callback(fraction, message)

    def notify(self, notice: Notice) -> None:
        """Send a user-facing notice through the configured alert sinks."""
        self.notifier(notice)

    @property
    def state_dir(self):
        """This job's private folder for its own bookkeeping (created on demand)."""
        from pmjobsd.system.files import ensure_private_dir

        return ensure_private_dir(self.paths.job_state_dir(self.job_name))


if TYPE_CHECKING:  # annotations only; jobs.log's formatter is the daemon's to load
    from pmjobsd.observe.joblog import EventLogger
