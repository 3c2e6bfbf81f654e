"""Scheduling rules with an injected clock: no threads, no sleeping."""

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from pmjobsd.core.cron import CronSchedule
from pmjobsd.core.scheduler import Clock, Scheduler
from pmjobsd.core.settings import JobDefinition, ResolvedJob
from tests.support import sample_jobs

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


class FakeClock(Clock):
    def __init__(self, start: datetime):
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance_to(self, timestamp: float) -> None:
        self.current = datetime.fromtimestamp(timestamp, UTC)


def job(name: str, cron: str, tz=UTC, first_start: bool = True, **definition) -> ResolvedJob:
    return ResolvedJob(
        name,
        JobDefinition(cron=cron, callable="tests.support.sample_jobs:ok", **definition),
        sample_jobs.ok,
        {},
        False,
        CronSchedule(cron, tz),
        run_at_first_start=first_start,
    )


def run_until(scheduler: Scheduler, clock: FakeClock, end: datetime) -> list:
    """Jump from wake-up to wake-up, as the daemon's loop does, collecting due items."""
    fired = []
    while True:
        wake = scheduler.next_wake()
        if wake is None or wake >= end.timestamp():
            return fired
        clock.advance_to(max(wake, clock.now().timestamp()))
        fired += scheduler.pop_due()


def test_sleeps_until_the_next_slot():
    clock = FakeClock(datetime(2026, 11, 28, 9, 10, tzinfo=UTC))
    scheduler = Scheduler(clock)
    scheduler.load({"hourly": job("hourly", "0 * * * *"), "daily": job("daily", "0 3 * * *")}, {}, catch_up=False)
    assert scheduler.next_wake() == datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp()
    assert scheduler.pop_due() == []  # nothing is due before its slot
    fired = run_until(scheduler, clock, datetime(2026, 11, 29, 4, 0, tzinfo=UTC))
    assert [item.job for item in fired].count("hourly") == 18  # 10:00 .. 03:00
    assert [item.slot.hour for item in fired if item.job == "daily"] == [3]


# From noon the day before to noon the day after the change; the repeated hour is
# 02:00-03:00 in Berlin and 01:00-02:00 in New York.
@pytest.mark.parametrize(
    "tz, cron, day, expected",
    [
        pytest.param(
            BERLIN,
            "30 2 * * *",
            (2026, 3, 29),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
            id="berlin-spring-forward-gap-not-dropped",
        ),
        pytest.param(
            NEW_YORK,
            "30 2 * * *",
            (2026, 3, 8),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
            id="new-york-spring-forward-gap-not-dropped",
        ),
        pytest.param(
            BERLIN,
            "30 2 * * *",
            (2026, 10, 25),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
            id="berlin-fall-back-runs-once",
        ),
        pytest.param(
            NEW_YORK,
            "30 1 * * *",
            (2026, 11, 1),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
            id="new-york-fall-back-runs-once",
        ),
    ],
)
def test_daily_job_through_a_dst_night(tz, cron, day, expected):
    clock = FakeClock(datetime(*day, 12, 0, tzinfo=tz) - timedelta(days=1))
    scheduler = Scheduler(clock)
    scheduler.load({"nightly": job("nightly", cron, tz)}, {}, catch_up=False)
    fired = run_until(scheduler, clock, datetime(*day, 12, 0, tzinfo=tz) + timedelta(days=1))
    assert [item.slot.isoformat() for item in fired] == expected


def test_passed_slots_are_coalesced_after_a_clock_jump():
    clock = FakeClock(datetime(2026, 11, 28, 9, 59, tzinfo=UTC))
    scheduler = Scheduler(clock)
    scheduler.load({"quarter": job("quarter", "*/15 * * * *")}, {}, catch_up=False)
    clock.current = datetime(2026, 11, 28, 14, 5, tzinfo=UTC)  # suspended for four hours
    fired = scheduler.pop_due()
    assert len(fired) == 1  # one run, not sixteen
    assert scheduler.next_wake() == datetime(2026, 11, 28, 14, 15, tzinfo=UTC).timestamp()


def test_catch_up_runs_once_for_a_missed_slot_and_for_a_never_run_job():
    clock = FakeClock(datetime(2026, 11, 28, 9, 10, tzinfo=UTC))
    scheduler = Scheduler(clock)
    jobs = {
        "missed": job("missed", "0 * * * *"),
        "fresh": job("fresh", "0 * * * *"),
        "never": job("never", "0 3 * * *"),
        "opted_out": job("opted_out", "0 * * * *", catch_up=False),
    }
    last = {
        "missed": datetime(2026, 11, 28, 6, 0, tzinfo=UTC),  # 07:00, 08:00 and 09:00 were missed
        "fresh": datetime(2026, 11, 28, 9, 0, tzinfo=UTC),
        "opted_out": datetime(2026, 11, 28, 6, 0, tzinfo=UTC),
    }
    caught = scheduler.load(jobs, last)
    assert {item.job: item.missed_slot for item in caught} == {
        "missed": datetime(2026, 11, 28, 9, 0, tzinfo=UTC),
        "never": None,
    }
    due = scheduler.pop_due()
    assert sorted((item.job, item.trigger) for item in due) == [("missed", "catch_up"), ("never", "catch_up")]


def test_jitter_delays_within_bounds_and_keeps_the_slot():
    clock = FakeClock(datetime(2026, 11, 28, 9, 10, tzinfo=UTC))
    scheduler = Scheduler(clock, random.Random(7))
    scheduler.load({"j": job("j", "0 * * * *", jitter=300)}, {}, catch_up=False)
    slot = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    wake = scheduler.next_wake()
    assert slot.timestamp() < wake <= slot.timestamp() + 300
    clock.advance_to(wake)
    (item,) = scheduler.pop_due()
    assert item.slot == slot


def test_retries_wait_in_the_heap_and_survive_a_reload():
    clock = FakeClock(datetime(2026, 11, 28, 9, 10, tzinfo=UTC))
    scheduler = Scheduler(clock)
    jobs = {"j": job("j", "0 * * * *")}
    scheduler.load(jobs, {}, catch_up=False)
    when = scheduler.add_retry("j", "run-1", 2, None, delay=30)
    assert scheduler.next_wake() == when
    assert scheduler.next_run("j") == datetime.fromtimestamp(when, UTC)
    scheduler.load(jobs, catch_up=False)  # reload
    assert scheduler.pending_retries("j") == 1
    clock.advance_to(when)
    (item,) = scheduler.pop_due()
    assert (item.trigger, item.run_id, item.attempt) == ("retry", "run-1", 2)
    scheduler.add_retry("j", "run-2", 2, None, delay=30)
    scheduler.load({}, catch_up=False)  # the job was removed: its retry goes too
    assert scheduler.pending_retries("j") == 0 and scheduler.next_wake() is None


def test_reloads_do_not_grow_the_heap():
    clock = FakeClock(datetime(2026, 11, 28, 9, 10, tzinfo=UTC))
    scheduler = Scheduler(clock)
    jobs = {f"j{i}": job(f"j{i}", "0 * * * *") for i in range(50)}
    for _ in range(100):
        scheduler.load(jobs, catch_up=False)
    assert len(scheduler._heap) <= 2 * len(jobs) + 16 + len(jobs)


def test_reloads_that_change_the_times_do_not_grow_the_heap():
    """Identical reloads keep every pending item; changed times cancel them all, and compaction must drop them."""
    clock = FakeClock(datetime(2026, 11, 28, 9, 10, tzinfo=UTC))
    scheduler = Scheduler(clock)
    crons = ("0 * * * *", "30 * * * *")
    for reload in range(100):
        cron = crons[reload % 2]
        scheduler.load({f"j{i}": job(f"j{i}", cron) for i in range(50)}, catch_up=False)
    assert len(scheduler._heap) <= 2 * 50 + 16  # 5,000 items without compaction
    # Compaction dropped only cancelled items: each job fires once, at its last cron (":30" after 100 loads).
    fired = run_until(scheduler, clock, datetime(2026, 11, 28, 10, 15, tzinfo=UTC))
    assert sorted(item.job for item in fired) == sorted(f"j{i}" for i in range(50))
    assert {item.slot for item in fired} == {datetime(2026, 11, 28, 9, 30, tzinfo=UTC)}


def test_disabled_jobs_are_not_scheduled():
    clock = FakeClock(datetime(2026, 11, 28, 9, 10, tzinfo=UTC))
    scheduler = Scheduler(clock)
    scheduler.load({"off": job("off", "* * * * *", enabled=False)}, {})
    assert scheduler.next_wake() is None and scheduler.next_run("off") is None


def test_a_reload_as_a_slot_falls_due_does_not_lose_it():
    clock = FakeClock(datetime(2026, 11, 28, 9, 59, 59, tzinfo=UTC))
    scheduler = Scheduler(clock, random.Random(1))
    jobs = {"hourly": job("hourly", "0 * * * *"), "jittered": job("jittered", "0 10 * * *", jitter=600)}
    scheduler.load(jobs, {}, catch_up=False)
    clock.current = datetime(2026, 11, 28, 10, 0, 0, 5000, tzinfo=UTC)  # due, not yet dispatched
    scheduler.load(dict(jobs), catch_up=False)  # the app rewrote settings.json: same timing
    assert [item.job for item in scheduler.pop_due()] == ["hourly"]
    assert scheduler.next_run("jittered").date() == clock.current.date()  # still today, in its jitter delay
    changed = {**jobs, "hourly": job("hourly", "30 * * * *")}
    scheduler.load(changed, catch_up=False)
    assert scheduler.next_run("hourly") == datetime(2026, 11, 28, 10, 30, tzinfo=UTC)


def test_a_job_that_waits_for_its_first_slot_is_caught_up_only_once_it_ran():
    clock = FakeClock(datetime(2026, 11, 28, 9, 10, tzinfo=UTC))
    scheduler = Scheduler(clock)
    rotation = {"rotate": job("rotate", "30 3 * * 0", first_start=False)}
    assert scheduler.load(rotation, {}) == [] and scheduler.pop_due() == []  # never ran: waits for Sunday
    caught = scheduler.load(rotation, {"rotate": datetime(2026, 11, 15, 3, 30, tzinfo=UTC)})
    assert [(c.job, c.missed_slot) for c in caught] == [("rotate", datetime(2026, 11, 22, 3, 30, tzinfo=UTC))]


def test_due_runs_can_go_out_before_their_next_slots_are_computed():
    clock = FakeClock(datetime(2026, 11, 28, 9, 59, 59, tzinfo=UTC))
    scheduler = Scheduler(clock)
    jobs = {f"j{i}": job(f"j{i}", "0 * * * *") for i in range(3)}
    jobs["later"] = job("later", "30 10 * * *")
    scheduler.load(jobs, {}, catch_up=False)
    slot = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    clock.advance_to(slot.timestamp())
    due = scheduler.pop_due(reschedule=False)
    assert sorted(item.job for item in due) == ["j0", "j1", "j2"]
    # Their next slots wait: only "later" is known, and the deadline is half a second after the slot.
    assert scheduler.next_wake() == datetime(2026, 11, 28, 10, 30, tzinfo=UTC).timestamp()
    assert scheduler.reschedule_by() == slot.timestamp() + 0.5
    assert scheduler.pop_due() == []  # nothing runs twice meanwhile
    scheduler.reschedule()
    assert scheduler.reschedule_by() is None
    assert scheduler.next_wake() == datetime(2026, 11, 28, 10, 30, tzinfo=UTC).timestamp()
    assert scheduler.next_run("j0") == datetime(2026, 11, 28, 11, 0, tzinfo=UTC)


def test_a_reload_between_pop_and_reschedule_keeps_one_next_slot_per_job():
    clock = FakeClock(datetime(2026, 11, 28, 9, 59, 59, tzinfo=UTC))
    scheduler = Scheduler(clock)
    jobs = {"hourly": job("hourly", "0 * * * *"), "gone": job("gone", "0 * * * *")}
    scheduler.load(jobs, {}, catch_up=False)
    clock.advance_to(datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp())
    assert len(scheduler.pop_due(reschedule=False)) == 2
    scheduler.load({"hourly": jobs["hourly"]}, catch_up=False)  # same timing: its popped slot is kept
    scheduler.reschedule()
    fired = run_until(scheduler, clock, datetime(2026, 11, 28, 13, 30, tzinfo=UTC))
    assert [item.job for item in fired] == ["hourly"] * 3  # 11:00, 12:00, 13:00; "gone" never again
