"""backup_integrity_check against hostile backup zips: bounded scratch, memory and time; cancel mid-member;
every failure is that backup's FAIL, the others still verified; scratch of a killed run removed at start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pmjobsd.core.context import JobCancelled, Status
from pmjobsd.jobs.backup import backup_integrity_check as job
from pmjobsd.jobs.backup.backup_integrity_check import BackupCheckOptions
from pmjobsd.jobs.backup.checksums import ChecksumFile
from tests.support import REPO
from tests.support.appfixtures import (
    DAY,
    assert_no_canary,
    canary_entry,
    create_backup,
    create_hostile_backup,
    create_vault,
    write_key_files,
)
from tests.support.daemon import wait_for
from tests.support.helpers import app_paths, make_context

NOW = int(time.time())
GIB = 1 << 30
MIB = 1 << 20

# Runs the job in a child process and reports what it cost: bytes written, peak memory, time.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from tests.support.helpers import make_context
from pmjobsd.jobs.backup import backup_integrity_check as job
from pmjobsd.jobs.backup.backup_integrity_check import BackupCheckOptions
from pmjobsd.api import validate
options = validate(BackupCheckOptions, json.loads(sys.argv[2]))
ctx = make_context(Path(sys.argv[1]), "backup_integrity_check", options)
started = time.monotonic()
result = job.run(ctx)
elapsed = time.monotonic() - started
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(json.dumps({"status": result.status.value, "summary": result.summary, "details": result.details,
                  "elapsed": elapsed, "wchar": int(io["wchar"]),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, default=str))
"""


@pytest.fixture
def vault(home: Path) -> Path:
    paths = app_paths(home)
    write_key_files(paths.data_dir)
    return create_vault(paths.vault_path, [canary_entry(i, now=NOW, age_days=30 - i) for i in range(1, 6)])


def _good_backups(home: Path, vault: Path) -> list[Path]:
    return [create_backup(app_paths(home).backups_dir, vault, timestamp=NOW - d * int(DAY)) for d in (3, 4)]


def _child_run(home: Path, **options) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    options = {"settle_seconds": 0, "verify_latest": 5, **options}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(home), json.dumps(options)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _by_file(details: dict) -> dict[str, dict]:
    return {b["file"]: b for b in details["backups"]}


def _assert_others_verified(home: Path, report_details: dict, good: list[Path], bad: Path) -> None:
    backups = _by_file(report_details)
    assert all(backups[g.name]["status"] == "OK" and backups[g.name]["check"] == "full" for g in good), backups
    assert backups[bad.name]["status"] == "FAIL"
    assert sorted(ChecksumFile.load(bad.parent).entries) == sorted(g.name for g in good)  # SHA256SUMS written


def test_zip_bomb_database_costs_bounded_scratch_and_time(home: Path, vault: Path):
    good = _good_backups(home, vault)
    bomb = create_hostile_backup(
        app_paths(home).backups_dir, vault, timestamp=NOW - DAY, member="passwords.db", size=3 * GIB
    )
    assert bomb.stat().st_size < 4 * MIB
    report = _child_run(home)
    print("zip bomb:", {k: report[k] for k in ("elapsed", "wchar", "maxrss_mb")})
    assert report["status"] == "FAIL"
    reason = _by_file(report["details"])[bomb.name]["reason"]
    assert reason.startswith("member passwords.db declares 3221225472 bytes, more than the limit of"), reason
    assert report["wchar"] < 64 * MIB  # was 3.1 GB of scratch
    assert report["elapsed"] < 10
    _assert_others_verified(home, report["details"], good, bomb)
    assert_no_canary(report)


def test_huge_metadata_costs_bounded_memory(home: Path, vault: Path):
    good = _good_backups(home, vault)
    bomb = create_hostile_backup(
        app_paths(home).backups_dir, vault, timestamp=NOW - DAY, member="metadata.json", size=GIB, fill=b" "
    )
    assert bomb.stat().st_size < 2 * MIB
    report = _child_run(home)
    print("metadata bomb:", {k: report[k] for k in ("elapsed", "wchar", "maxrss_mb")})
    reason = _by_file(report["details"])[bomb.name]["reason"]
    assert reason.startswith("member metadata.json declares 1073741824 bytes, more than the limit of 1048576")
    assert report["maxrss_mb"] < 200  # was 2.1 GB
    _assert_others_verified(home, report["details"], good, bomb)


def test_deeply_nested_metadata_fails_that_backup_only(home: Path, vault: Path, jobs_log: Path):
    good = _good_backups(home, vault)
    nested = create_backup(app_paths(home).backups_dir, vault, timestamp=NOW - DAY, metadata="[" * 200000)
    result = job.run(make_context(home, "backup_integrity_check", BackupCheckOptions(settle_seconds=0)))
    assert result.status is Status.FAIL
    reason = _by_file(result.details)[nested.name]["reason"]
    assert reason == "metadata.json nests 200000 levels deep, expected at most 32"
    _assert_others_verified(home, result.details, good, nested)
    assert_no_canary(result, jobs_log.read_text())


def _extracting(home: Path) -> Path | None:
    """The embedded passwords.db being written in a scratch folder, once it has data."""
    for path in app_paths(home).state_dir.glob("**/backup-*/passwords.db"):
        try:
            if path.stat().st_size > 16 * MIB:
                return path
        except FileNotFoundError:
            pass
    return None


def test_cancel_is_honoured_inside_a_member(home: Path, vault: Path):
    create_hostile_backup(app_paths(home).backups_dir, vault, timestamp=NOW - DAY, member="passwords.db", size=3 * GIB)
    options = BackupCheckOptions(settle_seconds=0, member_limit_min_mb=8192)  # within the limit: read it all
    ctx = make_context(home, "backup_integrity_check", options)
    cancelled_at: list[float] = []

    def cancel_when_extracting():
        wait_for(lambda: _extracting(home), timeout=60, interval=0.01, message="extraction under way")
        cancelled_at.append(time.monotonic())
        ctx.cancel_event.set()

    canceller = threading.Thread(target=cancel_when_extracting)
    canceller.start()
    with pytest.raises(JobCancelled):
        job.run(ctx)
    stopped = time.monotonic()
    canceller.join()
    assert stopped - cancelled_at[0] < 1.0, f"took {stopped - cancelled_at[0]:.2f}s after the cancel"
    assert list(ctx.state_dir.glob("**/scratch-*")) == []  # the partial extract is removed


def test_scratch_left_by_a_killed_run_is_removed_at_start(home: Path, vault: Path):
    create_hostile_backup(app_paths(home).backups_dir, vault, timestamp=NOW - DAY, member="passwords.db", size=3 * GIB)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    options = json.dumps({"settle_seconds": 0, "member_limit_min_mb": 8192})
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home), options], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: _extracting(home), timeout=60, interval=0.01, message="extraction under way")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    state_dir = app_paths(home).state_dir
    left = list(state_dir.glob("**/scratch-*"))
    assert left and any(left[0].glob("**/passwords.db"))  # kill -9 left its scratch behind
    create_hostile_backup(app_paths(home).backups_dir, vault, timestamp=NOW - DAY, member="passwords.db", size=MIB)
    result = job.run(make_context(home, "backup_integrity_check", BackupCheckOptions(settle_seconds=0)))
    assert result.details["backups"], result.summary
    assert list(state_dir.glob("**/scratch-*")) == []
