"""The public interface for job authors: everything a job needs, and nothing else.

A job is ``def job(ctx: JobContext) -> JobResult | None``; built-in jobs
(``pmjobsd/jobs/``) import only from here and from the helpers of their own
sub-package, exactly like a user's ``"callable": "module:function"`` job.  An options
model is a ``msgspec.Struct`` (``Struct``) declared ``frozen=True, forbid_unknown_fields=True``,
its constraints and descriptions in ``Annotated[T, Meta(...)]``, with ``Duration``
(``"90s"``) and ``ByteSize`` (``"10MB"``), checks of one field in ``after(func)`` and checks
across fields in ``__post_init__``.  ``validate(Model, raw)`` reads JSON-shaped options and
raises ``ValidationError`` listing every problem.
"""

from msgspec import Meta, Struct

from pmjobsd.core.context import JobCancelled, JobContext, JobFenced, JobResult, Notice
from pmjobsd.core.outcomes import Overlap, Status
from pmjobsd.core.registry import JobMetric, JobSpec, MetricKind, PathRule
from pmjobsd.core.settings import ByteSize, Duration
from pmjobsd.core.validation import ValidationError, after, before, validate

__all__ = [
    "ByteSize",
    "Duration",
    "JobCancelled",
    "JobContext",
    "JobFenced",
    "JobMetric",
    "JobResult",
    "JobSpec",
    "Meta",
    "MetricKind",
    "Notice",
    "Overlap",
    "PathRule",
    "Status",
    "Struct",
    "ValidationError",
    "after",
    "before",
    "validate",
]
