"""Tell the service manager what the daemon is doing (sd_notify(3)).

``Notifier()`` sends through systemd-python's ``systemd.daemon.notify`` when it is
installed (the ``systemd`` extra), otherwise through a small, exact implementation of
the ``NOTIFY_SOCKET`` protocol: one ``AF_UNIX`` datagram of newline-separated
``KEY=VALUE`` assignments, to a path or, when the variable starts with ``@``, to the
abstract namespace.  systemd-python (libsystemd, ~0.8 MB) is imported only when
``NOTIFY_SOCKET`` is set.  Without it (no systemd, launchd, a terminal) every method
is a no-op returning False.

Watchdog rule for the daemon: call :meth:`Notifier.watchdog` from the
scheduler loop only after an iteration completed normally, at least every
``watchdog_interval() / 2`` seconds (the units set ``WatchdogSec=5min``; the
loop wakes at least every 60 s), and never from a helper thread - a wedged
loop must stop the pings so that systemd restarts the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

_UNSET: Any = object()
_systemd_module: Any = _UNSET


def systemd_daemon() -> Any:
    """systemd-python's ``systemd.daemon`` (the optional extra), or None; imported at the first call."""
    global _systemd_module
    if _systemd_module is _UNSET:
        try:
            from systemd import daemon
        except ImportError:  # pragma: no cover - depends on the installation
            daemon = None
        _systemd_module = daemon
    return _systemd_module


def _socket_address(value: str) -> str | bytes | None:
    """The address NOTIFY_SOCKET names: a path, or an abstract name for '@name'."""
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    return None  # e.g. systemd 254's "vsock:CID:PORT", which needs libsystemd


def send_datagram(address: str | bytes, message: str) -> None:
    """Send ``message`` as one datagram to ``address`` (the fallback sd_notify)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        # Never block the scheduler loop: a manager that stopped reading gets no message (EAGAIN).
        sock.send(message.encode("utf-8"), socket.MSG_DONTWAIT)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """sd_notify for one process; methods return True when a message was sent."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, use_systemd: bool | None = None):
        """``use_systemd``: None picks systemd-python when importable; False forces the socket code."""
        self._environ = os.environ if environ is None else environ
        self.socket_value = self._environ.get("NOTIFY_SOCKET") or None
        if use_systemd is None:  # nothing to tell without NOTIFY_SOCKET: libsystemd is not loaded then
            use_systemd = self.socket_value is not None and systemd_daemon() is not None
        if use_systemd and systemd_daemon() is None:
            raise RuntimeError("systemd-python is not installed (pip install 'pmjobsd[systemd]')")
        self.backend = "none" if self.socket_value is None else ("systemd-python" if use_systemd else "socket")

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def notify(self, **assignments: object) -> bool:
        """Send ``KEY=VALUE`` lines, e.g. ``notify(READY=1, STATUS="3 jobs scheduled")``."""
        socket_value = self.socket_value
        if socket_value is None:  # not enabled
            return False
        # A newline would start a new assignment: keep STATUS= and friends on one line.
        message = "\n".join(f"{key}={' '.join(str(value).splitlines())}" for key, value in assignments.items())
        if self.backend == "systemd-python":
            # libsystemd reads $NOTIFY_SOCKET itself; hand it ours when it came from `environ`.
            if os.environ.get("NOTIFY_SOCKET") != socket_value:
                os.environ["NOTIFY_SOCKET"] = socket_value
            return bool(systemd_daemon().notify(message))
        address = _socket_address(socket_value)
        if address is None:
            return False
        try:
            send_datagram(address, message)
        except OSError:
            return False  # the manager went away; never let notification break the daemon
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: settings loaded and every job scheduled."""
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        """STATUS=: one line shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (required by Type=notify-reload, harmless otherwise).

        Send :meth:`ready` again when the reload is done.
        """
        return self.notify(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def stopping(self) -> bool:
        """STOPPING=1: draining jobs before exit."""
        return self.notify(STOPPING=1)

    def watchdog(self) -> bool:
        """WATCHDOG=1: the scheduler loop is healthy (see the module docstring)."""
        return self.notify(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds within which systemd expects WATCHDOG=1, or None when no watchdog is set.

        Follows sd_watchdog_enabled(3): WATCHDOG_USEC must be a positive integer and
        WATCHDOG_PID, when present, must be this process.
        """
        usec = self._environ.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = self._environ.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 1_000_000 if value > 0 else None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Module-level shortcut for :meth:`Notifier.watchdog_interval`."""
    return Notifier(environ, use_systemd=False).watchdog_interval()
