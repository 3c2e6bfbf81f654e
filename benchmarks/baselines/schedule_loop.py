"""Baseline: the five default jobs with the `schedule` package, in the loop its docs show.

``run_pending()`` once a second, forever.  Sends READY=1 to $NOTIFY_SOCKET
once the jobs are set up, as pmjobsd does, so start-up is timed the same way.
"""

import os
import socket
import time

import schedule


def job():
    pass


# The default cron times of pmjobsd's built-in jobs, in schedule's words.
schedule.every().hour.at(":00").do(job)  # browser_bridge_health  0 * * * *
schedule.every().sunday.at("03:30").do(job)  # log_rotation           30 3 * * 0
schedule.every().day.at("00:00").do(job)  # log_purge              @daily
schedule.every().day.at("09:00").do(job)  # expiring_password_digest 0 9 * * *
schedule.every().sunday.at("03:00").do(job)  # backup_integrity_check 0 3 * * 0

if os.environ.get("NOTIFY_SOCKET"):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])

while True:
    schedule.run_pending()
    time.sleep(1)
