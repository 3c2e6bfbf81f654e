"""Dispatch accuracy: how late job starts are, the real daemon next to APScheduler 3, same load.

    python benchmarks/bench_dispatch.py [--quick]

Measured through the real ``pmjobsd run`` process (4 workers): user jobs
(``"callable": "benchmarks.probe_jobs:record_start"``) write ``time.time()``
as their first act; lateness is that minus the run's cron slot, read from the
run history (the ``slot`` column).  Every run also goes through the history
rows and the jobs.log lines, as in production.

APScheduler 3 runs in this process: a BackgroundScheduler with a 4-thread
executor, ``misfire_grace_time=None`` (never drop a late run, as pmjobsd
never does), the same job body; lateness is start minus the
``scheduled_run_time`` it was submitted for.

Loads: *burst* — 200 jobs due in the same second; *steady* — 50 jobs firing
every second (50 runs/s; cron fires on whole seconds, so each second starts
with a batch of 50) for 10 s (``--quick``: 5 s).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_SUBMITTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from benchmarks.bench_idle import Program
from benchmarks.common import percentiles, pmjobsd_command, print_table, row, write_settings
from pmjobsd.core import registry

WORKERS = 4
BURST_JOBS = 200
STEADY_JOBS = 50
LEAD_SECONDS = 20  # time for either scheduler to start before the first slot (start-up is slow on a loaded machine)


class Load:
    """``jobs`` jobs, each firing at ``fields`` (second minute hour) for ``seconds`` seconds from ``first``."""

    def __init__(self, name: str, jobs: int, seconds: int, every_second: bool):
        self.name, self.jobs, self.seconds = name, jobs, seconds
        now = datetime.now(timezone.utc).replace(microsecond=0)
        self.first = now + timedelta(seconds=LEAD_SECONDS)
        self.end = self.first + timedelta(seconds=seconds)
        self.fields = ("*", "*", "*") if every_second else (self.first.second, self.first.minute, self.first.hour)

    def expected(self) -> int:
        return self.jobs * self.seconds

    def in_window(self, slot: datetime) -> bool:
        return self.first <= slot < self.end


def measure_pmjobsd(load: Load, root: Path) -> tuple[list[float], int]:
    """Lateness (s) of every run of ``load`` through the real daemon, and how many runs were skipped."""
    out = root / f"starts-{load.name}.txt"
    second, minute, hour = load.fields
    definitions = {name: {"enabled": False} for name in registry.BUILTIN_JOBS}
    for index in range(load.jobs):
        definitions[f"probe_{index:03d}"] = {
            "callable": "benchmarks.probe_jobs:record_start",
            "cron": f"{second} {minute} {hour} * * *",
            "catch_up": False,
            "options": {"out": str(out)},
        }
    write_settings(
        root, {"timezone": "UTC", "max_workers": WORKERS, "alerts": {"desktop": False}, "definitions": definitions}
    )
    daemon = Program("pmjobsd", pmjobsd_command(), root)
    try:
        daemon.wait_ready()
        if datetime.now(timezone.utc) >= load.first:
            raise RuntimeError(f"pmjobsd was not ready {LEAD_SECONDS} s after start; raise LEAD_SECONDS")
        wait_until(load.end + timedelta(seconds=1.5), lambda: _count(out) >= load.expected())
    finally:
        daemon.stop()
    starts = dict(line.split() for line in out.read_text().splitlines())
    history = next(root.rglob("history.db"))
    with sqlite3.connect(history) as db:
        slots = dict(db.execute("SELECT run_id, slot FROM runs WHERE trigger = 'schedule'").fetchall())
    lateness = []
    for run_id, slot_text in slots.items():
        slot = datetime.fromisoformat(slot_text)
        if load.in_window(slot) and run_id in starts:
            lateness.append(float(starts[run_id]) - slot.timestamp())
    return lateness, load.expected() - len(lateness)


def measure_apscheduler(load: Load, root: Path) -> tuple[list[float], int]:
    """Lateness (s) of every run of ``load`` under APScheduler 3, and how many runs were skipped."""
    out = root / f"aps-starts-{load.name}.txt"
    submitted: dict[str, list[datetime]] = defaultdict(list)
    skipped = []

    def on_event(event) -> None:
        if event.code == EVENT_JOB_SUBMITTED:
            submitted[event.job_id].extend(event.scheduled_run_times)
        else:
            skipped.append(event.job_id)

    def record_start(job_id: str) -> None:  # the same body as probe_jobs.record_start
        started = time.time()
        with open(out, "a") as handle:
            handle.write(f"{job_id} {started!r}\n")

    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(WORKERS)}, timezone="UTC", job_defaults={"misfire_grace_time": None}
    )
    scheduler.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES)
    second, minute, hour = load.fields
    for index in range(load.jobs):
        job_id = f"probe_{index:03d}"
        trigger = CronTrigger(second=second, minute=minute, hour=hour, timezone="UTC", end_date=load.end)
        scheduler.add_job(record_start, trigger, args=[job_id], id=job_id)
    scheduler.start()
    try:
        wait_until(load.end + timedelta(seconds=1.5), lambda: _count(out) >= load.expected())
    finally:
        scheduler.shutdown(wait=True)
    started: dict[str, list[float]] = defaultdict(list)
    for line in out.read_text().splitlines():
        job_id, when = line.split()
        started[job_id].append(float(when))
    lateness = []
    for job_id, slots in submitted.items():
        for slot, when in zip(slots, started[job_id], strict=False):  # the executor starts each job's runs in order
            if load.in_window(slot):
                lateness.append(when - slot.timestamp())
    return lateness, load.expected() - len(lateness)


def _count(path: Path) -> int:
    try:
        with open(path) as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def wait_until(end: datetime, done) -> None:
    """Sleep until ``end`` (UTC) has passed and ``done()`` is true, at most 30 s past ``end``."""
    limit = end + timedelta(seconds=30)
    while datetime.now(timezone.utc) < limit:
        if datetime.now(timezone.utc) >= end and done():
            return
        time.sleep(0.2)


def run(quick: bool = False) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_dispatch_") as folder:
        for name, jobs, seconds, every_second in (
            ("burst", BURST_JOBS, 1, False),
            ("steady", STEADY_JOBS, 5 if quick else 10, True),
        ):
            ours, ours_skipped = measure_pmjobsd(Load(name, jobs, seconds, every_second), Path(folder) / name)
            theirs, theirs_skipped = measure_apscheduler(Load(name, jobs, seconds, every_second), Path(folder))
            label = (
                f"{jobs} jobs due in the same second"
                if name == "burst"
                else f"{jobs} jobs every second ({jobs} runs/s, {seconds} s)"
            )
            notes = (
                f"{len(ours)} vs {len(theirs)} runs measured; not run: {ours_skipped} vs {theirs_skipped}; "
                f"{WORKERS} workers"
            )
            for stat, ours_s, theirs_s in zip(
                ("p50", "p99", "max"), percentiles(ours), percentiles(theirs), strict=True
            ):
                rows.append(
                    row(
                        f"lateness {stat}: {label}",
                        ours_s * 1000,
                        theirs_s * 1000,
                        "APScheduler 3 (same load)",
                        "ms",
                        notes,
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s of steady load instead of 10 s")
    print_table(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
