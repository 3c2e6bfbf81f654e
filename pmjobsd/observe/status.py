"""The status document (``status --json``, docs/metrics.md) and its exit code.

Built by the daemon (with live next-run times and running attempts) or, when
no daemon runs, by the CLI straight from the settings and the run history.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmjobsd import __version__
from pmjobsd.core.context import Status
from pmjobsd.core.history import RunHistory
from pmjobsd.core.settings import LoadedSettings, ResolvedJob

if TYPE_CHECKING:  # pragma: no cover
    from pmjobsd.core.runner import Runner
    from pmjobsd.core.scheduler import Scheduler

RECENT_RUNS = 20  # attempts per job in the document's "recent" list (the status page's marks)
SEVERITY = {"OK": 0, "RUNNING": 0, "NEVER_RUN": 0, "DISABLED": 0, "WARN": 1, "FAIL": 2}
EXIT_NAMES = {0: "OK", 1: "WARN", 2: "FAIL"}


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (``2026-11-28T09:00:00.123+00:00``)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def _job_status(enabled: bool, running: bool, last: Mapping[str, Any] | None) -> str:
    if not enabled:
        return "DISABLED"
    if running:
        return "RUNNING"
    if last is None:
        return "NEVER_RUN"
    status = last["status"]
    if status in (Status.FAIL.value, Status.TIMEOUT.value):
        # A failed attempt with a retry still to come is a warning, not yet a failure.
        return "FAIL" if last["final"] else "WARN"
    if status == Status.INTERRUPTED.value:
        return "WARN"
    if status == Status.RUNNING.value:  # written by another live process (a run-now)
        return "RUNNING"
    return status


def _last_run(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "run_id": row["run_id"],
        "status": row["status"],
        "trigger": row["trigger"],
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "duration_ms": row["duration_ms"],
        "attempt": row["attempt"],
        "summary": row["summary"],
    }


def _recent(history: RunHistory, name: str) -> list[dict[str, Any]]:
    """The newest attempts of ``name``, newest first: what the status page draws as marks."""
    return [
        {
            "status": row["status"],
            "started_at": iso(row["started_at"]),
            "duration_ms": row["duration_ms"],
            "final": row["final"],
        }
        for row in history.recent(name, limit=RECENT_RUNS)
    ]


def build_status(
    loaded: LoadedSettings,
    history: RunHistory,
    *,
    daemon: Mapping[str, Any],
    scheduler: Scheduler | None = None,
    runner: Runner | None = None,
    jobs: Mapping[str, ResolvedJob] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The status document; ``scheduler``/``runner``/``jobs`` are given by a live daemon.

    ``jobs`` are the jobs the daemon actually runs (default: those of ``loaded``):
    a job whose new definition is invalid keeps running with its last good one.
    """
    now = now or datetime.now(timezone.utc)
    effective = loaded.jobs if jobs is None else jobs
    last_runs = history.last_runs()
    last_successes = history.last_success_times()
    running = {active.record.job: active for active in runner.running()} if runner else {}
    entries = []
    for name in sorted(set(effective) | set(loaded.job_errors)):
        job = effective.get(name)
        if job is None:
            entries.append(
                {
                    "name": name,
                    "enabled": False,
                    "cron": None,
                    "status": "FAIL",
                    "next_run": None,
                    "last_run": _last_run(last_runs.get(name)),
                    "consecutive_failures": history.consecutive_failures(name),
                    "config_errors": [str(issue) for issue in loaded.job_errors[name]],
                    "last_success_at": iso(last_successes.get(name)),
                    "recent": _recent(history, name),
                }
            )
            continue
        enabled = job.definition.enabled
        next_run = None
        if enabled:
            if scheduler is not None:
                next_run = scheduler.next_run(name)
            elif not daemon.get("running"):
                next_run = job.schedule.next_after(now)
        entry: dict[str, Any] = {
            "name": name,
            "enabled": enabled,
            "cron": job.definition.cron,
            "status": _job_status(enabled, name in running, last_runs.get(name)),
            "next_run": next_run.astimezone(job.schedule.tz).isoformat() if next_run else None,
            "last_run": _last_run(last_runs.get(name)),
            "consecutive_failures": history.consecutive_failures(name),
            "description": job.description,
            "last_success_at": iso(last_successes.get(name)),
            "recent": _recent(history, name),
        }
        if name in running:
            fraction, message = running[name].progress or (None, "")
            entry["running"] = {
                "run_id": running[name].record.run_id,
                "attempt": running[name].record.attempt,
                "started_at": iso(running[name].record.started_at),
                "progress": fraction,
                "progress_message": message,
            }
        if runner is not None and runner.abandoned_count(name):
            entry["abandoned_threads"] = runner.abandoned_count(name)
        if name in loaded.job_errors:  # running with its last good definition
            entry["config_errors"] = [str(issue) for issue in loaded.job_errors[name]]
        entries.append(entry)
    document = {
        "generated_at": now.isoformat(timespec="seconds"),
        "daemon": dict(daemon),
        "settings": {
            "path": str(loaded.source),
            "valid": loaded.ok,
            "issues": [str(issue) for issue in loaded.issues],
        },
        "jobs": entries,
    }
    document["status"] = EXIT_NAMES[exit_code(document)]
    return document


def exit_code(document: Mapping[str, Any]) -> int:
    """0 when all is OK, 1 on any WARN, 2 on any FAIL (monitoring-plugin convention)."""
    worst = max((SEVERITY.get(job["status"], 2) for job in document["jobs"]), default=0)
    daemon = document["daemon"]
    if daemon.get("responding") is False:  # the lock is held but nobody answers: wedged
        return 2
    if not daemon.get("running") or daemon.get("abandoned_threads"):
        worst = max(worst, 1)
    if not document["settings"]["valid"]:
        worst = max(worst, 1)
    return worst


def offline_status(history_path: Path, loaded: LoadedSettings, pid: int | None) -> dict[str, Any]:
    """The status document when no daemon answers, from the run history.

    ``pid`` is the holder of the daemon's lock: a live process that does not
    answer on the control socket is reported as running but not responding (FAIL).
    """
    daemon = {"running": False, "pid": pid, "version": __version__, "started_at": None}
    if pid is not None:
        daemon.update(running=True, responding=False)
    with RunHistory(history_path, create=False) as history:
        return build_status(loaded, history, daemon=daemon)


def render_text(document: Mapping[str, Any]) -> str:
    """A table for people: one line per job, then the daemon and settings state."""
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
    header = f"{'JOB':<26} {'STATUS':<9} {'LAST RUN':<25} {'NEXT RUN':<25} SUMMARY"
    lines += ["", header]
    for job in document["jobs"]:
        last = job.get("last_run") or {}
        summary = "; ".join(job.get("config_errors", [])) or last.get("summary") or ""
        lines.append(
            f"{job['name']:<26} {job['status']:<9} {(last.get('started_at') or '-')[:19]:<25} "
            f"{(job.get('next_run') or '-')[:25]:<25} {summary}"
        )
    for issue in document["settings"]["issues"]:
        lines.append(f"settings: {issue}")
    lines.append(f"\noverall: {document['status']}")
    return "\n".join(lines)
