"""The implementation named by ``tests.support.lazy_builtin_spec.JOB``: not imported until it runs."""

from pmjobsd.api import JobContext, JobResult


def run(ctx: JobContext) -> JobResult:
    return JobResult.ok("lazy ran")
