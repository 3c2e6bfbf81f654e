"""User jobs for the metrics and status page tests ("tests.support.web_jobs:NAME")."""

from __future__ import annotations

from pmjobsd.core.context import JobContext, JobResult


def counted(ctx: JobContext) -> JobResult:
    """Reports numbers, as the built-in jobs do, plus ones the exporter must drop."""
    return JobResult.ok("3 things counted", metrics={"things_counted": 3, "ratio": 0.5, "bad name!": 1, "text": "x"})


def alternating(ctx: JobContext) -> JobResult:
    """OK, WARN, FAIL in turn (by run count kept in the job's state folder), for a colourful history."""
    counter = ctx.state_dir / "count"
    count = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(count + 1))
    if count % 3 == 2:
        raise RuntimeError("every third run fails")
    if count % 3 == 1:
        return JobResult.warn("every second run warns")
    return JobResult.ok("fine this time")
