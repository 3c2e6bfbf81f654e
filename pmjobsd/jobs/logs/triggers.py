"""When ``log_rotation`` rotates a log: over ``max_size``, or once a slot of ``every`` has passed.

The job runs often (every 5 minutes by default) and each run costs one
``stat()`` per log unless something is due, so a log that grows fast (jobs.log
with dozens of 1-second jobs: ~1.7 GB a day) is rotated soon after it passes
``max_size`` instead of at the weekly slot.  The time trigger needs to know when
each log was last rotated; that is kept in ``rotations.json`` in the job's
state folder (an archive's mtime is the time of its last line, not of the
rotation, so it cannot tell).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim

from pmjobsd.system.files import write_atomic

STATE_FILE = "rotations.json"


def job_zone(app_settings: Mapping[str, Any]) -> tzinfo:
    """The zone of the jobs' cron expressions (``jobs.timezone``, else the system's)."""
    jobs = app_settings.get("jobs") if isinstance(app_settings, Mapping) else None
    name = jobs.get("timezone") if isinstance(jobs, Mapping) else None
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ValueError, KeyError):
            pass  # reported by the settings' own validation
    import tzlocal

    zone: tzinfo = tzlocal.get_localzone()
    return zone


def last_slot(fields: str, now: float, zone: tzinfo) -> float:
    """Epoch seconds of the last slot of cron ``fields`` at or before ``now``."""
    start = datetime.fromtimestamp(now, timezone.utc).astimezone(zone).replace(microsecond=0) + timedelta(seconds=1)
    return next(CronSim(fields, start, reverse=True)).timestamp()


class Rotations:
    """The last rotation time of each log (by path), read and saved as one small JSON file."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / STATE_FILE
        try:
            data = json.loads(self.path.read_text())
            self.last = {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError, TypeError):
            self.last = {}

    def due_by_time(self, live: Path, slot: float, now: float) -> bool:
        """True if a slot passed since ``live`` was last rotated.

        A log seen for the first time counts from now, as if just rotated: a fresh
        install (or an upgrade) waits for the next slot instead of rotating
        minutes-old logs at its first check (``max_size`` still applies).
        """
        if str(live) not in self.last:
            self.last[str(live)] = now
            return False
        return self.last[str(live)] < slot

    def rotated(self, live: Path, when: float | None = None) -> None:
        self.last[str(live)] = time.time() if when is None else when

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.last, sort_keys=True))
