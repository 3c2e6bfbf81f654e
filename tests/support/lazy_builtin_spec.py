"""A built-in-shaped declaration whose function is imported at its first run (registry tests)."""

from pmjobsd.api import JobSpec

JOB = JobSpec(
    name="lazy", func="tests.support.lazy_builtin:run", description="lazy", defaults={"cron": "@daily", "retries": 0}
)
BROKEN = JobSpec(
    name="broken", func="tests.support.broken_builtin:run", description="broken", defaults={"cron": "@daily"}
)
