"""Declaration of the built-in job ``log_purge``: defaults and options (run by :mod:`pmjobsd.jobs.logs.log_purge`)."""

from __future__ import annotations

from typing import Annotated

from pmjobsd.api import JobSpec, Meta, Overlap, Struct


class LogPurgeOptions(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    log_days: Annotated[Annotated[int, Meta(ge=1)] | None, Meta(description="default: jobs.retention.log_days")] = None
    history_days: Annotated[
        Annotated[int, Meta(ge=1)] | None, Meta(description="default: jobs.retention.history_days")
    ] = None
    files: Annotated[list[str], Meta(description="extra logs whose archives are purged")] = []


JOB = JobSpec(
    name="log_purge",
    func="pmjobsd.jobs.logs.log_purge:run",
    description="Delete log archives and run history older than the retention settings",
    defaults={"cron": "@daily", "timeout": 900, "retries": 1, "overlap": Overlap.SKIP, "catch_up": True},
    options_model=LogPurgeOptions,
)
