"""Declaration of the built-in job ``log_rotation``: defaults and options (run by :mod:`pmjobsd.jobs.logs.log_rotation`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from cronsim import CronSim, CronSimError

from pmjobsd.api import ByteSize, JobSpec, Meta, Overlap, PathRule, Struct, after

DEFAULT_MAX_SIZE = 50_000_000


def _cron_readable(value: str) -> str:
    try:
        CronSim(value, datetime(2026, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"{exc}; expected 5 cron fields such as '30 3 * * 0'") from None
    return value


class LogRotationOptions(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    files: Annotated[list[str], Meta(description="extra log files; relative names are in the log folder")] = []
    min_size: Annotated[ByteSize, Meta(ge=1, description="rotate only files at least this big, e.g. 1, '10MB'")] = 1
    compress_after_days: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(description="gzip archives older than this; default: jobs.retention.compress_after_days"),
    ] = None
    max_size: Annotated[
        Annotated[ByteSize, Meta(ge=1)] | None,
        Meta(description="rotate a log as soon as it is this big, e.g. '50MB'; null: never"),
    ] = DEFAULT_MAX_SIZE
    every: Annotated[
        str,
        after(_cron_readable),
        Meta(description="cron: rotate every log of min_size once a slot of this has passed"),
    ] = "30 3 * * 0"


JOB = JobSpec(
    name="log_rotation",
    func="pmjobsd.jobs.logs.log_rotation:run",
    description="Rotate the app's log and jobs.log (rename or copy-truncate) and gzip old archives",
    defaults={"cron": "*/5 * * * *", "timeout": 3600, "retries": 1, "overlap": Overlap.SKIP, "catch_up": True},
    options_model=LogRotationOptions,
    run_at_first_start=False,
    path_options={"files": PathRule.INSIDE_APP},
)
