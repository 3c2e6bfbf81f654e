"""A built-in-shaped job module for registry tests."""

from pmjobsd.registry import JobSpec
from tests.sample_jobs import ok

JOB = JobSpec(name="sample", func=ok, description="sample", defaults={"cron": "@daily", "retries": 1})
