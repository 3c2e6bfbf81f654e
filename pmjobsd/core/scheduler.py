"""When each job runs next: a heap of due items, no threads, an injectable clock.

Rules, named after the schedulers people know:
- *coalesce* — when slots were passed (suspend, clock jump, a long stop) the
  job runs once for the newest of them, never a burst.
- *catch_up* (systemd ``Persistent=``, anacron) — at start, a job whose last
  slot was missed while the daemon was down, or that has never run, runs once.
- *jitter* (systemd ``RandomizedDelaySec=``) — a random delay added to each
  scheduled start; the slot recorded stays the cron time.
Retries sit in the same heap, so waiting for a retry occupies no worker.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pmjobsd.core.outcomes import Trigger
from pmjobsd.core.settings import ResolvedJob

# An item due within this many seconds counts as due: timers may return a hair
# early and datetimes keep only microseconds; better than a zero-length sleep.
EARLY_TOLERANCE = 0.001


class Clock:
    """Wall time (for cron) and monotonic time (for deadlines); tests inject their own."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(order=True)
class DueItem:
    """A run to start at ``when`` (epoch seconds)."""

    when: float
    seq: int
    job: str = field(compare=False)
    trigger: Trigger = field(compare=False)  # never MANUAL: run-now does not go through the scheduler
    slot: datetime | None = field(compare=False, default=None)
    attempt: int = field(compare=False, default=1)
    run_id: str | None = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)


@dataclass(frozen=True)
class CatchUp:
    job: str
    missed_slot: datetime | None  # None: the job never ran
    last_slot: datetime | None


def _same_timing(old: ResolvedJob, new: ResolvedJob) -> bool:
    """Would ``new`` fire at the same moments as ``old``?"""
    a, b = old.definition, new.definition
    return (
        a.enabled
        and b.enabled
        and a.cron == b.cron
        and a.jitter == b.jitter
        and str(old.schedule.tz) == str(new.schedule.tz)
    )


class Scheduler:
    """Keeps the next due item of every enabled job, plus pending retries."""

    def __init__(self, clock: Clock | None = None, rng: random.Random | None = None):
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self._heap: list[DueItem] = []
        self._next_scheduled: dict[str, DueItem] = {}
        self._retries: dict[str, list[DueItem]] = {}
        self._jobs: Mapping[str, ResolvedJob] = {}
        self._seq = itertools.count()
        self._unscheduled: list[tuple[DueItem, datetime]] = []  # popped, next slot not computed yet

    # --- loading ------------------------------------------------------------
    def load(
        self,
        jobs: Mapping[str, ResolvedJob],
        last_slots: Mapping[str, datetime] | None = None,
        *,
        catch_up: bool = True,
    ) -> list[CatchUp]:
        """Schedule ``jobs`` from now; with ``catch_up``, queue one run for missed or never-run jobs.

        Pending retries of jobs that are still enabled are kept (a reload
        does not forget a retry); everything else is recomputed.
        """
        now = self.clock.now()
        previous, self._jobs = self._jobs, jobs
        # A job whose timing did not change keeps its pending slot: a reload (the app rewrites
        # settings.json on every change) just as a slot falls due, or during its jitter delay,
        # must not push it to the next slot.
        kept = {
            name: item
            for name, item in self._next_scheduled.items()
            if name in jobs and name in previous and _same_timing(previous[name], jobs[name])
        }
        for name, item in self._next_scheduled.items():
            if name not in kept:
                item.cancelled = True
        self._next_scheduled = kept
        for name in list(self._retries):
            if name not in jobs or not jobs[name].definition.enabled:
                for item in self._retries.pop(name):
                    item.cancelled = True
        caught_up: list[CatchUp] = []
        for name, job in jobs.items():
            if not job.definition.enabled:
                continue
            if name not in kept:
                self._schedule_next(job, now)
            if catch_up and job.definition.catch_up:
                last = (last_slots or {}).get(name)
                missed = job.schedule.previous_at_or_before(now)
                if (last is None and job.run_at_first_start) or (last is not None and missed > last):
                    caught_up.append(CatchUp(name, missed if last is not None else None, last))
                    self._push(DueItem(now.timestamp(), next(self._seq), name, Trigger.CATCH_UP, missed))
        self._compact()
        return caught_up

    def _schedule_next(self, job: ResolvedJob, after: datetime) -> None:
        slot = job.schedule.next_after(after)
        delay = self.rng.uniform(0, job.definition.jitter) if job.definition.jitter else 0.0
        item = DueItem(slot.timestamp() + delay, next(self._seq), job.name, Trigger.SCHEDULE, slot)
        self._next_scheduled[job.name] = item
        self._push(item)

    def _push(self, item: DueItem) -> None:
        heapq.heappush(self._heap, item)

    def _compact(self) -> None:
        # Reloads leave cancelled items behind; rebuild once they dominate.
        if len(self._heap) > 2 * (len(self._next_scheduled) + sum(map(len, self._retries.values()))) + 16:
            self._heap = [item for item in self._heap if not item.cancelled]
            heapq.heapify(self._heap)

    # --- running ------------------------------------------------------------
    def add_retry(self, job: str, run_id: str, attempt: int, slot: datetime | None, delay: float) -> float:
        """Queue attempt ``attempt`` of ``run_id`` after ``delay`` seconds; return when (epoch)."""
        when = self.clock.now().timestamp() + delay
        item = DueItem(when, next(self._seq), job, Trigger.RETRY, slot, attempt, run_id)
        self._retries.setdefault(job, []).append(item)
        self._push(item)
        return when

    def pop_due(self, reschedule: bool = True) -> list[DueItem]:
        """Remove and return the items due now; reschedule each job from its slot or now, whichever is later.

        With ``reschedule=False`` the next slots (a cron computation each, the
        costly part) wait for :meth:`reschedule`, so that the runs due now can
        start first; until then :meth:`next_wake` does not know those jobs, and
        :meth:`reschedule_by` says when it must be called at the latest.
        """
        now = self.clock.now()
        now_ts = now.timestamp() + EARLY_TOLERANCE
        due: list[DueItem] = []
        while self._heap and self._heap[0].when <= now_ts:
            item = heapq.heappop(self._heap)
            if item.cancelled:
                continue
            if item.trigger is Trigger.SCHEDULE:
                if self._next_scheduled.get(item.job) is not item:
                    continue
                self._unscheduled.append((item, now))
            elif item.trigger is Trigger.RETRY:
                self._retries[item.job].remove(item)
                if not self._retries[item.job]:
                    del self._retries[item.job]
            due.append(item)
        if reschedule:
            self.reschedule()
        return due

    def reschedule(self) -> None:
        """Schedule the next slot of every job :meth:`pop_due` left unscheduled."""
        pending, self._unscheduled = self._unscheduled, []
        for item, popped_at in pending:
            if self._next_scheduled.get(item.job) is not item:
                continue  # a reload replaced or removed the job meanwhile
            # Coalesce: slots passed while we slept (suspend, clock jump) are not replayed.
            slot = item.slot or popped_at  # a scheduled item always has its slot
            self._schedule_next(self._jobs[item.job], max(popped_at, slot))

    def reschedule_by(self) -> float | None:
        """Epoch seconds by which :meth:`reschedule` must run, or None when nothing waits for it.

        Cron's finest step is a second, so no job's next slot comes sooner than one
        second after the slot it just ran for; half of that is kept as a margin.
        """
        if not self._unscheduled:
            return None
        return min((item.slot or popped_at).timestamp() for item, popped_at in self._unscheduled) + 0.5

    def next_wake(self) -> float | None:
        """Epoch seconds of the earliest pending item, or None when nothing is scheduled."""
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def next_run(self, job: str) -> datetime | None:
        """The next scheduled slot of ``job`` (a pending retry, if sooner, counts)."""
        candidates = [item for item in self._retries.get(job, []) if not item.cancelled]
        scheduled = self._next_scheduled.get(job)
        if scheduled is not None:
            candidates.append(scheduled)
        if not candidates:
            return None
        item = min(candidates)
        return datetime.fromtimestamp(item.when, timezone.utc)

    def pending_retries(self, job: str) -> int:
        return len(self._retries.get(job, []))

    def jobs(self) -> Iterable[str]:
        return self._jobs.keys()
