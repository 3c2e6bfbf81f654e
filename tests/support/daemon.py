"""A temporary app home and a real `pmjobsd run` process on it, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pmjobsd.core import registry
from tests.support import REPO


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def all_builtins_disabled() -> dict:
    """Definitions that switch off every built-in job (end-to-end tests add their own)."""
    return {name: {"enabled": False} for name in registry.BUILTIN_JOBS}


class AppHome:
    """A temporary HOME with the app's XDG folders, and helpers to read what pmjobsd wrote."""

    def __init__(self, root: Path):
        self.root = root
        self.data_dir = root / ".local/share/secure-password-manager"
        self.config_dir = root / ".config/secure-password-manager"
        self.cache_dir = root / ".cache/secure-password-manager"
        self.runtime_dir = root / "run"
        for folder in (self.data_dir, self.config_dir, self.cache_dir, self.runtime_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def settings_path(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def jobs_log(self) -> Path:
        return self.data_dir / "logs" / "jobs.log"

    @property
    def history_path(self) -> Path:
        return self.data_dir / "jobs" / "history.db"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "NOTIFY_SOCKET", "JOURNAL_STREAM"))}
        env.update(
            HOME=str(self.root),
            XDG_RUNTIME_DIR=str(self.runtime_dir),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
            PYTHONUNBUFFERED="1",
        )
        return env

    def write_settings(self, jobs: dict, **app_keys) -> None:
        """Write settings.json atomically (as the app would: the whole object)."""
        definitions = {**all_builtins_disabled(), **jobs.pop("definitions", {})}
        data = {
            "theme": "dark",
            **app_keys,
            "jobs": {"timezone": "UTC", "wake_interval": "1s", **jobs, "definitions": definitions},
        }
        tmp = self.settings_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.settings_path)

    def events(self, event: str | None = None, **match) -> list[dict]:
        """Parsed jobs.log lines, filtered by event name and field values."""
        # Archives first (log_rotation may have renamed jobs.log under the daemon), then the live file.
        files = sorted(self.jobs_log.parent.glob("jobs.log.*[0-9]")) + [self.jobs_log]
        lines = []
        for raw in "".join(f.read_text() for f in files if f.exists()).splitlines():
            line = json.loads(raw)
            if event and line.get("event") != event:
                continue
            if all(line.get(key) == value for key, value in match.items()):
                lines.append(line)
        return lines

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pmjobsd", *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def status(self) -> tuple[int, dict]:
        result = self.cli("status", "--json")
        return result.returncode, json.loads(result.stdout)


class DaemonProcess:
    """A real `python -m pmjobsd run` child process."""

    def __init__(self, home: AppHome, *extra: str):
        self.home = home
        self.stderr_path = home.root / f"daemon-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pmjobsd", "run", "--no-console", *extra],
            env=home.env(),
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        self.ready_count = len(home.events("daemon.ready"))

    def wait_ready(self, timeout: float = 20) -> DaemonProcess:
        wait_for(
            lambda: len(self.home.events("daemon.ready")) > self.ready_count or self.proc.poll() is not None,
            timeout,
            message="daemon.ready",
        )
        assert self.proc.poll() is None, f"daemon exited: {self.stderr_path.read_text()}"
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._stderr.close()
