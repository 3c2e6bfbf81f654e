"""What the checks look at (:class:`DoctorEnv`) and what they return (:class:`Check`)."""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pmjobsd.app.paths import AppPaths
from pmjobsd.core import control
from pmjobsd.core.context import Status
from pmjobsd.core.settings import LoadedSettings
from pmjobsd.observe.status import offline_status
from pmjobsd.system.lock import holder_pid


@dataclass(frozen=True)
class Check:
    """One line of the report: ``hint`` says what to do when ``status`` is not OK."""

    name: str
    status: Status
    message: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {**asdict(self), "status": self.status.value}


def ok(name: str, message: str) -> Check:
    return Check(name, Status.OK, message)


def warn(name: str, message: str, hint: str) -> Check:
    return Check(name, Status.WARN, message, hint)


def fail(name: str, message: str, hint: str) -> Check:
    return Check(name, Status.FAIL, message, hint)


def _run_quiet(argv: Sequence[str]) -> int:
    """Run a service-manager query; its exit code (127 when missing, 124 on timeout)."""
    try:
        return subprocess.run(
            list(argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=10,
            check=False,
        ).returncode
    except FileNotFoundError:
        return 127
    except subprocess.TimeoutExpired:
        return 124


@dataclass
class DoctorEnv:
    """What the checks look at; every outside effect can be replaced (tests)."""

    paths: AppPaths
    loaded: LoadedSettings
    online: bool = False
    statvfs: Callable[[str], Any] = os.statvfs
    run_command: Callable[[Sequence[str]], int] = _run_quiet
    platform: str = sys.platform
    service_root: Path | None = None  # prefix of unit paths (like DESTDIR), for tests
    breach_api_base: str | None = None  # default: the job's api_base option, else the public API
    is_app_running: Callable[[], bool] | None = None
    timeout: float = 5.0
    _daemon: tuple[dict | None, int | None] | None = field(default=None, repr=False)

    def daemon(self) -> tuple[dict | None, int | None]:
        """(status document from the live daemon or None, pid holding the lock or None); asked once."""
        if self._daemon is None:
            try:
                answer = control.ask_daemon(
                    self.paths.control_socket_candidates, {"cmd": "status"}, timeout=self.timeout
                )
                document = answer.get("status") if answer.get("ok", True) else None
            except (control.ControlError, ValueError):
                document = None
            self._daemon = (document, holder_pid(self.paths.lock_path))
        return self._daemon


def current_status(env: DoctorEnv) -> Mapping[str, Any]:
    """The status document: the daemon's when one answers, else built from the run history."""
    document, pid = env.daemon()
    return document if document is not None else offline_status(env.paths.history_path, env.loaded, pid)


def shell_quote(path: Path | str) -> str:
    """``path`` quoted for a command line in a hint."""
    return shlex.quote(str(path))


def user_name(uid: int | None = None) -> str:
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
