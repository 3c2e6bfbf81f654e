"""The one way pmjobsd writes a moment in UTC: ISO 8601 with milliseconds and ``+00:00``.

``2026-11-28T09:00:00.123+00:00``, in jobs.log ``ts``, the status document,
alert messages, the doctor report and the support bundle.  ``+00:00``, not
``Z``: Python 3.10's ``datetime.fromisoformat`` cannot read ``Z``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import overload


@overload
def utc_iso(epoch: float) -> str: ...


@overload
def utc_iso(epoch: None) -> None: ...


@overload
def utc_iso(epoch: float | None) -> str | None: ...


def utc_iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds; None stays None (a moment that has not come)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
