"""The public interface for job authors: everything a job needs, and nothing else.

A job is ``def job(ctx: JobContext) -> JobResult | None``; built-in jobs
(``pmjobsd/jobs/``) import only from here and from the helpers of their own
sub-package, exactly like a user's ``"callable": "module:function"`` job.
"""

from pmjobsd.core.context import JobCancelled, JobContext, JobFenced, JobResult, Notice
from pmjobsd.core.outcomes import Overlap, Status
from pmjobsd.core.registry import JobMetric, JobSpec, MetricKind, PathRule
from pmjobsd.core.settings import Duration

__all__ = [
    "Duration",
    "JobCancelled",
    "JobContext",
    "JobFenced",
    "JobMetric",
    "JobResult",
    "JobSpec",
    "MetricKind",
    "Notice",
    "Overlap",
    "PathRule",
    "Status",
]
