"""The job log handler: jobs.log removed, replaced by a folder, or on a full disk.

The e2e tests run the real daemon with 1-second jobs and break its log folder under it;
the full-disk tests use a real 1 MB tmpfs (skipped where mounting is not allowed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from pmjobsd.observe.joblog import JobLogHandler, JobsJsonFormatter
from tests.support.daemon import wait_for

TICK = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"}


def ok_runs(home) -> int:
    with sqlite3.connect(home.history_path) as conn:
        return conn.execute("SELECT count(*) FROM runs WHERE job = 'tick' AND status = 'OK'").fetchone()[0]


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("pmjobsd:")]


@pytest.fixture
def tmpfs(tmp_path):
    """A real 1 MB file system that can be filled up."""
    mount_point = tmp_path / "small"
    mount_point.mkdir(mode=0o700)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):  # then the last bytes of a partly used page
            try:
                while handle.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler


def test_logs_folder_removed_under_a_running_daemon(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK}})
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="tick"), message="a first run")
    shutil.rmtree(home.jobs_log.parent)
    before = ok_runs(home)

    wait_for(lambda: home.jobs_log.exists() and home.events("job.succeeded", job="tick"), 15, message="jobs.log back")
    wait_for(lambda: ok_runs(home) >= before + 3, 15, message="runs after the removal")
    assert daemon.proc.poll() is None, daemon.stderr_path.read_text()
    assert stat.S_IMODE(home.jobs_log.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.jobs_log.parent.stat().st_mode) == 0o700
    assert "Traceback" not in daemon.stderr_path.read_text()
    assert daemon.stop() == 0


def test_a_folder_at_the_jobs_log_path_gives_one_warning_and_the_daemon_lives(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK}})
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="tick"), message="a first run")
    home.jobs_log.unlink()
    home.jobs_log.mkdir()
    before = ok_runs(home)

    wait_for(lambda: ok_runs(home) >= before + 4, 20, message="runs while jobs.log is a folder")
    assert daemon.proc.poll() is None
    stderr = daemon.stderr_path.read_text()
    (warning,) = warnings(stderr)
    assert str(home.jobs_log) in warning and "Traceback" not in stderr
    # Degraded: the events go on, as JSON lines on stderr (no console or journald gets them here).
    assert any(json.loads(line).get("event") == "job.succeeded" for line in stderr.splitlines() if line.startswith("{"))

    home.jobs_log.rmdir()  # repaired: the handler writes the file again and says what was lost
    lost = wait_for(lambda: home.events("log.lines_lost"), 15, message="log.lines_lost")
    assert lost[0]["count"] >= 4 and home.events("job.succeeded", job="tick")
    assert daemon.stop() == 0


def test_full_disk_under_a_running_daemon_is_reported_once_not_as_tracebacks(home, daemon_factory, tmpfs):
    home.write_settings({"definitions": {"tick": TICK}})
    log_dir = tmpfs / "logs"
    daemon = daemon_factory("--log-dir", str(log_dir), ready=False)
    wait_for(lambda: '"daemon.ready"' in text(log_dir / "jobs.log"), message="daemon.ready")
    filler = fill(tmpfs)
    # The last page of jobs.log still takes a few lines; then every write fails.
    wait_for(lambda: warnings(daemon.stderr_path.read_text()), 30, message="the full-disk warning")
    before = ok_runs(home)
    wait_for(lambda: ok_runs(home) >= before + 4, 20, message="runs on the full disk")
    stderr = daemon.stderr_path.read_text()
    assert daemon.proc.poll() is None and "Traceback" not in stderr
    (warning,) = warnings(stderr)
    assert "No space left on device" in warning and str(log_dir / "jobs.log") in warning

    filler.unlink()
    wait_for(lambda: '"log.lines_lost"' in (log_dir / "jobs.log").read_text(), 15, message="log.lines_lost after space")
    assert daemon.stop() == 0


def test_write_failures_are_reported_once_a_minute_with_a_count(tmpfs, capsys):
    now = [1000.0]
    handler = JobLogHandler(tmpfs / "logs" / "jobs.log", clock=lambda: now[0])
    handler.setFormatter(JobsJsonFormatter())
    logger = logging.getLogger(f"test-joblog-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning("before")
    fill(tmpfs)
    for _ in range(200):
        logger.warning("x" * 300)  # every line is lost: the disk is full
    first = warnings(capsys.readouterr().err)
    assert len(first) == 1 and "No space left on device" in first[0]
    now[0] += 30
    logger.warning("x" * 300)
    assert warnings(capsys.readouterr().err) == []
    now[0] += 31
    logger.warning("x" * 300)
    (again,) = warnings(capsys.readouterr().err)
    assert "Traceback" not in again
    reported = 1 + int(again.split(" lines ")[0].rsplit(" ", 1)[1])  # the first warning is for one line
    os.unlink(tmpfs / "filler")
    logger.warning("after")
    lines = [json.loads(line) for line in (tmpfs / "logs" / "jobs.log").read_text().splitlines()]  # no torn line
    written = [line for line in lines if line["event"] not in ("log.lines_lost", "after")]
    assert written[0]["event"] == "before"
    assert {"event": "log.lines_lost", "count": 203 - len(written)}.items() <= lines[-2].items()
    assert reported == 203 - len(written) and len(written) < 50
    assert lines[-1]["event"] == "after"
    handler.close()


def test_the_line_timestamp_is_utc_iso_to_the_character_across_second_boundaries():
    import random

    from pmjobsd.core.timestamps import utc_iso
    from pmjobsd.observe.joblog import _utc_iso

    base = 1_796_000_000
    epochs = [base + i + frac for i in range(3) for frac in (0.0, 0.0004, 0.0005, 0.9994999, 0.9995, 0.9999996)]
    epochs += [base + random.random() * 100_000 for _ in range(20_000)]
    for epoch in sorted(epochs) + epochs:  # in order (the cached second reused) and shuffled
        assert _utc_iso(epoch) == utc_iso(epoch), epoch


def test_event_records_carry_what_logging_makes_for_every_handler():
    from pmjobsd.observe.joblog import EventLogger

    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    logger = logging.getLogger("pmjobsd.test_records")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    EventLogger("runner", logger).info("job.started", job="j", name="shadowed", run_id="r")
    (record,) = seen
    made = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "job.started", (), None, "log")
    assert set(made.__dict__) <= set(record.__dict__)
    assert record.getMessage() == "job.started" and record.levelname == "INFO" and record.name == logger.name
    assert (
        record.job == "j" and record.field_name == "shadowed" and record.threadName == threading.current_thread().name
    )
    assert abs(record.created - time.time()) < 5 and record.process == os.getpid()
