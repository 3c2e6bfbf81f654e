"""The benchmarks' baselines do the same work as pmjobsd, and every row keeps the ratio convention.

The idle rows compare pmjobsd with its six built-in jobs to a `schedule` loop:
the loop must hold the same six jobs with the same periods, or the wake-up and
CPU figures compare different work.  Every row's ratio is pmjobsd / baseline
(benchmarks/README.md), whatever the unit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import schedule
from cronsim import CronSim

from benchmarks import bench_alerts, bench_breach
from benchmarks.baselines import schedule_loop
from pmjobsd.core import cron, registry


def cron_period(expression: str) -> timedelta:
    """The interval between two fires of ``expression`` (constant for the built-ins' defaults)."""
    fires = CronSim(cron.normalise(expression), datetime(2026, 1, 1))
    first, second, third = next(fires), next(fires), next(fires)
    assert second - first == third - second, expression
    return second - first


def test_the_schedule_loop_holds_the_six_builtin_jobs_with_their_default_periods():
    scheduler = schedule.Scheduler()
    jobs = dict(zip(schedule_loop.DEFAULT_JOBS, schedule_loop.setup(scheduler), strict=True))
    assert sorted(jobs) == sorted(registry.BUILTIN_JOBS)
    assert len(scheduler.get_jobs()) == len(registry.BUILTIN_JOBS) == 6
    for name, job in jobs.items():
        expression = schedule_loop.DEFAULT_JOBS[name][0]
        assert expression == registry.load_builtin(name).defaults["cron"], name
        assert job.unit is not None
        assert timedelta(**{job.unit: job.interval}) == cron_period(expression), name


def test_breach_rows_keep_the_ratio_convention():
    rows = bench_breach.rows_from(bench_breach.example_measurements())
    assert rows
    for row in rows:
        assert row["ratio"] == pytest.approx(row["pmjobsd"] / row["baseline"], rel=0.01), row["benchmark"]


def test_alert_rows_keep_the_ratio_convention():
    rows = bench_alerts.rows_from(bench_alerts.example_measurements())
    assert rows
    for row in rows:
        assert row["ratio"] == pytest.approx(row["pmjobsd"] / row["baseline"], rel=0.01), row["benchmark"]
