"""Declaration of the built-in job ``browser_bridge_health``: defaults, options and metrics.

Run by :mod:`pmjobsd.jobs.browser_bridge_health`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pmjobsd.api import Duration, JobMetric, JobSpec, Meta, Struct

# Console scripts of secure-password-manager 1.11 (its wheel's entry_points.txt).
APP_COMMANDS = ("password-manager", "password-manager-gui")


class BridgeHealthOptions(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of ``browser_bridge_health``."""

    expect: Annotated[
        Literal["when_app_running", "always"],
        Meta(description="when the bridge must answer: only while the app runs, or always"),
    ] = "when_app_running"
    timeout: Annotated[Duration, Meta(gt=0, le=60, description="timeout of each probe")] = 3.0
    slow_after: Annotated[Duration | None, Meta(description="WARN when /v1/status takes longer than this")] = 1.0
    app_commands: Annotated[
        tuple[str, ...],
        Meta(description="program names (argv[0] or the script a Python runs) that mean the app is running"),
    ] = APP_COMMANDS


JOB = JobSpec(
    name="browser_bridge_health",
    func="pmjobsd.jobs.browser_bridge_health:run",
    description="Check that the app's browser bridge answers /v1/status (and its domain socket)",
    defaults={"cron": "0 * * * *", "timeout": 30, "retries": 1, "backoff": {"initial": 60}, "jitter": 30},
    options_model=BridgeHealthOptions,
    metrics=(
        JobMetric(
            "reachable", "pmjobsd_browser_bridge_reachable", "1 when the app's browser bridge answered its health check"
        ),
    ),
)
