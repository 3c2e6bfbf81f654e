"""The status without a daemon (from the run history on disk), the daemon and history parts of the
document, held jobs, and the text table people read: real settings files and real SQLite histories."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pytest

from pmjobsd import __version__
from pmjobsd.core.held import Hold
from pmjobsd.core.history import RunHistory
from pmjobsd.core.history_writer import HistoryHealth
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import JobState, Severity, Status, Trigger
from pmjobsd.core.settings import load_settings
from pmjobsd.observe.status import (
    DaemonState,
    build_status,
    exit_code,
    history_lines,
    offline_status,
    render_text,
)
from tests.support.daemon import all_builtins_disabled

OK_JOB = {"cron": "0 9 * * *", "callable": "tests.support.sample_jobs:ok"}
T0 = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc).timestamp()


def write_settings(path, **definitions) -> None:
    jobs = {"timezone": "Europe/Berlin", "definitions": {**all_builtins_disabled(), **definitions}}
    path.write_text(json.dumps({"jobs": jobs}))


def record(history: RunHistory, run_id: str, job: str, status: Status, started: float, summary: str = "") -> None:
    entry = RunRecord(run_id, job, 1, Trigger.SCHEDULE, None, started, status, started + 2.0, summary=summary)
    history.record_start(entry)
    history.record_finish(entry)


@pytest.fixture
def app(tmp_path):
    """Settings with one job that ran OK and one that never ran; the history on disk, closed."""
    settings = tmp_path / "settings.json"
    write_settings(settings, nightly=OK_JOB, fresh=OK_JOB)
    history_path = tmp_path / "history.db"
    with RunHistory(history_path) as history:
        record(history, "n1", "nightly", Status.OK, T0, summary="3 backups verified")
    return load_settings(settings), history_path


class _Live:
    """A daemon's scheduler and runner, as LiveState asks them: here, one job held back."""

    def __init__(self, held: dict[str, Hold]):
        self._held = held

    def next_run(self, job):
        return None

    def running(self):
        return []

    def abandoned_count(self, job=None):
        return 0

    def held(self, job):
        return self._held.get(job)

    def unwritten(self):
        return {}


# --- offline_status ------------------------------------------------------------------------------
def test_without_a_daemon_the_status_comes_from_the_history_and_is_a_warn(app):
    loaded, history_path = app
    document = offline_status(history_path, loaded, pid=None)
    assert document["daemon"] == {"running": False, "pid": None, "version": __version__, "started_at": None}
    jobs = {job["name"]: job for job in document["jobs"]}
    assert jobs["nightly"]["status"] == "OK" and jobs["nightly"]["last_run"]["summary"] == "3 backups verified"
    assert jobs["nightly"]["next_run"].endswith(("+01:00", "+02:00"))  # from the cron, in Berlin
    assert datetime.fromisoformat(jobs["nightly"]["next_run"]).timetz().hour == 9
    assert jobs["fresh"]["status"] == "NEVER_RUN" and jobs["fresh"]["last_run"] is None
    assert document["status"] == "WARN" and exit_code(document) == Severity.WARN  # no daemon: WARN


def test_a_lock_holder_that_does_not_answer_is_a_fail(app):
    loaded, history_path = app
    document = offline_status(history_path, loaded, pid=4242)
    assert document["daemon"] == {
        "running": True,
        "pid": 4242,
        "version": __version__,
        "started_at": None,
        "responding": False,
    }
    assert document["status"] == "FAIL" and exit_code(document) == Severity.FAIL
    assert {job["name"]: job["next_run"] for job in document["jobs"]}["nightly"] is None  # only a daemon knows


def test_a_damaged_history_is_reported_not_repaired(app):
    loaded, history_path = app
    damaged = b"SQLite format 3\x00" + b"\xff" * 4080
    history_path.write_bytes(damaged)
    document = offline_status(history_path, loaded, pid=None)
    history = document["daemon"]["history"]
    assert history["damage"].startswith(f"{history_path} is damaged (")
    assert history["damage"].endswith("); pmjobsd run moves it aside and starts a fresh one")
    assert history_path.read_bytes() == damaged  # left for the daemon to move aside
    assert sorted(os.listdir(history_path.parent)) == ["history.db", "settings.json"]
    jobs = {job["name"]: job for job in document["jobs"]}
    assert jobs["nightly"]["last_run"] is None and jobs["nightly"]["status"] == "NEVER_RUN"
    assert document["status"] == "WARN"
    assert f"WARNING: run history: {history['damage']}" in render_text(document).splitlines()


# --- the daemon's part ---------------------------------------------------------------------------
def test_a_live_daemon_document_has_every_field_it_was_given():
    health = HistoryHealth(
        writable=False, backlog=12, dropped=0, failing_since=T0, error="database or disk is full", damage=None
    )
    state = DaemonState(
        running=True,
        pid=7,
        version="1.2",
        started_at=T0,
        abandoned_threads=0,
        heartbeat_age_s=0.4,
        host="laptop",
        history=health,
    )
    assert state.to_json() == {
        "running": True,
        "pid": 7,
        "version": "1.2",
        "started_at": "2026-11-28T08:00:00.000+00:00",
        "abandoned_threads": 0,
        "heartbeat_age_s": 0.4,
        "host": "laptop",
        "history": {
            "recording": False,
            "backlog": 12,
            "dropped": 0,
            "failing_since": "2026-11-28T08:00:00.000+00:00",
            "error": "database or disk is full",
        },
    }


@pytest.mark.parametrize(
    ("health", "severity"),
    [
        (HistoryHealth(), Severity.OK),
        (HistoryHealth(moved_aside="/d/history.db.damaged-1", damage="malformed"), Severity.WARN),
        (HistoryHealth(dropped=3), Severity.FAIL),  # attempts lost: runs are not being recorded
        (HistoryHealth(writable=False, backlog=5), Severity.FAIL),
    ],
)
def test_the_history_sets_the_overall_status(app, health, severity):
    loaded, history_path = app
    daemon = DaemonState(running=True, pid=7, version="x", started_at=T0, abandoned_threads=0, history=health)
    with RunHistory(history_path) as history:
        snapshot = build_status(loaded, history, daemon=daemon, live=_Live({}))
    assert snapshot.severity is severity
    document = snapshot.to_json()
    assert document["status"] == severity.name and exit_code(document) == severity  # the JSON reads the same


def test_a_held_job_is_a_fail_with_its_reason_and_window(app):
    loaded, history_path = app
    hold = Hold(hangs=2, since=T0, until=T0 + 600)
    daemon = DaemonState(running=True, pid=7, version="x", started_at=T0, abandoned_threads=0)
    with RunHistory(history_path) as history:
        snapshot = build_status(loaded, history, daemon=daemon, live=_Live({"nightly": hold}))
    jobs = {job.name: job for job in snapshot.jobs}
    assert jobs["nightly"].status is JobState.FAIL and jobs["fresh"].status is JobState.NEVER_RUN
    entry = {job["name"]: job for job in snapshot.to_json()["jobs"]}
    assert entry["nightly"]["held"] == {
        "reason": "held back: it hung past its timeout and forced a restart (2x in a row)",
        "hangs": 2,
        "since": "2026-11-28T08:00:00.000+00:00",
        "until": "2026-11-28T08:10:00.000+00:00",
    }
    assert "held" not in entry["fresh"] and snapshot.severity is Severity.FAIL


# --- the text table ------------------------------------------------------------------------------
def test_the_table_offline(app):
    loaded, history_path = app
    document = offline_status(history_path, loaded, pid=None)
    lines = render_text(document).splitlines()
    assert lines[0] == "pmjobsd is not running (status from the run history)"
    header = lines[lines.index("") + 1]
    assert header.split() == ["JOB", "STATUS", "LAST", "RUN", "NEXT", "RUN", "SUMMARY"]
    nightly = next(line for line in lines if line.startswith("nightly "))
    jobs = {job["name"]: job for job in document["jobs"]}
    last, next_run = jobs["nightly"]["last_run"]["started_at"], jobs["nightly"]["next_run"]
    assert nightly.split() == ["nightly", "OK", last, next_run, "3", "backups", "verified"]
    # Columns line up: each time starts where its heading does.
    assert nightly.index(last) == header.index("LAST RUN") and nightly.index(next_run) == header.index("NEXT RUN")
    fresh = next(line for line in lines if line.startswith("fresh "))
    assert fresh.split() == ["fresh", "NEVER_RUN", "-", jobs["fresh"]["next_run"]]  # no trailing blanks
    assert lines[-2:] == ["", "overall: WARN"]


def test_the_table_of_a_live_daemon_with_stuck_threads_and_invalid_settings():
    document = {
        "daemon": {
            "running": True,
            "pid": 7,
            "version": "1.2",
            "started_at": "2026-11-28T08:00:00.000+00:00",
            "abandoned_threads": 2,
        },
        "settings": {"path": "/s", "valid": False, "issues": ["jobs.max_workers: must be at least 1"]},
        "jobs": [
            {
                "name": "broken",
                "status": "FAIL",
                "next_run": None,
                "last_run": None,
                "config_errors": ["cron: bad", "timeout: bad"],
            },
        ],
        "status": "FAIL",
    }
    lines = render_text(document).splitlines()
    assert lines[:2] == [
        "pmjobsd 1.2 running, pid 7, since 2026-11-28T08:00:00.000+00:00",
        "WARNING: 2 timed-out job thread(s) still running",
    ]
    assert next(line for line in lines if line.startswith("broken ")).split() == [
        "broken",
        "FAIL",
        "-",
        "-",
        "cron:",
        "bad;",
        "timeout:",
        "bad",
    ]
    assert "settings: jobs.max_workers: must be at least 1" in lines and lines[-1] == "overall: FAIL"


def test_the_table_escapes_control_characters_from_summaries_and_issues(app):
    loaded, history_path = app
    with RunHistory(history_path) as history:
        record(history, "n2", "nightly", Status.WARN, time.time(), summary="member \x1b[2Jevil\r\nname.zip")
    document = offline_status(history_path, loaded, pid=None)
    document["settings"]["issues"] = ["path: \x1b]0;title\x07"]
    text = render_text(document)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    lines = text.splitlines()  # the CR LF in the summary did not break the table
    assert next(line for line in lines if line.startswith("nightly ")).endswith(" member \\x1b[2Jevil\\r\\nname.zip")
    assert lines[-3:] == ["settings: path: \\x1b]0;title\\x07", "", "overall: WARN"]


# --- history_lines -----------------------------------------------------------------------------
def test_history_lines_say_nothing_when_all_is_well():
    assert history_lines({}) == []
    assert history_lines({"recording": True, "backlog": 0, "dropped": 0}) == []


def test_history_lines_for_a_moved_aside_file_and_for_lost_runs():
    assert history_lines(
        {"recording": True, "backlog": 0, "dropped": 0, "moved_aside": "/d/h.db.bad", "damage": "malformed"}
    ) == ["WARNING: the run history was damaged (malformed); moved aside to /d/h.db.bad, a fresh one was started"]
    assert history_lines({"recording": True, "moved_aside": "/d/h.db.bad"}) == [
        "WARNING: the run history was damaged (unreadable); moved aside to /d/h.db.bad, a fresh one was started"
    ]
    assert history_lines({"recording": False, "backlog": 12, "dropped": 3, "error": "disk I/O error"}) == [
        "FAIL: runs are not being recorded (disk I/O error); 12 waiting in memory, 3 lost"
    ]
    assert history_lines({"recording": False, "backlog": 1000, "dropped": 9}) == [
        "FAIL: runs are not being recorded (history full); 1000 waiting in memory, 9 lost"
    ]
