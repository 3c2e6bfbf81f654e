"""Baseline: the six built-in jobs with the `schedule` package, in the loop its docs show.

``run_pending()`` once a second, forever.  Sends READY=1 to $NOTIFY_SOCKET
once the jobs are set up, as pmjobsd does, so start-up is timed the same way.

``DEFAULT_JOBS`` holds one `schedule` job per built-in job with the period of
its default cron expression (``tests/benchmarks/test_baselines.py`` checks
both against ``pmjobsd.core.registry``).  `schedule` counts an interval from
when the job is added, so the two sub-daily ones (every 5 minutes, every
6 hours) have the built-ins' periods but not their phase (``*/5`` fires on
minutes divisible by 5, ``0 */6`` at 00, 06, 12 and 18 o'clock).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import schedule

# built-in job -> (its default cron, how that reads in schedule's words)
DEFAULT_JOBS: dict[str, tuple[str, Callable[[schedule.Scheduler], schedule.Job]]] = {
    "browser_bridge_health": ("0 * * * *", lambda s: s.every().hour.at(":00")),
    "log_rotation": ("*/5 * * * *", lambda s: s.every(5).minutes.at(":00")),
    "log_purge": ("@daily", lambda s: s.every().day.at("00:00")),
    "expiring_password_digest": ("0 9 * * *", lambda s: s.every().day.at("09:00")),
    "backup_integrity_check": ("0 3 * * 0", lambda s: s.every().sunday.at("03:00")),
    "breach_cache_refresh": ("0 */6 * * *", lambda s: s.every(6).hours.at(":00")),
}


def job() -> None:
    pass


def setup(scheduler: schedule.Scheduler) -> list[schedule.Job]:
    """Add the six jobs to ``scheduler``; return them in ``DEFAULT_JOBS`` order."""
    return [every(scheduler).do(job) for _, every in DEFAULT_JOBS.values()]


def main() -> None:
    setup(schedule.default_scheduler)
    if os.environ.get("NOTIFY_SOCKET"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
    while True:
        schedule.run_pending()
        time.sleep(1)


if __name__ == "__main__":
    main()
