"""What the daemon does for coordination: start the coordinator, and act on what it reports.

Kept here so that ``core/daemon.py`` needs one line to start it and one to stop it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pmjobsd.core.outcomes import Overlap, Status, Trigger

if TYPE_CHECKING:
    from pmjobsd.coord.claims import ClaimValue
    from pmjobsd.coord.coordinator import Coordinator
    from pmjobsd.core.daemon import Daemon
    from pmjobsd.core.settings import ResolvedJob

ENGINE_ALERT = "pmjobsd coordination"  # the alert (and its recovery) while vault runs are skipped


def start(daemon: Daemon) -> Coordinator:
    """The daemon's coordinator, connected (or reconnecting) and renewing; never raises for a dead engine."""
    from pmjobsd.coord.coordinator import Coordinator
    from pmjobsd.observe.joblog import EventLogger

    settings = daemon.loaded.settings.coordination
    assert settings is not None
    log = EventLogger("coordination")

    def take_over(job: ResolvedJob, slot: datetime) -> bool:
        """The holder of ``slot`` is gone and the job says retry: run the slot here (its claim decides).

        While the job runs here, the takeover waits behind that run (one queued, as overlap=queue
        does); False when it cannot even wait (asked again at the next tick).
        """
        from pmjobsd.core.runner import RunRequest

        current = daemon.jobs.get(job.name)
        if current is None or not current.definition.enabled:
            return True  # gone or disabled here: nothing to take over
        overlap = Overlap.QUEUE if current.definition.overlap is Overlap.SKIP else current.definition.overlap
        reason = daemon.runner.offer(RunRequest(current, Trigger.SCHEDULE, slot), overlap)
        if reason:
            log.info("job.skipped", job=job.name, slot=slot.isoformat(), reason=f"takeover not started: {reason}")
        daemon.wake()
        return reason is None

    def lost_skip(job: ResolvedJob, slot: datetime, holder: ClaimValue) -> None:
        summary = f"{holder.member} stopped before finishing this slot; not run again (on_holder_lost=skip)"
        daemon.runner.record_outcome(job, slot, Status.SKIPPED, summary, holder.member, holder.token)

    def engine_alert(down: bool, summary: str) -> None:
        record = daemon._daemon_record(ENGINE_ALERT, Status.FAIL if down else Status.OK, summary)
        daemon.alerts.run_finished(record)

    coordinator = Coordinator(
        settings,
        state=daemon.coordination,  # the group side's, so /metrics sees the claims too
        log=log,
        on_takeover=take_over,
        on_lost_skip=lost_skip,
        on_engine_alert=engine_alert,
    )
    coordinator.start()
    return coordinator
