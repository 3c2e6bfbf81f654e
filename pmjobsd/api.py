"""The public interface for job authors: everything a job needs, and nothing else.

A job is ``def job(ctx: JobContext) -> JobResult | None``; built-in jobs
(``pmjobsd/jobs/``) import only from here and from the helpers of their own
sub-package, exactly like a user's ``"callable": "module:function"`` job.  An options
model is a ``BaseModel`` with ``Field``s (``pmjobsd.core.model``: pydantic's spelling,
validated with pydantic's words, without importing pydantic).
"""

from pmjobsd.core.context import JobCancelled, JobContext, JobResult, Notice
from pmjobsd.core.model import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator
from pmjobsd.core.outcomes import Overlap, Status
from pmjobsd.core.registry import JobMetric, JobSpec, MetricKind, PathRule
from pmjobsd.core.settings import Duration

__all__ = [
    "BaseModel",
    "ByteSize",
    "ConfigDict",
    "Duration",
    "Field",
    "JobCancelled",
    "JobContext",
    "JobMetric",
    "JobResult",
    "JobSpec",
    "MetricKind",
    "Notice",
    "Overlap",
    "PathRule",
    "Status",
    "ValidationError",
    "field_validator",
]
