"""What has been announced, per job, kept across daemon restarts.

A small JSON file in the state folder (``<data dir>/jobs/alerts.json``,
0600), rewritten atomically after each change::

    {"version": 1, "jobs": {"backup_integrity_check":
        {"status": "FAIL", "run_id": "...", "announced_at": 1764320400.0, "escalated": false}}}

A job is in the file while it is failing and was announced; its recovery
removes it (after the "resolved" message is queued).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pmjobsd.system.files import ensure_private_dir, write_atomic

FILE_NAME = "alerts.json"


class AlertState:
    """Per-job announcement records; not thread-safe (the manager holds its lock)."""

    def __init__(self, path: Path):
        self.path = path
        self.problem: str | None = None  # why an existing file was not usable
        self._jobs: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.problem = f"{self.path}: unreadable ({type(exc).__name__}); starting with no announced alerts"
            return {}
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(jobs, dict) or not all(isinstance(entry, dict) for entry in jobs.values()):
            self.problem = (
                f'{self.path}: expected {{"version": 1, "jobs": {{name: {{...}}}}}}; starting with no announced alerts'
            )
            return {}
        return {str(name): dict(entry) for name, entry in jobs.items()}

    def get(self, job: str) -> dict[str, Any] | None:
        entry = self._jobs.get(job)
        return dict(entry) if entry is not None else None

    def put(self, job: str, entry: dict[str, Any]) -> None:
        self._jobs[job] = dict(entry)
        self._save()

    def drop(self, job: str) -> None:
        if self._jobs.pop(job, None) is not None:
            self._save()

    def jobs(self) -> list[str]:
        return sorted(self._jobs)

    def _save(self) -> None:
        data = json.dumps({"version": 1, "jobs": self._jobs}, indent=1, sort_keys=True).encode("utf-8")
        ensure_private_dir(self.path.parent)
        write_atomic(self.path, data)
