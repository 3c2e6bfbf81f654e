"""Remote targets by apprise URL: Slack, Microsoft Teams, e-mail (mailto/mailtos), ntfy, ...

apprise knows a hundred services and their URL forms; pmjobsd hands it the
rendered title and body.  apprise reports only success or failure (details
go to its own ``apprise`` logger, which pmjobsd does not write to
``jobs.log``), so a failure here is transient: the retry helper tries again.
Timeouts are apprise's socket timeouts (``cto``/``rto`` URL parameters,
4 s each by default), set from the sink timeout when the URL has none.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pmjobsd.alerts.base import DeliveryError, Message

# apprise's NotifyType values; apprise itself is imported only when a target uses it
# (it costs ~80 ms and several MB at start-up, for nothing when no target is set).
_NOTIFY_TYPE = {
    "alert": "failure",
    "escalation": "failure",
    "repeat": "failure",
    "resolved": "success",
    "notice": "info",
}


def scheme_of(url: str) -> str:
    """The URL's scheme, the only part of a target that is safe to log ("?" when unreadable)."""
    try:
        return urlsplit(url).scheme.lower() or "?"
    except ValueError:  # e.g. "json://[abc/hook": an unclosed IPv6 bracket
        return "?"


def _with_timeouts(url: str, timeout: float) -> str:
    query = urlsplit(url).query
    params = {part.split("=", 1)[0] for part in query.split("&") if part}
    extra = [f"{key}={timeout:g}" for key in ("cto", "rto") if key not in params]
    if not extra:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(extra)


class AppriseSink:
    """One apprise URL; raises ValueError at construction when apprise cannot parse it."""

    remote = True

    def __init__(self, url: str, timeout: float = 10.0):
        import apprise

        self.kind = f"apprise:{scheme_of(url)}"
        self._apprise = apprise.Apprise()
        if not self._apprise.add(_with_timeouts(url, timeout)):
            raise ValueError(f"apprise does not accept this {scheme_of(url)}:// URL")

    def send(self, message: Message) -> None:
        ok = self._apprise.notify(
            title=message.title,
            body=message.body,
            notify_type=_NOTIFY_TYPE.get(message.kind, "info"),
        )
        if not ok:
            raise DeliveryError("apprise reported a failure")
