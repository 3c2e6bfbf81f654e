"""Declaration of the built-in job ``backup_integrity_check``: defaults, options and metrics.

Run by :mod:`pmjobsd.jobs.backup.backup_integrity_check`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pmjobsd.api import Duration, JobMetric, JobSpec, Meta, Overlap, PathRule, Struct


class BackupCheckOptions(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of ``backup_integrity_check``."""

    backup_dirs: Annotated[
        tuple[str, ...] | None,
        Meta(description="folders holding password_manager_backup_*.zip; default: the app's backups folder"),
    ] = None
    max_age_days: Annotated[float, Meta(gt=0, description="WARN when the newest backup is older than this")] = 8.0
    check: Annotated[Literal["integrity", "quick"], Meta(description="PRAGMA integrity_check or quick_check")] = (
        "integrity"
    )
    verify_latest: Annotated[
        int, Meta(ge=0, description="newest backups given the full check every run (all are hashed)")
    ] = 3
    settle_seconds: Annotated[
        Duration,
        Meta(description="backups modified more recently are still being written by the app; checked next run"),
    ] = 120.0
    lock_timeout: Annotated[Duration, Meta(description="how long to retry while the vault is locked")] = 10.0
    member_limit_factor: Annotated[
        float, Meta(gt=0, description="a backup member may hold at most this many times the live vault's size")
    ] = 16.0
    member_limit_min_mb: Annotated[
        float, Meta(gt=0, description="the member limit is never below this many MiB (small or missing vaults)")
    ] = 64.0


JOB = JobSpec(
    name="backup_integrity_check",
    func="pmjobsd.jobs.backup.backup_integrity_check:run",
    description="Check the vault's integrity and that every backup is intact, unchanged and complete",
    defaults={
        "cron": "0 3 * * 0",
        "timeout": 3600.0,
        "retries": 1,
        "backoff": {"initial": 600.0, "factor": 2.0, "max": 3600.0},
        "jitter": 300.0,
        "overlap": Overlap.SKIP,
        "catch_up": True,
        "scope": "vault",  # with jobs.coordination: once per slot for the whole group
        "on_holder_lost": "retry",  # idempotent: another machine may run a slot whose holder died
    },
    options_model=BackupCheckOptions,
    tags=("vault", "backup"),
    path_options={"backup_dirs": PathRule.OWNED},
    metrics=(
        JobMetric(
            "backups_verified", "pmjobsd_backups_verified", "Backups fully verified by the last backup integrity check"
        ),
        JobMetric("backups_failed", "pmjobsd_backups_failed", "Backups that failed the last backup integrity check"),
        # Prometheus wants base units: the job reports days, the metric is seconds.
        JobMetric(
            "newest_backup_age_days",
            "pmjobsd_backup_newest_age_seconds",
            "Age of the newest backup in seconds",
            scale=86400.0,
        ),
    ),
)
