"""Built-in job ``log_purge``: delete log archives and run history past their retention.

Options ``log_days`` / ``history_days`` default to the settings
``jobs.retention.log_days`` / ``history_days``; ``files`` adds logs whose
archives are purged (the ``log_rotation`` job's ``files`` are included).

The history is purged in short batches until :data:`STOP_MARGIN` seconds before the run's
deadline (or until it is cancelled): a backlog larger than one run can delete (a year of a
1-second job after lowering ``history_days``) is finished by the next runs, each a clean OK.
"""

from __future__ import annotations

from pmjobsd.api import JobContext, JobResult, validate
from pmjobsd.jobs.logs.archives import log_files
from pmjobsd.jobs.logs.log_purge_spec import LogPurgeOptions
from pmjobsd.jobs.logs.retention import purge, retention_settings

STOP_MARGIN = 10.0  # seconds before the deadline the history purge stops (its last batch, the report)


def run(ctx: JobContext) -> JobResult:
    options = ctx.options if isinstance(ctx.options, LogPurgeOptions) else validate(LogPurgeOptions, ctx.options or {})
    retention = retention_settings(ctx.app_settings)
    report = purge(
        ctx.paths,
        options.log_days or retention.log_days,
        options.history_days or retention.history_days,
        files=log_files(ctx.paths, ctx.app_settings, options.files),
        stop=lambda: ctx.cancelled or ctx.time_left() < STOP_MARGIN,
    )
    for path, size in report.removed_archives:
        ctx.log.info("log.archive_removed", path=str(path), bytes=size)
    for path, message in report.errors:
        ctx.log.warning("log.purge_failed", path=str(path), error=message)
    metrics = {
        "archives_removed": len(report.removed_archives),
        "bytes_freed": report.bytes_freed,
        "history_runs_removed": report.history_runs_removed or 0,
        "history_complete": 1 if report.history_complete else 0,
        "errors": len(report.errors),
    }
    if report.errors:
        return JobResult.warn(report.summary(), details=report.as_dict(), metrics=metrics)
    return JobResult.ok(report.summary(), details=report.as_dict(), metrics=metrics)
