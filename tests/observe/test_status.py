"""The status: built typed from the settings and the history, its JSON document, its exit code."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from pmjobsd.core.history import RunHistory
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import JobState, Severity, Status, Trigger
from pmjobsd.core.settings import load_settings
from pmjobsd.observe.status import DaemonState, build_status, exit_code, overall_severity
from tests.support.daemon import all_builtins_disabled

UTC_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"
LIVE = DaemonState(running=True, pid=7, version="x", started_at=1000.0, abandoned_threads=0, heartbeat_age_s=0.1)


def document(*states: str, running=True, responding=None, abandoned=0, valid=True) -> dict:
    daemon = {"running": running, "pid": 1, "version": "x", "started_at": None, "abandoned_threads": abandoned}
    if responding is not None:
        daemon["responding"] = responding
    return {
        "daemon": daemon,
        "settings": {"path": "/s", "valid": valid, "issues": []},
        "jobs": [{"name": f"j{n}", "status": state} for n, state in enumerate(states)],
    }


@pytest.mark.parametrize(
    ("states", "code"),
    [
        ((), 0),
        (("OK", "NEVER_RUN", "DISABLED", "RUNNING"), 0),
        (("OK", "WARN", "DISABLED"), 1),
        (("WARN", "FAIL", "OK"), 2),
        (("OK", "LATER_WORD"), 2),  # a state this version does not know
    ],
)
def test_the_exit_code_of_a_document_is_the_worst_severity(states, code):
    assert exit_code(document(*states)) == code


def test_the_daemon_and_the_settings_raise_the_exit_code():
    assert exit_code(document("OK", running=False)) == 1
    assert exit_code(document("OK", abandoned=2)) == 1
    assert exit_code(document("OK", valid=False)) == 1
    assert exit_code(document("FAIL", valid=False)) == 2
    assert exit_code(document("OK", responding=False)) == 2  # holds the lock, does not answer: wedged
    assert overall_severity([], running=True, responding=None, abandoned_threads=0, settings_valid=True) is Severity.OK


@dataclass
class _Attempt:
    record: RunRecord
    progress: tuple[float | None, str] | None


class _Live:
    """A daemon's scheduler and runner, as :class:`LiveState` asks them."""

    def __init__(self, next_runs, running=(), abandoned=None):
        self.next_runs, self._running, self.abandoned = next_runs, list(running), abandoned or {}

    def next_run(self, job):
        return self.next_runs.get(job)

    def running(self):
        return self._running

    def abandoned_count(self, job=None):
        return self.abandoned.get(job, 0) if job else sum(self.abandoned.values())

    def held(self, job):
        return None

    def unwritten(self):
        return {}


@pytest.fixture
def setup(tmp_path):
    settings = tmp_path / "settings.json"
    ok = {"cron": "0 9 * * *", "callable": "tests.support.sample_jobs:ok"}
    definitions = {
        **all_builtins_disabled(),
        "done": ok,
        "retrying": {**ok, "retries": 2},
        "busy": ok,
        "fresh": ok,
        "off": {**ok, "enabled": False},
        "broken": {**ok, "cron": "whenever"},
    }
    settings.write_text(json.dumps({"jobs": {"timezone": "Europe/Berlin", "definitions": definitions}}))
    history = RunHistory(tmp_path / "history.db")
    for run_id, job, status, final in [
        ("d1", "done", Status.FAIL, True),
        ("d2", "done", Status.OK, True),
        ("r1", "retrying", Status.TIMEOUT, False),
        ("x1", "broken", Status.FAIL, True),
    ]:
        started = time.time() - 60
        record = RunRecord(run_id, job, 1, Trigger.SCHEDULE, None, started, status, started + 1.5, final=final)
        history.record_start(record)
        history.record_finish(record)
    yield load_settings(settings), history
    history.close()


def test_the_snapshot_is_typed_and_its_document_formatted(setup):
    loaded, history = setup
    now = datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc)
    snapshot = build_status(loaded, history, daemon=DaemonState(False, None, "x", None), now=now)
    jobs = {job.name: job for job in snapshot.jobs}
    assert {name: job.status for name, job in jobs.items()}.items() >= {
        "done": JobState.OK,
        "retrying": JobState.WARN,  # timed out, a retry to come
        "fresh": JobState.NEVER_RUN,
        "off": JobState.DISABLED,
        "broken": JobState.FAIL,  # not scheduled
    }.items()
    done = jobs["done"]
    assert isinstance(done.last_run.started_at, float) and done.last_run.status is Status.OK
    assert done.last_success_at == done.last_run.finished_at and done.recent[1].status is Status.FAIL
    assert done.next_run == datetime(2026, 11, 29, 8, tzinfo=timezone.utc)  # 9:00 in Berlin, offline from cron
    assert snapshot.severity is Severity.FAIL

    document = snapshot.to_json()
    assert document["status"] == "FAIL" and exit_code(document) == snapshot.severity
    assert re.fullmatch(UTC_MS, document["generated_at"])
    entry = {job["name"]: job for job in document["jobs"]}
    assert list(entry["done"]) == [
        "name",
        "enabled",
        "cron",
        "status",
        "next_run",
        "last_run",
        "consecutive_failures",
        "description",
        "last_success_at",
        "recent",
    ]
    assert entry["done"]["next_run"] == "2026-11-29T09:00:00+01:00"  # the job's own zone
    assert (
        re.fullmatch(UTC_MS, entry["done"]["last_run"]["started_at"])
        and entry["done"]["last_run"]["trigger"] == "schedule"
    )
    assert re.fullmatch(UTC_MS, entry["done"]["last_success_at"])
    assert entry["broken"]["config_errors"] and "description" not in entry["broken"] and entry["broken"]["cron"] is None
    assert entry["broken"]["last_run"]["status"] == "FAIL"
    assert document["daemon"] == {"running": False, "pid": None, "version": "x", "started_at": None}
    json.dumps(document)  # plain JSON all through


def test_a_live_daemon_adds_running_attempts_next_runs_and_stuck_threads(setup):
    loaded, history = setup
    nine = datetime(2026, 11, 29, 8, 0, 7, tzinfo=timezone.utc)  # with its jitter
    running = RunRecord("b1", "busy", 1, Trigger.MANUAL, None, 2000.0)
    live = _Live({"done": nine}, running=[_Attempt(running, (0.5, "half way"))], abandoned={"retrying": 1})
    snapshot = build_status(loaded, history, daemon=LIVE, live=live, jobs=loaded.jobs)
    jobs = {job.name: job for job in snapshot.jobs}
    assert jobs["busy"].status is JobState.RUNNING and jobs["busy"].running.progress_message == "half way"
    assert jobs["done"].next_run == nine and jobs["fresh"].next_run is None  # only what the scheduler says
    assert jobs["retrying"].abandoned_threads == 1
    entry = {job["name"]: job for job in snapshot.to_json()["jobs"]}
    assert entry["busy"]["running"] == {
        "run_id": "b1",
        "attempt": 1,
        "started_at": "1970-01-01T00:33:20.000+00:00",
        "progress": 0.5,
        "progress_message": "half way",
    }
    assert entry["retrying"]["abandoned_threads"] == 1 and "abandoned_threads" not in entry["done"]
    assert entry["done"]["next_run"] == "2026-11-29T09:00:07+01:00"
    daemon = snapshot.to_json()["daemon"]
    assert list(daemon) == ["running", "pid", "version", "started_at", "abandoned_threads", "heartbeat_age_s"]
    assert daemon["started_at"] == "1970-01-01T00:16:40.000+00:00"


class _Unwritten(_Live):
    """A live daemon whose newest records are still on their way to the database."""

    def __init__(self, unwritten):
        super().__init__({})
        self._unwritten = unwritten

    def unwritten(self):
        return self._unwritten


def test_a_pending_retry_and_an_interrupted_run_are_warnings_never_ok_or_fail(tmp_path):
    """A failure with a retry to come only warns (FAIL and TIMEOUT alike); a run pmjobsd stopped warns too."""
    ok = {"cron": "0 9 * * *", "callable": "tests.support.sample_jobs:ok", "retries": 2}
    names = ("failed_retrying", "timed_out_retrying", "interrupted", "failed_final", "in_backlog")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"jobs": {"definitions": {**all_builtins_disabled(), **{n: ok for n in names}}}}))
    history = RunHistory(tmp_path / "history.db")
    started = time.time() - 60

    def attempt(job, status, final, attempt=1):
        return RunRecord(f"{job}-1", job, attempt, Trigger.SCHEDULE, None, started, status, started + 1, final=final)

    try:
        for record in (
            attempt("failed_retrying", Status.FAIL, False),
            attempt("timed_out_retrying", Status.TIMEOUT, False),
            attempt("interrupted", Status.INTERRUPTED, True),
            attempt("failed_final", Status.FAIL, True),
        ):
            history.record_start(record)
            history.record_finish(record)
        loaded = load_settings(settings)
        live = _Unwritten({"in_backlog": attempt("in_backlog", Status.FAIL, False)})
        snapshot = build_status(loaded, history, daemon=LIVE, live=live, jobs=loaded.jobs)
        states = {job.name: job.status for job in snapshot.jobs if job.name in names}
        assert states == {
            "failed_retrying": JobState.WARN,
            "timed_out_retrying": JobState.WARN,
            "interrupted": JobState.WARN,
            "failed_final": JobState.FAIL,
            "in_backlog": JobState.WARN,
        }
        assert snapshot.severity is Severity.FAIL  # only because of failed_final
        without_the_final_failure = {**snapshot.to_json(), "status": "?"}
        without_the_final_failure["jobs"] = [j for j in snapshot.to_json()["jobs"] if j["name"] != "failed_final"]
        assert exit_code(without_the_final_failure) == Severity.WARN
    finally:
        history.close()
