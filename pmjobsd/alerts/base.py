"""The one small interface every alert sink shares.

A sink is an object with ``kind`` (a short name safe to log: ``"webhook"``,
``"desktop-linux"``, ``"apprise:slack"``), ``remote`` (True when delivery
leaves the machine) and ``send(message) -> None``.  ``send`` returns once the
message was handed over and raises :class:`DeliveryError` otherwise; it must
bound every blocking call by the sink's own timeout.  Error texts never carry a
URL, token or address: they are logged as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class DeliveryError(Exception):
    """A message that could not be delivered.

    ``permanent=True`` means retrying the same message cannot help (bad
    configuration, a 4xx answer); transient errors are retried a few times.
    """

    def __init__(self, reason: str, *, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Message:
    """What a sink delivers: an alert, a "resolved" note, an escalation or a job's notice.

    ``fields`` is the structured payload (job, status, summary, run_id, host,
    time, ...) that machine-readable sinks send as JSON; ``title`` and ``body``
    are the human-readable rendering.  ``private_body`` (notices only) is shown
    by local desktop sinks instead of ``body`` and never sent anywhere else.
    """

    kind: str  # "alert" | "resolved" | "escalation" | "repeat" | "notice"
    title: str
    body: str
    fields: dict[str, Any] = field(default_factory=dict)
    private_body: str | None = None
    urgency: str = "normal"  # "low" | "normal" | "critical"

    @property
    def job(self) -> str:
        return str(self.fields.get("job", ""))


class Sink(Protocol):
    kind: str
    remote: bool

    def send(self, message: Message) -> None: ...


class NoopSink:
    """Accepts and drops every message: stands in where nothing is configured."""

    kind = "noop"
    remote = False

    def send(self, message: Message) -> None:
        pass
