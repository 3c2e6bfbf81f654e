"""Check of the jobs: the latest result of each, from the daemon or the run history."""

from __future__ import annotations

from pmjobsd.core.outcomes import JobState, Status
from pmjobsd.core.privacy import scrub_text
from pmjobsd.diagnostics.doctor.env import Check, DoctorEnv, current_status, fail, ok, shell_quote


def check_jobs(env: DoctorEnv) -> list[Check]:
    """The latest result of every job, from the daemon or the run history."""
    checks = []
    for job in current_status(env).get("jobs", []):
        name, state = job["name"], job["status"]
        last = job.get("last_run") or {}
        if job.get("config_errors"):
            checks.append(
                fail(
                    f"job.{name}",
                    "not scheduled: " + scrub_text("; ".join(job["config_errors"])),
                    f"fix jobs.definitions.{name} in {shell_quote(env.loaded.source)}, then: pmjobsd config validate",
                )
            )
            continue
        if state == JobState.NEVER_RUN:
            checks.append(ok(f"job.{name}", f"never run yet; next run {job.get('next_run') or '-'}"))
            continue
        if state == JobState.DISABLED:
            checks.append(ok(f"job.{name}", "disabled"))
            continue
        summary = scrub_text(last.get("summary") or "")
        message = f"{last.get('status', state)} at {last.get('started_at')}" + (f": {summary}" if summary else "")
        if job.get("consecutive_failures"):
            message += f" ({job['consecutive_failures']} failures in a row)"
        status = Status.of_severity(JobState.severity_of(state))
        hint = (
            ""
            if status is Status.OK
            else (
                f"details: grep {last.get('run_id')} {shell_quote(env.paths.jobs_log_path)}; after fixing: pmjobsd run-now {name} --wait"
            )
        )
        checks.append(Check(f"job.{name}", status, message, hint))
    return checks
