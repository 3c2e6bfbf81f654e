"""What the runner tells the rest of the daemon about each run.

Metrics, alerts and the status page plug in as :class:`RunObserver`s.  The
runner calls them after history and log are written, catches and logs what
they raise, and never lets an observer hide or change the job's own outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pmjobsd.core.context import Notice
from pmjobsd.core.outcomes import Status, Trigger


@dataclass
class RunRecord:
    """One attempt of one run, as recorded in the history.

    ``final`` is True when no retry follows (the outcome alerts act on);
    ``consecutive_failures`` counts final failed outcomes in a row, this one
    included (an inconclusive one, INTERRUPTED, neither counts nor breaks the streak).
    """

    run_id: str
    job: str
    attempt: int
    trigger: Trigger
    slot: datetime | None
    started_at: float  # epoch seconds
    status: Status = Status.RUNNING
    finished_at: float | None = None
    summary: str = ""
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    final: bool = True
    consecutive_failures: int = 0
    given_up: bool = False  # told again when a dropped retry made this attempt final after all
    member: str | None = None  # with jobs.coordination, a vault job's: who ran the slot (SKIPPED: who did)
    token: int | None = None  # ...and that run's fencing token

    def __post_init__(self) -> None:
        # Accept the words themselves ("schedule", "OK"), as the history stores them.
        self.trigger, self.status = Trigger(self.trigger), Status(self.status)

    @property
    def duration_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int(round((self.finished_at - self.started_at) * 1000))


class RunObserver(Protocol):
    """Told about every run; must return quickly (hand slow work to its own thread)."""

    def run_started(self, record: RunRecord) -> None: ...

    def run_finished(self, record: RunRecord) -> None: ...

    def notice(self, job: str, run_id: str, notice: Notice) -> None: ...

    def close(self) -> None: ...


class NullObserver:
    """Observes nothing; a base for observers that care about some calls only."""

    def run_started(self, record: RunRecord) -> None:
        pass

    def run_finished(self, record: RunRecord) -> None:
        pass

    def notice(self, job: str, run_id: str, notice: Notice) -> None:
        pass

    def close(self) -> None:
        pass
