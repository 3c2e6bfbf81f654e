"""A built-in-shaped job module for registry tests."""

from pmjobsd.core.registry import JobSpec
from tests.support.sample_jobs import ok

JOB = JobSpec(name="sample", func=ok, description="sample", defaults={"cron": "@daily", "retries": 1})
