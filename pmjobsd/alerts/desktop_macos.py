"""Local desktop notifications on macOS through the system notification centre.

``osascript`` ships with every macOS; the title and body are passed as
arguments of an ``on run argv`` script, never spliced into AppleScript
source, so no text can break out of its string.  (apprise's ``macosx://``
needs the third-party ``terminal-notifier``.)
"""

from __future__ import annotations

import subprocess

from pmjobsd.alerts.base import DeliveryError, Message

_SCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)


class MacNotificationSink:
    """Runs ``osascript`` with a timeout; shows ``private_body`` when present."""

    kind = "desktop-macos"
    remote = False

    def __init__(self, osascript: str = "/usr/bin/osascript", timeout: float = 10.0):
        self._osascript = osascript
        self._timeout = timeout

    def send(self, message: Message) -> None:
        body = message.private_body if message.private_body is not None else message.body
        command = [self._osascript]
        for line in _SCRIPT:
            command += ["-e", line]
        command += [message.title, body]
        try:
            completed = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, timeout=self._timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise DeliveryError("timeout") from None
        except OSError as exc:
            raise DeliveryError(f"cannot run osascript ({type(exc).__name__})", permanent=True) from None
        if completed.returncode != 0:
            raise DeliveryError(f"osascript exited with {completed.returncode}")
