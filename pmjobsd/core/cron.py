"""Cron expressions, evaluated by cronsim in the jobs' time zone.

cronsim follows Debian cron across DST changes, which is what users expect:
in a fall-back hour a daily job runs once (not twice), and a time that falls
in a spring-forward gap runs at the first moment after the gap instead of
being dropped.  Jobs whose hour field is a wildcard run at every real
instant that matches, in both copies of a repeated hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from cronsim import CronSim, CronSimError

# The macros of Vixie/Debian cron.  cronsim reads only fields, so we map them.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
EXPECTED = "5 fields (minute hour day month weekday), 6 with seconds first, or a macro such as @hourly"


class CronError(ValueError):
    """An expression cronsim cannot read; the message says which field is wrong."""


def normalise(expr: str) -> str:
    """Return the field form of ``expr`` (macros expanded, spaces folded); raise CronError."""
    if not isinstance(expr, str) or not expr.strip():
        raise CronError(f"empty cron expression; expected {EXPECTED}")
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unknown macro {text!r}; expected one of {', '.join(MACROS)}")
        text = MACROS[text.lower()]
    try:
        CronSim(text, datetime(2026, 1, 1))
    except CronSimError as exc:
        raise CronError(f"{exc} in {expr!r}; expected {EXPECTED}") from None
    return text


class CronSchedule:
    """When a cron expression fires, as aware datetimes in ``tz``."""

    def __init__(self, expr: str, tz: tzinfo):
        self.expr = expr
        self.fields = normalise(expr)
        self.tz = tz

    @property
    def has_seconds(self) -> bool:
        return len(self.fields.split()) == 6

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (any aware datetime)."""
        return next(CronSim(self.fields, moment.astimezone(self.tz)))

    def previous_at_or_before(self, moment: datetime) -> datetime:
        """The last fire time at or before ``moment`` (to the second)."""
        start = moment.astimezone(self.tz).replace(microsecond=0) + timedelta(seconds=1)
        return next(CronSim(self.fields, start, reverse=True))

    def __repr__(self) -> str:
        return f"CronSchedule({self.expr!r}, {self.tz})"
