"""Baseline: APScheduler 3 ``BackgroundScheduler`` with the default cron triggers of the six built-in jobs.

    python apscheduler_background.py "0 * * * *" "30 3 * * 0" ...

A 4-thread executor like pmjobsd's pool.  The main thread waits in
``signal.pause()`` (no polling of its own), so only the scheduler is measured.
Sends READY=1 to $NOTIFY_SOCKET once the scheduler runs.
"""

import os
import signal
import socket
import sys

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger


def job():
    pass


scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(4)}, timezone="UTC")
for expression in sys.argv[1:]:
    scheduler.add_job(job, CronTrigger.from_crontab(expression, timezone="UTC"))
scheduler.start()

if os.environ.get("NOTIFY_SOCKET"):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    signal.pause()
