"""Turn the ``alerts`` settings into sinks: desktop, webhooks, apprise URLs.

Routing: ``json://`` / ``jsons://`` go to the signed JSON webhook sink, every
other URL to apprise.  A target is *local* when it cannot leave the machine —
the desktop, or a JSON webhook on a loopback address — and *remote*
otherwise (chat services, e-mail: even a loopback SMTP relay forwards mail
away).  Remote targets are built only when ``alerts.allow_remote`` is true.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pmjobsd.alerts.apprise_sink import AppriseSink, scheme_of
from pmjobsd.alerts.base import Sink
from pmjobsd.alerts.webhook import SCHEMES as WEBHOOK_SCHEMES
from pmjobsd.alerts.webhook import JsonWebhookSink, is_loopback_url

# Each sink imports its library (requests, apprise, jeepney) only when it sends; the desktop
# sinks' modules are imported only for the platform that has them.
if TYPE_CHECKING:
    from pmjobsd.core.settings import Alerts


@dataclass(frozen=True)
class TargetProblem:
    """A target that was not built; names the setting and position, never the URL."""

    setting: str  # "alerts.targets[1]"
    scheme: str
    reason: str


@dataclass
class SinkPlan:
    """The sinks built from the settings, and what was left out and why."""

    primary: list[Sink] = field(default_factory=list)
    escalation: list[Sink] = field(default_factory=list)
    remote_disabled: int = 0  # remote targets configured while allow_remote is false
    problems: list[TargetProblem] = field(default_factory=list)
    desktop_unavailable: str | None = None


def is_remote_target(url: str) -> bool:
    return not (scheme_of(url) in WEBHOOK_SCHEMES and is_loopback_url(url))


def build_target(url: str, alerts: Alerts, timeout: float) -> Sink:
    """One sink for one target URL; raise ValueError (message without the URL) if unusable."""
    remote = is_remote_target(url)
    if scheme_of(url) in WEBHOOK_SCHEMES:
        return JsonWebhookSink(url, alerts.webhook_secret, timeout=timeout, remote=remote)
    return AppriseSink(url, timeout=timeout)


def desktop_sink(timeout: float, platform: str | None = None) -> tuple[Sink | None, str | None]:
    """The desktop sink for this platform, or None and the reason there is none."""
    platform = platform or sys.platform
    if platform == "darwin":
        from pmjobsd.alerts.desktop_macos import MacNotificationSink

        return MacNotificationSink(timeout=timeout), None
    if platform.startswith("linux") or "bsd" in platform:
        from pmjobsd.alerts.desktop_linux import FreedesktopSink, session_bus_address

        address = session_bus_address()
        if address is None:
            return None, "no session bus (DBUS_SESSION_BUS_ADDRESS is not set)"
        return FreedesktopSink(address, timeout=timeout), None
    return None, f"no desktop notifications on {platform}"


def build_sinks(alerts: Alerts, timeout: float = 10.0, platform: str | None = None) -> SinkPlan:
    """Build every sink the settings ask for; never raise."""
    plan = SinkPlan()
    if alerts.desktop:
        sink, plan.desktop_unavailable = desktop_sink(timeout, platform)
        if sink is not None:
            plan.primary.append(sink)
    for setting, urls, into in (
        ("alerts.targets", alerts.targets, plan.primary),
        ("alerts.escalation_targets", alerts.escalation_targets, plan.escalation),
    ):
        for index, url in enumerate(urls):
            try:
                if is_remote_target(url) and not alerts.allow_remote:
                    plan.remote_disabled += 1
                    continue
                into.append(build_target(url, alerts, timeout))
            except ValueError as exc:
                plan.problems.append(TargetProblem(f"{setting}[{index}]", scheme_of(url), str(exc)))
    return plan
