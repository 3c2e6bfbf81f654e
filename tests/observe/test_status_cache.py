"""The live status is built once per change of state, and the page and the document made from the
kept parts are the same bytes as a fresh render: real settings, a real SQLite history, real HTTP."""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from pmjobsd.core.held import Hold
from pmjobsd.core.history import RunHistory, process_start_time
from pmjobsd.core.history_writer import HistoryHealth
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import Status, Trigger
from pmjobsd.core.settings import load_settings
from pmjobsd.observe.status import DaemonState, StatusCache, document_text, jobs_text
from pmjobsd.observe.statuspage import PageTemplate, render_page
from pmjobsd.observe.web import Health, StatusServer
from tests.support.daemon import all_builtins_disabled

OK_JOB = {"cron": "0 9 * * *", "callable": "tests.support.sample_jobs:ok"}
NOW = datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc)


@dataclass
class _Attempt:
    record: RunRecord
    progress: tuple[float | None, str] | None = None


@dataclass
class _Live:
    """What a daemon's LiveState answers, each part changeable by the test."""

    next_runs: dict = field(default_factory=dict)
    attempts: list = field(default_factory=list)
    holds: dict = field(default_factory=dict)
    pending: dict = field(default_factory=dict)

    def next_run(self, job):
        return self.next_runs.get(job)

    def running(self):
        return list(self.attempts)

    def abandoned_count(self, job=None):
        return 0

    def held(self, job):
        return self.holds.get(job)

    def unwritten(self):
        return dict(self.pending)


def _record(history: RunHistory, run_id: str, job: str, status: Status, started: float) -> None:
    entry = RunRecord(run_id, job, 1, Trigger.SCHEDULE, None, started, status, started + 2.0, summary="<b>&</b>")
    history.record_start(entry)
    history.record_finish(entry)


@pytest.fixture
def setup(tmp_path):
    settings = tmp_path / "settings.json"
    definitions = {**all_builtins_disabled(), "nightly": OK_JOB, "hourly": OK_JOB, "off": {**OK_JOB, "enabled": False}}
    settings.write_text(json.dumps({"jobs": {"timezone": "UTC", "definitions": definitions}}))
    history = RunHistory(tmp_path / "history.db")
    for index in range(30):
        _record(
            history, f"n{index}", "nightly", (Status.OK, Status.FAIL)[index % 2], NOW.timestamp() - 86400 * 3 + index
        )
    yield load_settings(settings), history, tmp_path / "history.db"
    history.close()


def _daemon(beat: float = 0.0) -> DaemonState:
    return DaemonState(True, 4242, "x", NOW.timestamp() - 7200, abandoned_threads=0, heartbeat_age_s=beat,
                       host="h", history=HistoryHealth())  # fmt: skip


def test_the_entries_are_kept_until_the_history_or_the_live_state_changes(setup):
    loaded, history, path = setup
    cache, live, jobs = StatusCache(), _Live(), dict(loaded.jobs)

    def build(beat: float = 0.0):
        return cache.build(loaded, history, daemon=_daemon(beat), live=live, jobs=jobs, now=NOW)

    first = build()
    again = build(beat=0.5)
    assert again.jobs is first.jobs and again.daemon.heartbeat_age_s == 0.5  # the daemon's part is new
    # Another connection (the history writer) commits an attempt: built again, and it shows.
    with RunHistory(path) as writer:
        _record(writer, "h1", "hourly", Status.OK, NOW.timestamp() - 60)
    after_commit = build()
    assert after_commit.jobs is not again.jobs
    assert {job.name: job.last_run.run_id for job in after_commit.jobs if job.last_run}["hourly"] == "h1"
    kept = build().jobs
    assert build().jobs is kept
    # Each part of the live state is part of the key.
    changes = [
        lambda: live.next_runs.__setitem__("nightly", NOW + timedelta(hours=1)),
        lambda: live.attempts.append(_Attempt(RunRecord("h2", "hourly", 1, Trigger.MANUAL, None, NOW.timestamp()))),
        lambda: setattr(live.attempts[0], "progress", (0.5, "half way")),
        lambda: live.holds.__setitem__("nightly", Hold(2, NOW.timestamp(), NOW.timestamp() + 60)),
        lambda: live.pending.__setitem__("hourly", RunRecord("h3", "hourly", 1, Trigger.MANUAL, None, 1.0)),
    ]
    for change in changes:
        change()
        changed = build()
        assert changed.jobs is not kept
        uncached = StatusCache().build(loaded, history, daemon=_daemon(), live=live, jobs=jobs, now=NOW)
        assert changed.jobs == uncached.jobs
        kept = changed.jobs
        assert build().jobs is kept


def test_a_running_row_of_another_process_is_read_again_and_shown_interrupted_once_it_is_gone(setup):
    loaded, history, path = setup
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with sqlite3.connect(path) as conn:  # a run-now of that process, in flight
            conn.execute(
                "INSERT INTO runs (run_id, attempt, job, trigger, started_at, status, pid, pid_started)"
                " VALUES ('other', 1, 'hourly', 'manual', ?, 'RUNNING', ?, ?)",
                (NOW.timestamp(), other.pid, process_start_time(other.pid)),
            )
        conn.close()
        cache, live, jobs = StatusCache(), _Live(), dict(loaded.jobs)

        def hourly():
            snapshot = cache.build(loaded, history, daemon=_daemon(), live=live, jobs=jobs, now=NOW)
            return {job.name: job for job in snapshot.jobs}["hourly"]

        assert hourly().recent[0].status is Status.RUNNING
    finally:
        other.kill()
        other.wait()
    # No commit since: only reading the row again shows that its writer is gone.
    assert hourly().recent[0].status is Status.INTERRUPTED


def test_the_document_and_the_page_from_kept_parts_are_the_same_bytes_as_a_fresh_render(setup):
    loaded, history, _ = setup
    live = _Live(next_runs={"nightly": NOW + timedelta(minutes=3)})
    live.attempts.append(_Attempt(RunRecord("h2", "hourly", 1, Trigger.MANUAL, None, NOW.timestamp() - 5), (0.25, "x")))
    cache, jobs = StatusCache(), dict(loaded.jobs)
    snapshot = cache.build(loaded, history, daemon=_daemon(1.25), live=live, jobs=jobs, now=NOW)
    assert document_text(snapshot, jobs_text(snapshot.jobs)) == json.dumps(snapshot.to_json(), indent=2)
    assert cache.document(snapshot) == snapshot.to_json()
    template = PageTemplate(snapshot)
    for later in (NOW, NOW + timedelta(seconds=41), NOW + timedelta(hours=5)):
        assert render_page(snapshot, later, template=template) == render_page(snapshot, later)
    # A later status with the same entries and a new heartbeat: the same template serves it.
    beat = cache.build(loaded, history, daemon=_daemon(9.0), live=live, jobs=jobs, now=NOW + timedelta(seconds=7))
    assert PageTemplate.key_of(beat) == template.key
    assert render_page(beat, NOW, template=template) == render_page(beat, NOW)

    server = StatusServer(
        "127.0.0.1",
        0,
        allow_remote=False,
        metrics_source=lambda: b"",
        status_source=lambda: snapshot,
        health_source=lambda: Health(True, 0, 1),
    )
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
        for _ in range(2):  # the second answer from the kept parts
            conn.request("GET", "/v1/jobs")
            response = conn.getresponse()
            assert response.read() == json.dumps(snapshot.to_json(), indent=2).encode() + b"\n"
            assert response.getheader("Cache-Control") == "no-store"
            conn.request("GET", "/")
            response = conn.getresponse()
            started = datetime.now(timezone.utc)
            body = response.read().decode()
            # The times are days old: their phrases do not change within the test.
            assert body == render_page(snapshot, started), body
            assert response.getheader("Content-Security-Policy")
        conn.close()
    finally:
        server.close()


def test_the_jobs_part_is_formatted_as_json_dumps_with_indent_would_whatever_the_values():
    from pmjobsd.observe.status import _nested

    values = [
        {},
        [],
        {"a": [], "b": {}, "c": [{}], "d": [[1, 2], {"x": None}]},
        {'quote"s': "line\nbreak\ttab \x1b[31m \u00e9\u4e2d \ud83d\ude00", "n": -0.0, "f": 1e-7, "big": 10**20},
        [True, False, None, 3.5, float("inf"), float("-inf"), "é"],
    ]
    for value in values:
        assert "{\n  " + f'"v": {_nested(value)}' + "\n}" == json.dumps({"v": value}, indent=2), value
        assert _nested(value, 0) == json.dumps(value, indent=2)


def test_a_kept_phrase_is_the_one_a_fresh_render_gives_at_every_moment_around_its_boundaries():
    from pmjobsd.observe.statuspage import _Moment, _when

    base = datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc)
    for offset in (0.0, 12.4, 89.6, 1799.0, 5399.9, 7000.0, 129_599.0, 400_000.0):
        for sign in (1, -1):
            moment = _Moment(base + timedelta(seconds=sign * offset))
            # Serving times sweeping across the rounding boundaries, the regime edges and zero.
            for step in range(-400, 400):
                now = base + timedelta(seconds=step * 0.37 + (step % 7) * 0.011)
                fresh = _when(base + timedelta(seconds=sign * offset), now)
                assert moment.at(now.timestamp()) == fresh, (offset, sign, step)
