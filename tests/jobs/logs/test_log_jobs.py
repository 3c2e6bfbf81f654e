"""The log_rotation and log_purge jobs, and retention.purge, on a temporary app home."""

from __future__ import annotations

import gzip
import json
import logging
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pmjobsd.api import ValidationError, validate
from pmjobsd.core import registry
from pmjobsd.core.context import Status
from pmjobsd.core.history import RunHistory
from pmjobsd.jobs.logs.archives import list_archives
from pmjobsd.jobs.logs.log_purge import LogPurgeOptions
from pmjobsd.jobs.logs.log_rotation import LogRotationOptions
from pmjobsd.jobs.logs.retention import purge
from pmjobsd.observe.joblog import setup_logging
from tests.support.helpers import app_paths, make_context

CANARY = "canary-hunter2-s3cr3t@example.org"
DAY = 86400


def run_job(home: Path, name: str, options, seed_rotations: bool = True, **kw):
    spec = registry.load_builtin(name)
    ctx = make_context(home, name, options, **kw)
    if name == "log_rotation" and seed_rotations:
        _rotated_long_ago(ctx)
    return registry.job_function(spec)(ctx), ctx


def _rotated_long_ago(ctx) -> None:
    """Every log this run would look at was last rotated a year ago: its weekly slot has passed."""
    from pmjobsd.jobs.logs.archives import log_files

    state = ctx.state_dir / "rotations.json"
    if not state.exists():
        files = getattr(ctx.options, "files", [])
        state.write_text(json.dumps({str(live): time.time() - 365 * DAY for live in log_files(ctx.paths, None, files)}))


def seed_app_log(home: Path, lines: int = 50) -> Path:
    log = app_paths(home).app_log_path
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.writelines(f"2026-11-28 03:00:{n:02d} - INFO - Added entry for {CANARY} #{n}\n" for n in range(lines))
    os.chmod(log, 0o644)
    return log


def make_archive(live: Path, stamp: str, age_days: float, gz: bool = False, text: str = "old line\n") -> Path:
    archive = live.with_name(f"{live.name}.{stamp}" + (".gz" if gz else ""))
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    when = time.time() - age_days * DAY
    os.utime(archive, (when, when))
    return archive


@pytest.fixture
def jobs_log(tmp_path):
    path = app_paths(tmp_path).jobs_log_path
    setup_logging(path, console=False)
    yield path
    setup_logging(None, console=False)


def test_jobs_are_registered_with_their_schedules():
    assert registry.load_builtin("log_rotation").defaults["cron"] == "*/5 * * * *"  # the cheap size check
    assert LogRotationOptions().every == "30 3 * * 0" and LogRotationOptions().max_size == 50_000_000
    with pytest.raises(ValidationError, match="every"):
        validate(LogRotationOptions, {"every": "61 * * * *"})
    assert registry.load_builtin("log_purge").defaults["cron"] == "@daily"
    assert validate(LogRotationOptions, {"min_size": "10MB"}).min_size == 10_000_000
    with pytest.raises(ValidationError):
        validate(LogRotationOptions, {"min_size": 0})
    with pytest.raises(ValidationError):
        validate(LogPurgeOptions, {"log_days": 0})


def test_rotation_job_rotates_app_log_and_own_log_which_reopens(tmp_path, jobs_log):
    app_log = seed_app_log(tmp_path)
    logging.getLogger("pmjobsd").info("before.rotation", extra={"component": "test"})
    result, ctx = run_job(tmp_path, "log_rotation", LogRotationOptions())
    assert result.status is Status.OK, result
    assert result.metrics["files_rotated"] == 2
    app_archives = list_archives(app_log)
    assert len(app_archives) == 1 and app_log.stat().st_size == 0
    assert stat.S_IMODE(app_archives[0].stat().st_mode) == 0o644
    assert stat.S_IMODE(app_log.stat().st_mode) == 0o644
    # pmjobsd's own handler reopened jobs.log after the rename: new events land in a new 0600 file.
    logging.getLogger("pmjobsd").info("after.rotation", extra={"component": "test"})
    (own_archive,) = list_archives(jobs_log)
    assert "before.rotation" in own_archive.read_text()
    new_events = [json.loads(line)["event"] for line in jobs_log.read_text().splitlines()]
    assert "after.rotation" in new_events and "before.rotation" not in new_events
    assert stat.S_IMODE(jobs_log.stat().st_mode) == 0o600
    assert stat.S_IMODE(own_archive.stat().st_mode) == 0o600
    # Privacy: the app log's content never reaches our result or our log.
    everything = (
        json.dumps([result.summary, result.details, result.metrics]) + jobs_log.read_text() + own_archive.read_text()
    )
    assert CANARY not in everything


def test_rotation_job_compresses_archives_past_the_retention_setting(tmp_path):
    app_log = seed_app_log(tmp_path)
    old = make_archive(app_log, "20261101-033000", age_days=10, text=f"{CANARY}\n")
    recent = make_archive(app_log, "20261125-033000", age_days=3)
    settings = {"jobs": {"retention": {"compress_after_days": 7}}}
    result, _ = run_job(tmp_path, "log_rotation", LogRotationOptions(), app_settings=settings)
    assert result.status is Status.OK
    assert not old.exists() and recent.exists()
    gz = old.with_name(old.name + ".gz")
    assert subprocess.run(["zcat", str(gz)], capture_output=True, text=True, check=True).stdout == f"{CANARY}\n"
    assert abs(gz.stat().st_mtime - (time.time() - 10 * DAY)) < 5
    # The option overrides the setting.
    run_job(tmp_path, "log_rotation", LogRotationOptions(compress_after_days=0), app_settings=settings)
    assert all(p.suffix == ".gz" for p in list_archives(app_log))


def test_unusable_file_is_reported_by_path_and_the_others_are_done(tmp_path):
    app_log = seed_app_log(tmp_path)
    not_a_file = app_log.parent / "notes.log"
    not_a_file.mkdir()
    extra = tmp_path / "extra.log"
    extra.write_text("one\n")
    result, _ = run_job(tmp_path, "log_rotation", LogRotationOptions(files=["notes.log", str(extra)]))
    assert result.status is Status.WARN
    assert str(not_a_file) in result.details["errors"]
    assert str(not_a_file) in result.summary
    assert len(list_archives(app_log)) == 1 and len(list_archives(extra)) == 1


def test_a_file_that_cannot_be_rotated_is_reported_and_the_others_are_done(tmp_path, monkeypatch):
    app_log = seed_app_log(tmp_path)
    locked = app_log.parent / "locked.log"
    locked.write_text("secret\n")
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        # The tests run as root, whom file modes do not stop: deny this one file as the kernel would.
        if Path(src) == locked:
            raise PermissionError(13, "Permission denied", str(src))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    result, _ = run_job(tmp_path, "log_rotation", LogRotationOptions(files=["locked.log"]))
    assert result.status is Status.WARN and str(locked) in result.details["errors"]
    assert "Permission denied" in result.details["errors"][str(locked)]
    assert len(list_archives(app_log)) == 1 and locked.read_text() == "secret\n"


def test_purge_removes_old_archives_and_reports_them(tmp_path):
    paths = app_paths(tmp_path)
    app_log = seed_app_log(tmp_path)
    old_plain = make_archive(app_log, "20261001-033000", age_days=40)
    old_gz = make_archive(paths.jobs_log_path, "20261002-033000", age_days=35, gz=True)
    kept = make_archive(app_log, "20261120-033000", age_days=8, gz=True)
    unrelated = make_archive(app_log.with_name("other.txt"), "20261001-033000", age_days=90)
    report = purge(paths, 30, 30)
    assert {p for p, _ in report.removed_archives} == {old_plain, old_gz}
    assert kept.exists() and unrelated.exists() and app_log.exists()
    text = str(report)
    assert str(old_plain) in text and str(old_gz) in text and "Archives older than 30 days" in text
    assert report.ok


@pytest.mark.parametrize("days", [0, -3, 1.5, True])
def test_purge_refuses_days_below_one(tmp_path, days):
    archive = make_archive(seed_app_log(tmp_path), "20261001-033000", age_days=400)
    with pytest.raises(ValueError, match="at least 1"):
        purge(app_paths(tmp_path), days, 30)
    with pytest.raises(ValueError, match="at least 1"):
        purge(app_paths(tmp_path), 30, days)
    assert archive.exists()


def test_purge_job_reads_retention_settings_and_extra_files(tmp_path):
    app_log = seed_app_log(tmp_path)
    five_days = make_archive(app_log, "20261123-033000", age_days=6)
    extra = tmp_path / "extra.log"
    extra_old = make_archive(extra, "20261123-033000", age_days=6)
    settings = {
        "jobs": {"retention": {"log_days": 5}, "definitions": {"log_rotation": {"options": {"files": [str(extra)]}}}}
    }
    result, _ = run_job(tmp_path, "log_purge", LogPurgeOptions(), app_settings=settings)
    assert result.status is Status.OK, result
    assert not five_days.exists() and not extra_old.exists()
    assert result.metrics["archives_removed"] == 2
    assert CANARY not in json.dumps([result.summary, result.details])
    # An explicit option wins over the setting.
    keep = make_archive(app_log, "20261124-033000", age_days=6)
    run_job(tmp_path, "log_purge", LogPurgeOptions(log_days=10), app_settings=settings)
    assert keep.exists()


def test_purge_reports_a_file_it_cannot_remove_and_removes_the_rest(tmp_path):
    paths = app_paths(tmp_path)
    app_log = seed_app_log(tmp_path)
    removable = make_archive(app_log, "20261001-033000", age_days=40)
    stuck = app_log.with_name(f"{app_log.name}.20261002-033000")
    stuck.mkdir()  # a folder with an archive's name: unlink fails
    (stuck / "x").write_text("x")
    when = time.time() - 40 * DAY
    os.utime(stuck, (when, when))
    report = purge(paths, 30, 30)
    assert [p for p, _ in report.removed_archives] == [removable]
    assert [p for p, _ in report.errors] == [stuck]
    assert f"Error: {stuck}" in str(report)


def test_purge_deletes_old_run_history(tmp_path):
    from pmjobsd.core.context import Status as RunStatus
    from pmjobsd.core.observers import RunRecord

    paths = app_paths(tmp_path)
    now = time.time()
    with RunHistory(paths.history_path) as runs:
        for run_id, age_days in (("old1", 40), ("old2", 31), ("new", 2)):
            record = RunRecord(
                run_id=run_id,
                job="log_rotation",
                attempt=1,
                trigger="schedule",
                slot=None,
                started_at=now - age_days * DAY,
            )
            runs.record_start(record)
            record.status, record.finished_at = RunStatus.OK, record.started_at + 1
            runs.record_finish(record)
    report = purge(paths, 30, 30, now=now)
    assert report.history_runs_removed == 2, report
    assert "removed 2 runs" in str(report)
    assert purge(paths, 30, 30, now=now).history_runs_removed == 0


def _immutable(path: Path, on: bool) -> bool:
    result = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return result.returncode == 0


def test_file_that_cannot_be_written_is_reported_and_the_others_are_done(tmp_path):
    """Root may write any file, but not an immutable one (chattr +i; ext4/xfs/btrfs)."""
    app_log = seed_app_log(tmp_path)
    frozen = app_log.parent / "frozen.log"
    frozen.write_text("line\n")
    if not _immutable(frozen, True):
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        result, _ = run_job(tmp_path, "log_rotation", LogRotationOptions(files=["frozen.log"]))
    finally:
        _immutable(frozen, False)
    assert result.status is Status.WARN
    assert str(frozen) in result.details["errors"] and "not permitted" in result.details["errors"][str(frozen)]
    assert frozen.read_text() == "line\n" and list_archives(frozen) == []
    assert len(list_archives(app_log)) == 1


def test_first_check_after_install_leaves_young_logs_alone(tmp_path, jobs_log):
    """A log seen for the first time counts from then: the 5-minute check of a fresh install rotates nothing
    (only ``max_size`` would), and the first slot of ``every`` after that sight rotates it."""
    app_log = seed_app_log(tmp_path)
    logging.getLogger("pmjobsd").info("first.start", extra={"component": "test"})
    result, ctx = run_job(tmp_path, "log_rotation", LogRotationOptions(every="* * * * *"), seed_rotations=False)
    assert result.status is Status.OK, result
    assert result.metrics["files_rotated"] == 0
    assert list_archives(app_log) == [] and list_archives(jobs_log) == []
    assert "first.start" in jobs_log.read_text()
    # A minute slot later (the first sight moved back past one), both logs are due.
    state = ctx.state_dir / "rotations.json"
    seen = json.loads(state.read_text())
    assert set(seen) == {str(app_log), str(jobs_log)}
    state.write_text(json.dumps({path: when - 120 for path, when in seen.items()}))
    result, _ = run_job(tmp_path, "log_rotation", LogRotationOptions(every="* * * * *"), seed_rotations=False)
    assert result.metrics["files_rotated"] == 2


def _old_history(paths, count: int, now: float) -> None:
    """``count`` finished runs 40 days old and one run of yesterday."""
    import sqlite3

    with RunHistory(paths.history_path):
        pass
    with sqlite3.connect(paths.history_path) as conn:
        rows = [
            (f"old{i}", 1, "tick", "schedule", None, now - 40 * DAY + i, now - 40 * DAY + i + 1, "OK", 1)
            for i in range(count)
        ]
        rows.append(("new", 1, "tick", "schedule", None, now - DAY, now - DAY + 1, "OK", 1))
        conn.executemany(
            "INSERT INTO runs (run_id, attempt, job, trigger, slot, started_at, finished_at, status, pid)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _run_ids(paths) -> set[str]:
    with RunHistory(paths.history_path) as runs:
        return {row[0] for row in runs._execute("SELECT run_id FROM runs")}


def test_a_history_purge_told_to_stop_ends_between_batches_and_the_next_one_goes_on(tmp_path):
    paths = app_paths(tmp_path)
    now = time.time()
    _old_history(paths, 1000, now)
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 3  # three batches, then stop

    first = purge(paths, 30, 30, now=now, stop=stop)
    assert 0 < first.history_runs_removed < 1000 and not first.history_complete, first
    assert "older runs remain for the next purge" in str(first) and first.ok
    assert len(_run_ids(paths)) == 1001 - first.history_runs_removed  # whole batches, all committed
    second = purge(paths, 30, 30, now=now)
    assert second.history_complete and first.history_runs_removed + second.history_runs_removed == 1000
    assert _run_ids(paths) == {"new"}


def test_the_purge_job_stops_before_its_deadline_with_an_ok_and_the_next_run_finishes(tmp_path):
    paths = app_paths(tmp_path)
    now = time.time()
    _old_history(paths, 500, now)
    from pmjobsd.jobs.logs.log_purge import STOP_MARGIN

    # Less time left than the margin: the history is left for the next run, the archives are done.
    result, _ = run_job(tmp_path, "log_purge", LogPurgeOptions(), timeout=STOP_MARGIN / 2)
    assert result.status is Status.OK, result
    assert result.metrics["history_complete"] == 0 and result.metrics["history_runs_removed"] == 0
    assert "older runs remain" in result.summary
    assert len(_run_ids(paths)) == 501
    result, _ = run_job(tmp_path, "log_purge", LogPurgeOptions())
    assert result.status is Status.OK and result.metrics["history_complete"] == 1, result
    assert result.metrics["history_runs_removed"] == 500 and _run_ids(paths) == {"new"}
