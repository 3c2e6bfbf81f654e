"""Scale: memory and per-tick CPU with 10,000 jobs, and how the cost of one due run grows with n.

    python benchmarks/bench_scale.py [--quick]

*10,000 jobs* — each side in a fresh child process: resident memory added by
10,000 daily cron jobs, and the CPU of one scheduler tick with nothing due.
pmjobsd: the real path, ``load_settings`` on a settings.json holding the
10,000 user jobs, then ``Scheduler.load``; a tick is ``pop_due()`` +
``next_wake()`` (the scheduler's share of a main-loop wake-up).  APScheduler 3:
``add_job`` with ``CronTrigger.from_crontab`` into a running
BackgroundScheduler; a tick is its ``_process_jobs()`` (what its thread runs
on every wake-up).

*Growth* — in this process, n jobs due at distinct seconds of the day: time
per due run to find it, pop it and compute its next fire time.  pmjobsd:
``Scheduler.pop_due()`` with an injected clock (a heap: O(log n) plus one
cronsim step), and again with a constant-cost schedule in place of cronsim to
show the part that depends on n.  Baseline: the `schedule` package's
``run_pending()`` with one job made due (it asks every job ``should_run``: O(n)).

*History at scale* — a run history of 3,000,000 attempts of a 1-second job (35 days; 200,000
with ``--quick``), filled with plain INSERTs and its summary rebuilt by the upgrade path.
Insert: one attempt (the writer's two upserts, the summary's trigger, autocommit) appended
to it, against the same into an empty history.  Purge: ``RunHistory.purge`` on its own
connection deleting the oldest 300,000 rows (50,000), rows per second, extrapolated to a year
of that job (31.5 M rows) and to how many runs of ``log_purge`` (900 s timeout) clear it; a
purge told to stop at a deadline, how far past it it ends.  Stall: meanwhile a thread records
attempts through the real :class:`HistoryWriter` (``record_start`` returns once the start is
on disk, in the start journal, which is what the runner's worker waits for; the row follows in
the writer's next commit); the longest ``record_start`` during the purge against the longest in
as many attempts without a purge.  Start-up: exec to ``READY=1`` of ``pmjobsd
run`` with a copy of that history against an empty one, in turns; and the one-time cost of
the first open after the upgrade (the slot index built).  Run ids are time-ordered (UUID version 7),
as the runner's.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fill_history, memory_kb, pmjobsd_command, print_table, row, write_settings

SCALE_JOBS = 10_000
HISTORY_ROWS = 3_000_000
QUICK_HISTORY_ROWS = 200_000
YEAR_OF_SECONDS = 31_536_000
PURGE_ROWS, QUICK_PURGE_ROWS = 300_000, 50_000  # purged to measure the rate (a year of them would take an hour)
TICKS = 1000


def _far_hour() -> int:
    """An hour of the day twelve hours away, so that no job falls due while we measure."""
    return (datetime.now(timezone.utc).hour + 12) % 24


def child_pmjobsd(jobs: int) -> dict:
    from benchmarks import probe_jobs  # noqa: F401 - imported before the baseline reading, like the libraries
    from pmjobsd.core import registry
    from pmjobsd.core.scheduler import Scheduler
    from pmjobsd.core.settings import load_settings

    hour = _far_hour()
    definitions = {
        f"job_{i:05d}": {"callable": "benchmarks.probe_jobs:noop", "cron": f"{i % 60} {hour} * * *", "catch_up": False}
        for i in range(jobs)
    }
    definitions.update({name: {"enabled": False} for name in registry.BUILTIN_JOBS})
    folder = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    settings_path = write_settings(folder, {"timezone": "UTC", "definitions": definitions})
    del definitions
    gc.collect()
    before = memory_kb(os.getpid())
    started = time.perf_counter()
    loaded = load_settings(settings_path)
    scheduler = Scheduler()
    scheduler.load(loaded.jobs, catch_up=False)
    build_s = time.perf_counter() - started
    assert sum(not job.builtin for job in loaded.jobs.values()) == jobs, loaded.issues[:3]
    gc.collect()
    after = memory_kb(os.getpid())

    def tick() -> None:
        scheduler.pop_due()
        scheduler.next_wake()

    return {"rss_kb": after - before, "tick_us": _cpu_per_call(tick), "build_s": build_s}


def child_apscheduler(jobs: int) -> dict:
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    from benchmarks.probe_jobs import noop

    hour = _far_hour()
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start()
    gc.collect()
    before = memory_kb(os.getpid())
    started = time.perf_counter()
    for i in range(jobs):
        scheduler.add_job(noop, CronTrigger.from_crontab(f"{i % 60} {hour} * * *", timezone="UTC"), args=[None])
    build_s = time.perf_counter() - started
    gc.collect()
    after = memory_kb(os.getpid())
    result = {"rss_kb": after - before, "tick_us": _cpu_per_call(scheduler._process_jobs), "build_s": build_s}
    scheduler.shutdown(wait=False)
    return result


def _cpu_per_call(function) -> float:
    """Median CPU microseconds of one call, over batches of ``TICKS`` calls."""
    batches = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(TICKS):
            function()
        batches.append((time.process_time() - started) / TICKS * 1e6)
    return statistics.median(batches)


def in_child(kind: str, jobs: int) -> dict:
    """Run ``child_<kind>`` in a fresh interpreter and return what it measured."""
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--jobs", str(jobs)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


# --- growth ---------------------------------------------------------------------------
class FixedClock:
    def __init__(self, now: datetime):
        self.current = now

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return self.current.timestamp()


class DailyAt:
    """A stand-in for CronSchedule with a constant-cost step: fires daily ``offset`` seconds after midnight UTC.

    Timing the scheduler with it isolates the heap and bookkeeping, the part that depends on n.
    """

    def __init__(self, offset: int):
        self.offset = offset

    def next_after(self, moment: datetime) -> datetime:
        stamp = moment.timestamp()
        fire = stamp - stamp % 86400 + self.offset
        return datetime.fromtimestamp(fire if fire > stamp else fire + 86400, timezone.utc)


def pmjobsd_due_run_us(n: int, ticks: int, real_cron: bool = True) -> float:
    """Median microseconds per due run of ``Scheduler.pop_due()`` with ``n`` jobs at distinct seconds.

    ``real_cron=False`` uses :class:`DailyAt` instead of cronsim.
    """
    from pmjobsd.core.cron import CronSchedule
    from pmjobsd.core.scheduler import Scheduler
    from pmjobsd.core.settings import JobDefinition, ResolvedJob

    definition = JobDefinition(cron="* * * * *", catch_up=False)
    schedules: dict[int, object] = {}
    jobs = {}
    for i in range(n):
        second_of_day = (i * 86400 // n) if n <= 86400 else i % 86400
        if second_of_day not in schedules:
            h, m, s = second_of_day // 3600, second_of_day // 60 % 60, second_of_day % 60
            schedules[second_of_day] = (
                CronSchedule(f"{s} {m} {h} * * *", timezone.utc) if real_cron else DailyAt(second_of_day)
            )
        jobs[f"job_{i}"] = ResolvedJob(f"job_{i}", definition, lambda ctx: None, {}, False, schedules[second_of_day])
    clock = FixedClock(datetime(2026, 11, 28, tzinfo=timezone.utc))
    scheduler = Scheduler(clock)
    scheduler.load(jobs, catch_up=False)
    per_run = []
    for _ in range(ticks):
        clock.current = datetime.fromtimestamp(scheduler.next_wake(), timezone.utc)
        started = time.perf_counter()
        due = scheduler.pop_due()
        per_run.append((time.perf_counter() - started) / len(due) * 1e6)
    return statistics.median(per_run)


def schedule_due_run_us(n: int, ticks: int) -> float:
    """Median microseconds of ``schedule``'s ``run_pending()`` with ``n`` jobs, one of them due."""
    import random

    import schedule

    scheduler = schedule.Scheduler()
    jobs = []
    for i in range(n):
        second_of_day = (i * 86400 // n) if n <= 86400 else i % 86400
        at = f"{second_of_day // 3600:02d}:{second_of_day // 60 % 60:02d}:{second_of_day % 60:02d}"
        jobs.append(scheduler.every().day.at(at).do(lambda: None))
    rng = random.Random(1)
    timings = []
    for _ in range(ticks):
        job = rng.choice(jobs)
        job.next_run = datetime.now() - timedelta(seconds=1)  # schedule keeps naive local times
        started = time.perf_counter()
        scheduler.run_pending()
        timings.append((time.perf_counter() - started) * 1e6)
    return statistics.median(timings)


def _fill_history(path: Path, count: int, start: float) -> None:
    """``count`` finished attempts of one job, one a second from ``start``; the summary rebuilt once."""
    fill_history(path, ["every_second"], count, start, 0.2)


def _insert_us(path: Path, attempts: int, start: float) -> float:
    """Median microseconds to write one attempt (start and finish) through ``RunHistory.write``."""
    from pmjobsd.core.history import RunHistory
    from pmjobsd.core.observers import RunRecord
    from pmjobsd.core.outcomes import Status

    timings = []
    with RunHistory(path) as history:
        for index in range(attempts):
            record = RunRecord(f"new-{index}", "every_second", 1, "schedule", None, start + index)
            began = time.perf_counter()
            history.write(record)
            record.status, record.finished_at = Status.OK, start + index + 0.2
            history.write(record)
            timings.append((time.perf_counter() - began) * 1e6)
    return statistics.median(timings)


def _record_while(path: Path, busy, minimum: int) -> list[float]:
    """Record attempts through the real writer while ``busy()`` (at least ``minimum``); each record_start in ms."""
    from pmjobsd.core.history_writer import HistoryWriter
    from pmjobsd.core.observers import RunRecord
    from pmjobsd.core.outcomes import Status

    writer = HistoryWriter(path, durable_wait=30.0)
    stalls = []
    index = 0
    while busy() or index < minimum:
        record = RunRecord(f"live-{index}-{time.time()}", "recorded", 1, "schedule", None, time.time())
        began = time.perf_counter()
        writer.record_start(record)
        stalls.append((time.perf_counter() - began) * 1000)
        record.status, record.finished_at = Status.OK, time.time()
        writer.record_finish(record)
        index += 1
        time.sleep(0.002)
    writer.close()
    return stalls


def _start_home(history: Path | None, home: Path) -> Path:
    """A HOME with the built-in jobs and the history's job, its history a copy of ``history``."""
    import shutil

    from pmjobsd.core import registry

    definitions = {name: {"enabled": True, "catch_up": False} for name in registry.BUILTIN_JOBS}
    definitions["every_second"] = {"cron": "0 0 1 1 *", "catch_up": False, "callable": "tests.support.web_jobs:counted"}
    write_settings(home, {"timezone": "UTC", "alerts": {"desktop": False, "targets": []}, "definitions": definitions})
    if history is not None:
        target = home / ".local/share/secure-password-manager/jobs/history.db"
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(history, target)
        target.chmod(0o600)
    return home


def _ready_seconds(home: Path) -> float:
    """exec to READY=1 of ``pmjobsd run`` on ``home``."""
    from benchmarks.bench_idle import Program

    program = Program("pmjobsd", pmjobsd_command(), home)
    try:
        return program.wait_ready()
    finally:
        program.stop()


def _startup_rows(big: Path, count: int, folder: Path, quick: bool) -> list[dict]:
    starts = 3 if quick else 7
    empty_home, big_home = _start_home(None, folder / "start-empty"), _start_home(big, folder / "start-big")
    empty, full = [], []
    for _ in range(starts):  # in turns, so that load on the machine falls on both
        empty.append(_ready_seconds(empty_home))
        full.append(_ready_seconds(big_home))
    return [
        row(
            f"start-up: exec to READY=1, {count:,} attempts in the history",
            statistics.median(full) * 1000,
            statistics.median(empty) * 1000,
            "the same with an empty history",
            "ms",
            f"median of {starts} starts each, in turns (min {min(full) * 1000:.0f} vs {min(empty) * 1000:.0f} ms); "
            "the built-in jobs and the history's job, the same HOME for every start (page cache warm)",
        )
    ]


def _upgrade_s(big: Path) -> float:
    """Seconds of the first open after an upgrade: ``big`` without the slot index, opened once."""
    import sqlite3

    from pmjobsd.core.history import RunHistory

    with sqlite3.connect(big) as conn:
        conn.execute("DROP INDEX runs_job_slot")
    began = time.perf_counter()
    RunHistory(big).close()
    return time.perf_counter() - began


def history_at_scale(quick: bool) -> list[dict]:
    import threading

    from pmjobsd.core.history import RunHistory
    from pmjobsd.jobs.logs.log_purge import STOP_MARGIN

    count = QUICK_HISTORY_ROWS if quick else HISTORY_ROWS
    attempts = 300 if quick else 2000
    timeout = 900.0  # log_purge's default timeout
    with tempfile.TemporaryDirectory() as folder:
        big, empty = Path(folder) / "big.db", Path(folder) / "empty.db"
        start = time.time() - count
        began = time.perf_counter()
        _fill_history(big, count, start)
        fill_s = time.perf_counter() - began
        upgrade_s = _upgrade_s(big)
        startup = _startup_rows(big, count, Path(folder), quick)
        big_us = _insert_us(big, attempts, start + count)
        empty_us = _insert_us(empty, attempts, start + count)

        quiet = _record_while(big, lambda: False, 300 if quick else 1000)
        cutoff = start + min(count // 2, QUICK_PURGE_ROWS if quick else PURGE_ROWS)  # the oldest rows
        purged: dict = {}

        def purge() -> None:
            began = time.perf_counter()
            with RunHistory(big) as history:
                purged["rows"] = history.purge(cutoff)
            purged["s"] = time.perf_counter() - began

        thread = threading.Thread(target=purge)
        thread.start()
        during = _record_while(big, thread.is_alive, 10)
        thread.join()
        # A purge told to stop at a deadline (log_purge's stop()): how far past it does it end?
        window = 1.0
        with RunHistory(big) as history:
            deadline = time.monotonic() + window
            stopped = history.purge(time.time(), stop=lambda: time.monotonic() >= deadline)
            overshoot_ms = (time.monotonic() - deadline) * 1000
    rate = purged["rows"] / purged["s"]
    per_run = rate * (timeout - STOP_MARGIN)
    return startup + [
        row(
            f"history insert, one attempt, {count:,} rows",
            big_us,
            empty_us,
            "the same into an empty history",
            "us",
            f"RunHistory.write twice (start, finish), the summary trigger, autocommit; median of {attempts}; "
            f"{count:,} rows filled in {fill_s:.0f} s (plain INSERTs, summary rebuilt)",
        ),
        row(
            f"history purge, {purged['rows']:,} of {count:,} rows",
            rate,
            None,
            "-",
            "rows/s",
            f"{purged['s']:.1f} s, batches sized to hold the lock ~2 ms; a day of a 1-second job (86,400 rows) "
            f"{86_400 / rate:.1f} s, a year ({YEAR_OF_SECONDS / 1e6:.1f} M rows) {YEAR_OF_SECONDS / rate / 60:.0f} min: "
            f"log_purge ({timeout:.0f} s timeout, stops {STOP_MARGIN:.0f} s before) clears it in "
            f"{math.ceil(YEAR_OF_SECONDS / per_run)} daily runs, each a clean OK",
        ),
        row(
            "history purge: end past its stop deadline",
            overshoot_ms,
            None,
            "-",
            "ms",
            f"purge(stop=deadline {window:.0f} s away) on the rest of the history: {stopped:,} rows, then the "
            "batch in progress finishes; the next purge goes on from there",
        ),
        row(
            f"history upgrade: first open adds the slot index, {count:,} rows",
            upgrade_s * 1000,
            None,
            "-",
            "ms",
            "once per history, on the first start after the upgrade (last_slots() then seeks it per job)",
        ),
        row(
            "longest runner stall while the history is purged",
            max(during),
            max(quiet),
            "the same writer, no purge",
            "ms",
            f"record_start through the real HistoryWriter: {len(during)} attempts during the purge, p99 "
            f"{statistics.quantiles(during, n=100)[98]:.1f} ms; without: {len(quiet)} attempts, "
            f"p99 {statistics.quantiles(quiet, n=100)[98]:.1f} ms",
        ),
    ]


def run(quick: bool = False) -> list[dict]:
    ours, theirs = in_child("pmjobsd", SCALE_JOBS), in_child("apscheduler", SCALE_JOBS)
    rows = [
        row(
            f"memory for {SCALE_JOBS:,} scheduled jobs",
            ours["rss_kb"] / 1024,
            theirs["rss_kb"] / 1024,
            "APScheduler 3",
            "MB",
            f"RSS added; loading took {ours['build_s']:.2f} s (settings validated) vs "
            f"{theirs['build_s']:.2f} s (add_job)",
        ),
        row(
            f"CPU per scheduler tick, {SCALE_JOBS:,} jobs, none due",
            ours["tick_us"],
            theirs["tick_us"],
            "APScheduler 3",
            "us",
            "pmjobsd: pop_due()+next_wake(); APScheduler: _process_jobs()",
        ),
    ]
    sizes = (100, 1000, 10_000, 100_000)
    growth = {}
    ticks = 300 if quick else 2000
    for n in sizes:
        growth[n] = (
            pmjobsd_due_run_us(n, ticks),
            pmjobsd_due_run_us(n, ticks, real_cron=False),
            schedule_due_run_us(n, max(10, min(ticks, 2_000_000 // n))),
        )
        gc.collect()
    for n in sizes:
        ours_us, heap_us, theirs_us = growth[n]
        rows.append(
            row(
                f"find+reschedule one due run, n={n:,}",
                ours_us,
                theirs_us,
                "schedule run_pending()",
                "us",
                f"scheduler part without the cronsim step {heap_us:.1f} us (x{heap_us / growth[100][1]:.2f} "
                f"from n=100); schedule x{theirs_us / growth[100][2]:.0f} from n=100",
            )
        )
    return rows + history_at_scale(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ticks")
    parser.add_argument("--child", choices=("pmjobsd", "apscheduler"), help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=SCALE_JOBS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps((child_pmjobsd if args.child == "pmjobsd" else child_apscheduler)(args.jobs)))
        return
    print_table(run(args.quick))


if __name__ == "__main__":
    main()
