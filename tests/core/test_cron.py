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


@pytest.mark.parametrize("tz, day", [(BERLIN, (2026, 10, 25)), (NEW_YORK, (2026, 11, 1))])
def test_daily_job_in_the_repeated_hour_runs_once(tz, day):
    start = datetime(*day, 0, 0, tzinfo=tz) - timedelta(days=1)
    end = start + timedelta(days=2)
    # 02:30 in Berlin and 01:30 in New York exist twice on fall-back day.
    expr = "30 2 * * *" if tz is BERLIN else "30 1 * * *"
    times = fire_times(expr, tz, start, end)
    assert len(times) == 2  # the day before, and the fall-back day once
    assert len({t.date() for t in times}) == 2
    assert len({t.astimezone(timezone.utc) for t in times}) == 2


@pytest.mark.parametrize(
    "tz, day, expr, expected_local",
    [
        (BERLIN, (2026, 3, 29), "30 2 * * *", "03:00"),
        (NEW_YORK, (2026, 3, 8), "30 2 * * *", "03:00"),
    ],
)
def test_time_in_the_spring_forward_gap_runs_right_after_it(tz, day, expr, expected_local):
    start = datetime(*day, 0, 0, tzinfo=tz)
    times = fire_times(expr, tz, start, start + timedelta(hours=20))
    assert [t.strftime("%H:%M") for t in times] == [expected_local]


def test_hourly_job_runs_in_both_copies_of_the_repeated_hour():
    start = datetime(2026, 10, 25, 0, 30, tzinfo=BERLIN)
    # Aware datetime arithmetic is wall-clock arithmetic: add real hours in UTC.
    times = fire_times("0 * * * *", BERLIN, start, start.astimezone(timezone.utc) + timedelta(hours=5))
    utc = [t.astimezone(timezone.utc) for t in times]
    # Every real hour once: no gap and no duplicate in absolute time.
    assert all(b - a == timedelta(hours=1) for a, b in zip(utc, utc[1:], strict=False))
    assert len(utc) == 5


def test_hourly_job_in_spring_forward_skips_only_the_missing_hour():
    start = datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN)
    times = fire_times("0 * * * *", BERLIN, start, start + timedelta(hours=4))
    assert [t.strftime("%H") for t in times] == ["01", "03", "04"]
    utc = [t.astimezone(timezone.utc) for t in times]
    assert all(b - a == timedelta(hours=1) for a, b in zip(utc, utc[1:], strict=False))


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
