"""Cron evaluation at real DST transitions, macros, seconds, and readable errors."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from pmjobsd.core.cron import CronError, CronSchedule, normalise

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def fire_times(expr: str, tz, start: datetime, end: datetime) -> list[datetime]:
    schedule = CronSchedule(expr, tz)
    times, moment = [], start
    while True:
        moment = schedule.next_after(moment)
        if moment >= end:
            return times
        times.append(moment)


# Spring forward: 02:00-03:00 does not exist (Berlin 2026-03-29, New York 2026-03-08).
# Fall back: an hour is repeated, 02:00-03:00 in Berlin (2026-10-25), 01:00-02:00 in New York (2026-11-01).
@pytest.mark.parametrize(
    "tz, expr, day, expected",
    [
        pytest.param(
            BERLIN,
            "30 2 * * *",
            (2026, 3, 29),
            ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00"],
            id="berlin-spring-forward",
        ),
        pytest.param(
            NEW_YORK,
            "30 2 * * *",
            (2026, 3, 8),
            ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00"],
            id="new-york-spring-forward",
        ),
        pytest.param(
            BERLIN,
            "30 2 * * *",
            (2026, 10, 25),
            ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00"],
            id="berlin-fall-back",
        ),
        pytest.param(
            NEW_YORK,
            "30 1 * * *",
            (2026, 11, 1),
            ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00"],
            id="new-york-fall-back",
        ),
    ],
)
def test_daily_job_runs_once_on_a_dst_day(tz, expr, day, expected):
    """A time in the gap runs right after it; a time in the repeated hour runs once, not twice."""
    start = datetime(*day, 0, 0, tzinfo=tz) - timedelta(days=1)
    times = fire_times(expr, tz, start, start + timedelta(days=2))  # the day before and the DST day
    assert [t.isoformat() for t in times] == expected
    assert len({t.date() for t in times}) == len(times)
    assert len({t.astimezone(timezone.utc) for t in times}) == len(times)


@pytest.mark.parametrize(
    "tz, day, real_hours, expected",
    [
        pytest.param(BERLIN, (2026, 3, 29), 3, ["01:00+0100", "03:00+0200", "04:00+0200"], id="berlin-spring-forward"),
        pytest.param(
            NEW_YORK, (2026, 3, 8), 3, ["01:00-0500", "03:00-0400", "04:00-0400"], id="new-york-spring-forward"
        ),
        pytest.param(
            BERLIN,
            (2026, 10, 25),
            5,
            ["01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100", "04:00+0100"],
            id="berlin-fall-back",
        ),
        pytest.param(
            NEW_YORK,
            (2026, 11, 1),
            5,
            ["01:00-0400", "01:00-0500", "02:00-0500", "03:00-0500", "04:00-0500"],
            id="new-york-fall-back",
        ),
    ],
)
def test_hourly_job_runs_every_real_hour_on_a_dst_day(tz, day, real_hours, expected):
    """Spring forward skips only the missing hour; fall back runs in both copies of the repeated one."""
    start = datetime(*day, 0, 30, tzinfo=tz)
    # Aware datetime arithmetic is wall-clock arithmetic: add real hours in UTC.
    times = fire_times("0 * * * *", tz, start, start.astimezone(timezone.utc) + timedelta(hours=real_hours))
    assert [t.strftime("%H:%M%z") for t in times] == expected
    utc = [t.astimezone(timezone.utc) for t in times]
    # Every real hour once: no gap and no duplicate in absolute time.
    assert all(b - a == timedelta(hours=1) for a, b in zip(utc, utc[1:], strict=False))
    assert len(utc) == real_hours


def test_macros_and_seconds():
    assert normalise("@hourly") == "0 * * * *"
    assert normalise("@daily") == normalise("@midnight") == "0 0 * * *"
    schedule = CronSchedule("*/10 * * * * *", timezone.utc)
    assert schedule.has_seconds
    start = datetime(2026, 1, 1, 12, 0, 3, tzinfo=timezone.utc)
    assert schedule.next_after(start) == datetime(2026, 1, 1, 12, 0, 10, tzinfo=timezone.utc)
    assert schedule.previous_at_or_before(start) == datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def test_next_after_is_strict_and_previous_is_inclusive():
    schedule = CronSchedule("0 3 * * 0", BERLIN)
    sunday_3am = datetime(2026, 11, 29, 3, 0, tzinfo=BERLIN)
    assert schedule.next_after(sunday_3am) == sunday_3am + timedelta(days=7)
    assert schedule.previous_at_or_before(sunday_3am) == sunday_3am


@pytest.mark.parametrize(
    "expr, words",
    [
        ("61 * * * *", "Bad minute"),
        ("* * *", "Wrong number of fields"),
        ("@fortnightly", "unknown macro"),
        ("", "empty"),
    ],
)
def test_errors_say_what_is_wrong(expr, words):
    with pytest.raises(CronError, match=words) as info:
        normalise(expr)
    assert "expected" in str(info.value)
