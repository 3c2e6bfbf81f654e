"""Jobs held back after they hung the daemon into a restart (``held.json`` in the state folder).

When more timed-out threads live than ``max_abandoned_threads``, the daemon
exits 75 so that its service manager restarts it clean.  If the jobs that hung
simply ran again after the restart, they would hang again and the restart
would repeat forever.  So the daemon notes them here before it exits; after
the restart each is held back — no catch-up run, no slot before ``until`` —
with a backoff that doubles at every further hang, and shown as FAIL.  The
first attempt that ends without a timeout releases it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pmjobsd.system.files import write_atomic

FIRST_HOLD_S = 300.0  # five minutes after the first hang; doubles per hang
MAX_HOLD_S = 24 * 3600.0


@dataclass(frozen=True)
class Hold:
    """One held job: how many restarts it caused in a row and until when it waits."""

    hangs: int
    since: float
    until: float

    @property
    def reason(self) -> str:
        return f"held back: it hung past its timeout and forced a restart ({self.hangs}x in a row)"


def hold_seconds(hangs: int) -> float:
    return float(min(FIRST_HOLD_S * 2 ** max(0, hangs - 1), MAX_HOLD_S))


class HeldJobs:
    """The held jobs of one state folder; thread-safe, saved on every change.

    A file that cannot be read is treated as empty (a hold is a precaution,
    never a reason not to start); one that cannot be written raises ``OSError``.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._holds: dict[str, Hold] = {}
        try:
            data = json.loads(self.path.read_text())
            for name, entry in data.get("jobs", {}).items():
                self._holds[str(name)] = Hold(int(entry["hangs"]), float(entry["since"]), float(entry["until"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            self._holds = {}

    def hold(self, jobs: Iterable[str], now: float | None = None) -> dict[str, Hold]:
        """The daemon is about to restart because ``jobs`` hung: hold each back (longer if it was already)."""
        now = time.time() if now is None else now
        with self._lock:
            for name in jobs:
                previous = self._holds.get(name)
                hangs = previous.hangs + 1 if previous else 1
                self._holds[name] = Hold(hangs, previous.since if previous else now, now + hold_seconds(hangs))
            self._save()
            return dict(self._holds)

    def release(self, job: str) -> bool:
        """An attempt of ``job`` ended without a timeout: no longer held; True if it was."""
        with self._lock:
            if self._holds.pop(job, None) is None:
                return False
            self._save()
            return True

    def get(self, job: str) -> Hold | None:
        with self._lock:
            return self._holds.get(job)

    def holding(self, job: str, now: float | None = None) -> Hold | None:
        """The hold that keeps ``job`` from running now, or None (its backoff is over: it may run)."""
        hold = self.get(job)
        now = time.time() if now is None else now
        return hold if hold is not None and now < hold.until else None

    def all(self) -> dict[str, Hold]:
        with self._lock:
            return dict(self._holds)

    def _save(self) -> None:
        data = {"jobs": {name: vars(hold) for name, hold in self._holds.items()}}
        write_atomic(self.path, json.dumps(data, indent=2) + "\n")
