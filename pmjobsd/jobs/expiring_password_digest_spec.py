"""Declaration of the built-in job ``expiring_password_digest``: defaults, options and metrics.

Run by :mod:`pmjobsd.jobs.expiring_password_digest`.
"""

from __future__ import annotations

from typing import Annotated

from pmjobsd.api import Duration, JobMetric, JobSpec, Meta, Overlap, Struct


class DigestOptions(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of ``expiring_password_digest``."""

    window_days: Annotated[int, Meta(ge=1, le=3650, description="report entries expiring within this many days")] = 14
    urgent_days: Annotated[int, Meta(ge=0, le=3650, description="WARN when an entry expires within this many days")] = 7
    show_sites: Annotated[bool, Meta(description="name websites in the local desktop notification")] = True
    max_sites_listed: Annotated[int, Meta(ge=1, le=100, description="websites listed in the notification at most")] = 10
    lock_timeout: Annotated[Duration, Meta(description="how long to retry while the vault is locked")] = 10.0


JOB = JobSpec(
    name="expiring_password_digest",
    func="pmjobsd.jobs.expiring_password_digest:run",
    description="Notify about passwords that expired or expire soon (counts only outside the desktop)",
    defaults={
        "cron": "0 9 * * *",
        "timeout": 120.0,
        "retries": 2,
        "backoff": {"initial": 60.0, "factor": 2.0, "max": 900.0},
        "jitter": 0.0,
        "overlap": Overlap.SKIP,
        "catch_up": True,
        "scope": "vault",  # with jobs.coordination: once per slot for the whole group
        "on_holder_lost": "retry",  # idempotent: another machine may run a slot whose holder died
    },
    options_model=DigestOptions,
    tags=("vault",),
    metrics=(
        JobMetric(
            "expiring", "pmjobsd_passwords_expiring", "Vault entries whose password expires within the digest window"
        ),
        JobMetric("expired", "pmjobsd_passwords_expired", "Vault entries whose password has expired"),
    ),
)
