"""Big and strange breach caches, refreshed by the real daemon and by the job on real files.

A 75 MB cache must not stall the other jobs (the scheduler and a 1-second job share the
daemon's GIL with the refresh) nor blow up the daemon's memory, and a file that cannot be
parsed for any reason (nesting too deep for a recursive parser, a top-level list) is handled
like any corrupt cache: moved aside, named in the summary, rebuilt.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest

from pmjobsd.core.context import Status
from pmjobsd.jobs.breach.cache import read_cache
from tests.support.daemon import AppHome, DaemonProcess, wait_for
from tests.support.fake_hibp import FakeHIBP
from tests.support.helpers import make_context

from .test_breach_cache_refresh import full_entry, options, prefixes, run, write_app_cache

BIG_PREFIXES = 2000  # x 800 suffixes: a 75 MB file, the size a big vault's cache reaches
SUFFIXES = 800
LATENESS_LIMIT = 0.100  # seconds: the requirement
# A loaded 2-core machine (eight engineers' tests) adds scheduling noise to any one slot;
# the old code missed 2-6 s of slots, so a few noisy ones cannot hide a stall.
NOISY_SLOTS_ALLOWED = 0.1


def write_big_cache(path: Path) -> int:
    """The app's format, written as the app writes it (json.dump); return its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = os.urandom
    with open(path, "w") as handle:
        handle.write("{")
        for index, prefix in enumerate(prefixes(BIG_PREFIXES)):
            hexes = rng(SUFFIXES * 18).hex().upper()
            entry = sorted([hexes[i * 36 : i * 36 + 35], 1 + i % 4000] for i in range(SUFFIXES))
            handle.write((", " if index else "") + json.dumps(prefix) + ": " + json.dumps(entry))
        handle.write("}")
    return path.stat().st_size


def tick_lateness(home, window: tuple[float, float]) -> tuple[list[float], int]:
    """Lateness (jobs.log started ts - slot) of each tick slot in ``window``, and slots missed."""
    started = {line["run_id"]: datetime.fromisoformat(line["ts"]).timestamp() for line in home.events("job.started")}
    with sqlite3.connect(home.history_path) as db:
        rows = db.execute("SELECT run_id, slot FROM runs WHERE job='tick' AND slot IS NOT NULL").fetchall()
    slots = {datetime.fromisoformat(slot).timestamp(): run_id for run_id, slot in rows}
    lateness, missed = [], 0
    for second in range(int(window[0]) + 1, int(window[1])):
        run_id = slots.get(float(second))
        if run_id is None or run_id not in started:
            missed += 1  # a slot skipped by a stalled loop is the worst lateness of all
        else:
            lateness.append(started[run_id] - second)
    return lateness, missed


def vm_hwm(pid: int) -> int:
    """Peak resident set size of ``pid`` in bytes (/proc/<pid>/status VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def app_home(tmp_path):
    """An app home for a real daemon (this folder's ``home`` fixture is a bare path)."""
    return AppHome(tmp_path / "apphome")


@pytest.fixture
def daemon(app_home):
    process: list[DaemonProcess] = []
    yield lambda: process.append(DaemonProcess(app_home)) or process[0].wait_ready(timeout=60)
    if process and process[0].proc.poll() is None:
        process[0].kill()


def test_a_75_mb_cache_neither_stalls_a_1_second_job_nor_takes_3x_its_size(app_home, daemon):
    home = app_home
    cache_path = home.cache_dir / "breach_cache.json"
    size = write_big_cache(cache_path)
    assert size > 70e6
    with FakeHIBP(range_size=SUFFIXES, padding=0) as server:
        refresh_options = {
            "api_base": server.base,
            "breach_api_base": server.base,
            "check_latest_breach": False,
            "rate_limit": 0,
            "max_requests": 200,
            "min_plausible_suffixes": 50,
        }
        home.write_settings(
            {
                "definitions": {
                    "tick": {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"},
                    "breach_cache_refresh": {
                        "cron": "@yearly",
                        "catch_up": False,
                        "jitter": 0,
                        "options": refresh_options,
                    },
                }
            }
        )
        process = daemon()
        wait_for(lambda: len(home.events("job.succeeded", job="tick")) >= 2, message="tick running")
        asked = home.cli("run-now", "breach_cache_refresh")
        assert asked.returncode == 0, asked.stderr
        finished = wait_for(
            lambda: [
                e for e in home.events(job="breach_cache_refresh") if e["event"] in ("job.succeeded", "job.failed")
            ],
            timeout=110,
            message="the refresh to finish",
        )
        peak = vm_hwm(process.pid)
        (started,) = home.events("job.started", job="breach_cache_refresh")
        window = (
            datetime.fromisoformat(started["ts"]).timestamp(),
            datetime.fromisoformat(finished[0]["ts"]).timestamp(),
        )
        time.sleep(1.5)  # the tick slots at the window's end are recorded
        process.stop()
    lateness, missed = tick_lateness(home, window)
    lateness.sort()
    print(
        f"\nrefresh of a {size / 1e6:.1f} MB cache took {window[1] - window[0]:.1f} s; daemon VmHWM "
        f"{peak / 1e6:.0f} MB ({peak / size:.2f}x the file); tick slots {len(lateness) + missed}, missed {missed}, "
        f"lateness median {lateness[len(lateness) // 2] * 1000 if lateness else float('nan'):.1f} ms, "
        f"max {lateness[-1] * 1000 if lateness else float('nan'):.1f} ms"
    )
    assert finished[0]["status"] == "OK", finished[0]
    assert json.loads(json.dumps(read_cache(cache_path)["00000"])) == full_entry(server, "00000")  # refreshed
    assert peak <= 3 * size, f"daemon peaked at {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB cache"
    slots = len(lateness) + missed
    assert slots >= 3, "the refresh was too short to measure anything"
    late = missed + sum(1 for value in lateness if value > LATENESS_LIMIT)
    # One noisy slot is allowed however short the refresh (the old code missed 6 and was 4 s late).
    assert late <= max(1, NOISY_SLOTS_ALLOWED * slots), (
        f"{late} of {slots} tick slots later than {LATENESS_LIMIT * 1000:.0f} ms "
        f"(missed {missed}, worst {max(lateness, default=0) * 1000:.0f} ms)"
    )


NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "damaged",
    [
        '{"00000": [["' + "A" * 35 + '", 3]], "0ABCD": ' + NESTED + "}",  # nested too deep inside an entry
        NESTED,  # a nested list at the top
        '[["00000", 1], ["0ABCD", 2]]',  # a top-level list
    ],
    ids=["nested_entry", "nested_top", "top_level_list"],
)
def test_a_cache_that_cannot_be_parsed_is_moved_aside_named_and_rebuilt(home, damaged):
    with FakeHIBP() as server:
        cache_path = write_app_cache(home, {p: [] for p in prefixes(3)})
        _, first = run(home, options(server))
        assert first.status is Status.OK
        cache_path.write_text(damaged)
        os.utime(cache_path, (time.time() - 120,) * 2)  # left like this (not being written now)
        _, result = run(home, options(server))
        aside = list(cache_path.parent.glob("breach_cache.json.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_text() == damaged  # moved aside, never lost
        assert result.status is Status.WARN
        assert aside[0].name in result.summary and "corrupt" in result.summary  # named
        assert result.details["corrupt_file_moved_to"] == aside[0].name
        rebuilt = read_cache(cache_path)
        assert set(prefixes(3)) <= set(rebuilt)  # what pmjobsd knew is back, freshly fetched
        assert rebuilt["00001"] == full_entry(server, "00001")
        assert make_context(home, "x").paths.breach_cache_path == cache_path
