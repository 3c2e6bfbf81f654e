"""Local desktop notifications on Linux through the freedesktop Notifications D-Bus service.

Library: jeepney, a pure-Python D-Bus implementation (no compiled parts, no
GLib main loop, blocking calls with a timeout), used by keyring and
secretstorage.  apprise's own ``dbus://`` plugin needs dbus-python and
PyGObject, both compiled against system libraries, so it is not used.

The session bus is found from ``DBUS_SESSION_BUS_ADDRESS`` (or given
explicitly); a daemon without one (a system service) has no desktop, and the
manager then logs that once and uses no desktop sink.  A connection is opened
per message: notifications are rare, and a fresh connection survives a
restarted desktop session.
"""

from __future__ import annotations

import os

from pmjobsd.alerts.base import DeliveryError, Message

# The freedesktop Notifications service (a jeepney DBusAddress, built at the first message:
# jeepney is imported only when a notice is sent, not when the daemon starts).
NOTIFICATIONS = {
    "object_path": "/org/freedesktop/Notifications",
    "bus_name": "org.freedesktop.Notifications",
    "interface": "org.freedesktop.Notifications",
}
_URGENCY = {"low": 0, "normal": 1, "critical": 2}
# Errors that retrying the same call a few seconds later cannot fix.
_PERMANENT_ERRORS = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.UnknownMethod",
    "org.freedesktop.DBus.Error.InvalidArgs",
    "org.freedesktop.DBus.Error.AccessDenied",
}


def session_bus_address() -> str | None:
    """The session bus address from the environment, or None when there is none."""
    return os.environ.get("DBUS_SESSION_BUS_ADDRESS") or None


def _escape(text: str) -> str:
    # Notification servers may interpret a small HTML-like markup in the body.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class FreedesktopSink:
    """Calls ``org.freedesktop.Notifications.Notify``; shows ``private_body`` when present."""

    kind = "desktop-linux"
    remote = False

    def __init__(self, bus_address: str | None = None, timeout: float = 5.0, app_name: str = "pmjobsd"):
        self._bus = bus_address or "SESSION"
        self._timeout = timeout
        self._app_name = app_name

    def send(self, message: Message) -> None:
        from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        body = message.private_body if message.private_body is not None else message.body
        hints = {"urgency": ("y", _URGENCY.get(message.urgency, 1))}
        expire_ms = 0 if message.urgency == "critical" else -1  # critical: stays until dismissed
        call = new_method_call(
            DBusAddress(**NOTIFICATIONS),
            "Notify",
            "susssasa{sv}i",
            (
                self._app_name,
                0,
                "dialog-warning" if message.kind != "resolved" else "dialog-information",
                message.title,
                _escape(body),
                [],
                hints,
                expire_ms,
            ),
        )
        try:
            with open_dbus_connection(bus=self._bus, auth_timeout=self._timeout) as connection:
                reply = connection.send_and_get_reply(call, timeout=self._timeout)
        except TimeoutError:
            raise DeliveryError("timeout") from None
        except KeyError:
            raise DeliveryError("no session bus", permanent=True) from None
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"cannot reach the session bus ({type(exc).__name__})") from None
        if reply.header.message_type == MessageType.error:
            name = str(reply.header.fields.get(HeaderFields.error_name, "unknown error"))
            raise DeliveryError(name, permanent=name in _PERMANENT_ERRORS)
