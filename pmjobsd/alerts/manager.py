"""AlertManager: the run observer that turns run outcomes and notices into messages.

Rules (per job, across daemon restarts through :class:`AlertState`):

* a *final* failed outcome (FAIL, TIMEOUT) of a job not yet announced: an
  ``alert`` to the primary sinks (desktop and ``alerts.targets``);
* while it keeps failing: nothing, unless ``alerts.repeat_after`` has passed
  since the last announcement (then a ``repeat``);
* once ``consecutive_failures >= escalate_after``: one ``escalation`` to
  ``alerts.escalation_targets``;
* the first final run that succeeded (OK, WARN) after an announced failure:
  one ``resolved`` to whoever was told about the failure (an inconclusive
  INTERRUPTED says nothing either way);
* ``notice(...)``: a job's user-facing message to the primary sinks.

Messages carry job, status, summary, run_id, host and time only (docs/architecture.md, "Privacy"):
never the run's error text.  A run that raised has no summary of its own (the runner's is the exception's
text, which may quote a URL, a header or a key), so its alert says which exception it was and where the
error is; a summary the job wrote passes ``scrub_text``.  All text passes ``escape_control``: an alert is
one line per field, whatever control characters the job's words held.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pmjobsd.alerts.base import Message, Sink
from pmjobsd.alerts.delivery import SinkWorker, log_result
from pmjobsd.alerts.state import FILE_NAME, AlertState
from pmjobsd.alerts.targets import SinkPlan, build_sinks
from pmjobsd.app.paths import AppPaths
from pmjobsd.core.context import Notice
from pmjobsd.core.observers import NullObserver, RunRecord
from pmjobsd.core.outcomes import Status
from pmjobsd.core.privacy import escape_control, safe_text
from pmjobsd.core.settings import Alerts
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.observe.joblog import EventLogger

MAX_SUMMARY = 300
_EXCEPTION_NAME = re.compile(r"[A-Za-z_][\w.]*")


def alert_summary(record: RunRecord) -> str:
    """What an alert says about the run: the job's own summary, scrubbed, or -- when it raised -- the
    exception's type only.  The error text stays in jobs.log and the run history."""
    if record.error:
        name = record.error.split(":", 1)[0].strip()
        kind = name if _EXCEPTION_NAME.fullmatch(name) else "an exception"
        return f"the job raised {kind}; its error is in jobs.log"
    return safe_text(record.summary or "")[:MAX_SUMMARY]


class AlertManager(NullObserver):
    """Implements :class:`pmjobsd.core.observers.RunObserver`; every method returns at once."""

    def __init__(
        self,
        alerts: Alerts,
        paths: AppPaths,
        log: EventLogger,
        host: str | None = None,
        on_delivery: Callable[[str, str], None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sinks: SinkPlan | None = None,
        sink_timeout: float = 10.0,
        queue_size: int = 32,
        attempts: int = 3,
        retry_delay: float = 2.0,
    ):
        self._alerts = alerts
        self._log = log
        self._host = host or socket.gethostname()
        self._on_delivery = on_delivery
        self._clock = clock
        self._lock = threading.Lock()
        self._state = AlertState(paths.state_dir / FILE_NAME)
        if self._state.problem:
            log.warning("alert.state_invalid", error=self._state.problem)
        self._log_result = log_result(log)
        self._sink_timeout = sink_timeout
        self._queue_size, self._attempts, self._retry_delay = queue_size, attempts, retry_delay
        self._primary, self._escalation = self._start_workers(
            sinks if sinks is not None else build_sinks(alerts, timeout=sink_timeout)
        )

    def _start_workers(self, plan: SinkPlan) -> tuple[list[SinkWorker], list[SinkWorker]]:
        self._report_plan(plan)
        return [self._worker(sink) for sink in plan.primary], [self._worker(sink) for sink in plan.escalation]

    def _worker(self, sink: Sink) -> SinkWorker:
        return SinkWorker(
            sink, self._result, queue_size=self._queue_size, attempts=self._attempts, retry_delay=self._retry_delay
        )

    def reconfigure(self, alerts: Alerts) -> None:
        """Use new alert settings: new sinks, the same announcement state.

        Rebuilding the manager instead would split what was announced between two
        objects for runs that finish during the swap.  The old sinks drain on a
        helper thread, so a stuck sink never holds up the caller (the scheduler loop).
        """
        plan = build_sinks(alerts, timeout=self._sink_timeout)
        with self._lock:
            self._alerts = alerts
            old = self._primary + self._escalation
            self._primary, self._escalation = self._start_workers(plan)
        threading.Thread(target=self._close_workers, args=(old, 5.0), name="pmjobsd-alert-close", daemon=True).start()

    # --- start-up report ---------------------------------------------------
    def _report_plan(self, plan: SinkPlan) -> None:
        if plan.remote_disabled:
            self._log.warning(
                "alert.remote_disabled",
                targets=plan.remote_disabled,
                reason="remote alert targets are configured but alerts.allow_remote is false",
            )
        for problem in plan.problems:
            self._log.warning(
                "alert.target_invalid", setting=problem.setting, scheme=problem.scheme, error=problem.reason
            )
        if plan.desktop_unavailable and self._alerts.desktop:
            self._log.info("alert.desktop_unavailable", reason=plan.desktop_unavailable)
        self._log.info(
            "alert.configured",
            sinks=[sink.kind for sink in plan.primary],
            escalation_sinks=[sink.kind for sink in plan.escalation],
        )

    @property
    def sink_kinds(self) -> list[str]:
        """Kinds of the active primary sinks (for ``doctor`` and status)."""
        return [worker.sink.kind for worker in self._primary]

    # --- RunObserver -------------------------------------------------------
    def run_finished(self, record: RunRecord) -> None:
        """Queue whatever this final outcome calls for; never raises into the runner."""
        try:
            self._on_finished(record)
        except Exception as exc:
            self._log.error("alert.error", job=record.job, run_id=record.run_id, error=f"{type(exc).__name__}: {exc}")

    def notice(self, job: str, run_id: str, notice: Notice) -> None:
        """Deliver a job's notice to the primary sinks (desktop gets ``private_body``)."""
        fields = self._base_fields(job, run_id)
        # Like alert summaries, a job's own words are scrubbed (URLs with tokens, addresses) and capped;
        # only private_body, shown by the local desktop alone, is passed as the job wrote it.
        message = Message(
            "notice",
            safe_text(notice.title)[:MAX_SUMMARY],
            # The body may have lines; each line is escaped on its own.
            "\n".join(safe_text(line) for line in notice.body.splitlines())[: 4 * MAX_SUMMARY],
            fields,
            private_body=notice.private_body,
            urgency=notice.urgency,
        )
        self._submit(self._primary, message)

    def close(self, timeout: float = 5.0) -> None:
        """Flush queued messages for up to ``timeout`` seconds, then stop (threads are daemons)."""
        self._close_workers(self._primary + self._escalation, timeout)

    def _close_workers(self, workers: list[SinkWorker], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in workers:
            if not worker.close(deadline):
                self._log.warning("alert.close_timeout", sink=worker.sink.kind)

    # --- rules --------------------------------------------------------------
    def _on_finished(self, record: RunRecord) -> None:
        status = record.status
        if not record.final or not status.conclusive:  # INTERRUPTED says nothing about the job's health
            return
        now = self._clock()
        with self._lock:
            announced = self._state.get(record.job)
            if status.failed:
                self._on_failure(record, status, announced, now)
            elif announced is not None:
                self._state.drop(record.job)
                message = self._message("resolved", record, status, now, previous=announced.get("status"))
                self._submit(self._primary, message)
                if announced.get("escalated"):
                    self._submit(self._escalation, message)

    def _on_failure(self, record: RunRecord, status: Status, announced: dict | None, now: float) -> None:
        escalate = record.consecutive_failures >= self._alerts.escalate_after
        repeat_after = self._alerts.repeat_after
        if announced is None:
            self._submit(self._primary, self._message("alert", record, status, now))
            entry = {"status": status.value, "run_id": record.run_id, "announced_at": now, "escalated": False}
        else:
            entry = dict(announced, status=status.value)
            if repeat_after is not None and now - float(announced.get("announced_at", 0)) >= repeat_after:
                repeat = self._message("repeat", record, status, now)
                self._submit(self._primary, repeat)
                if announced.get("escalated"):
                    self._submit(self._escalation, repeat)
                entry.update(run_id=record.run_id, announced_at=now)
        if escalate and not entry.get("escalated"):
            self._submit(self._escalation, self._message("escalation", record, status, now))
            entry["escalated"] = True
        if entry != announced:
            self._state.put(record.job, entry)

    # --- rendering ------------------------------------------------------------
    def _base_fields(self, job: str, run_id: str, now: float | None = None) -> dict[str, Any]:
        when = self._clock() if now is None else now
        return {"job": job, "run_id": run_id, "host": self._host, "time": utc_iso(when)}

    def _message(
        self, kind: str, record: RunRecord, status: Status, now: float, previous: str | None = None
    ) -> Message:
        summary = alert_summary(record)
        fields = {
            **self._base_fields(record.job, record.run_id, now),
            "status": status.value,
            "summary": summary,
            "consecutive_failures": record.consecutive_failures,
        }
        if previous:
            fields["previous_status"] = previous
        job, streak = record.job, record.consecutive_failures
        titles = {
            "alert": (f"pmjobsd: {job} {status.value}", "normal"),
            "repeat": (f"pmjobsd: {job} still failing ({streak} in a row)", "normal"),
            "escalation": (f"pmjobsd: {job} failed {streak} times in a row", "critical"),
            "resolved": (f"pmjobsd: {job} recovered ({status.value})", "low"),
        }
        title, urgency = titles[kind]
        title = escape_control(title)
        body = f"{summary or status.value}\nrun {record.run_id} on {self._host} at {fields['time']}"
        return Message(kind, title, body, fields, urgency=urgency)

    # --- delivery ---------------------------------------------------------------
    def _submit(self, workers: list[SinkWorker], message: Message) -> None:
        for worker in workers:
            worker.submit(message)

    def _result(self, sink: Sink, message: Message, outcome: str, attempts: int, reason: str | None) -> None:
        self._log_result(sink, message, outcome, attempts, reason)
        if self._on_delivery is not None:
            try:
                self._on_delivery(sink.kind, outcome)
            except Exception:
                pass
