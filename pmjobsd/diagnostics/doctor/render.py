"""The doctor's verdict: the exit code, the ``--json`` document and the text report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from pmjobsd import __version__
from pmjobsd.core.outcomes import Severity, Status
from pmjobsd.core.privacy import escape_control
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.diagnostics.doctor.env import Check


def exit_code(checks: Sequence[Check]) -> Severity:
    """0 all OK, 1 any WARN, 2 any FAIL."""
    return max((check.status.severity for check in checks), default=Severity.OK)


def report(checks: Sequence[Check], now: datetime | None = None) -> dict[str, Any]:
    """The ``--json`` document."""
    code = exit_code(checks)
    return {
        "generated_at": utc_iso((now or datetime.now(timezone.utc)).timestamp()),
        "pmjobsd_version": __version__,
        "status": code.name,
        "exit_code": int(code),
        "checks": [check.as_dict() for check in checks],
    }


def render_text(checks: Sequence[Check]) -> str:
    """One line per check: status, name, message and, when not OK, what to do.

    Messages quote job summaries, settings issues and paths, text from outside: each line passes
    :func:`escape_control`, so no ESC, CR or LF in them reaches the terminal.
    """
    width = max((len(check.name) for check in checks), default=10)
    lines = []
    for check in checks:
        line = f"{check.status.value:<4}  {check.name:<{width}}  {check.message}"
        if check.hint and check.status is not Status.OK:
            line += f"  -> {check.hint}"
        lines.append(escape_control(line))
    lines.append(f"overall: {report(checks)['status']}")
    return "\n".join(lines)
