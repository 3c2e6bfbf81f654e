"""backup_integrity_check on real vaults and real backup zips built like the app builds them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from pmjobsd.api import ValidationError, validate
from pmjobsd.core.context import Status
from pmjobsd.core.registry import job_function, load_builtin
from pmjobsd.jobs.backup import backup_integrity_check as job
from pmjobsd.jobs.backup.backup_integrity_check import BackupCheckOptions
from pmjobsd.jobs.backup.checksums import ChecksumFile, sha256_file
from tests.support.appfixtures import (
    DAY,
    AppProcess,
    assert_no_canary,
    canary_entry,
    create_backup,
    create_vault,
    damage_member,
    truncate,
    write_key_files,
)
from tests.support.helpers import app_paths, make_context

NOW = int(time.time())
OPTIONS = BackupCheckOptions(settle_seconds=0)


@pytest.fixture
def vault(home: Path) -> Path:
    paths = app_paths(home)
    write_key_files(paths.data_dir)
    return create_vault(paths.vault_path, [canary_entry(i, now=NOW, age_days=30 - i) for i in range(1, 6)], history=2)


def _run(home: Path, options: BackupCheckOptions = OPTIONS):
    ctx = make_context(home, "backup_integrity_check", options)
    return job.run(ctx), ctx


def _backups(home: Path, vault: Path, days_ago=(3, 2, 1)) -> list[Path]:
    return [create_backup(app_paths(home).backups_dir, vault, timestamp=NOW - int(d * DAY)) for d in days_ago]


def _sha256sum_check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)


def test_good_backups_are_verified_and_recorded(home: Path, vault: Path, jobs_log: Path):
    backups = _backups(home, vault)
    with zipfile.ZipFile(backups[0]) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["passwords_export.dat", "passwords.db", "secret.key", "auth.json", "crypto.salt", "metadata.json"]
        )
    result, ctx = _run(home)
    assert result.status is Status.OK, result.summary
    assert result.summary == "3 of 3 backups OK (3 fully verified)"
    assert result.metrics["backups_verified"] == 3 and result.metrics["backups_failed"] == 0
    assert result.details["vault_entries"] == 5
    sums = app_paths(home).backups_dir / "SHA256SUMS"
    assert (sums.stat().st_mode & 0o777) == 0o600
    assert len(sums.read_text().splitlines()) == 3
    check = _sha256sum_check(sums.parent)
    assert check.returncode == 0 and check.stdout.count(": OK") == 3
    assert_no_canary(result, jobs_log.read_text())

    # Second run: the two older ones are only hashed; the file is not rewritten.
    mtime = sums.stat().st_mtime_ns
    result, _ = _run(home, BackupCheckOptions(settle_seconds=0, verify_latest=1))
    assert result.status is Status.OK
    assert [b["check"] for b in result.details["backups"]] == ["full", "hash", "hash"]
    assert sums.stat().st_mtime_ns == mtime


def test_backup_changed_after_first_verification_fails(home: Path, vault: Path):
    backups = _backups(home, vault)
    assert _run(home)[0].status is Status.OK
    with zipfile.ZipFile(backups[1], "a") as archive:  # still a valid zip, other bytes
        archive.comment = b"edited"
    result, _ = _run(home)
    assert result.status is Status.FAIL
    assert result.summary.startswith(f"1 problem(s): {backups[1].name}: changed since first verified")
    assert [b["status"] for b in result.details["backups"]] == ["OK", "FAIL", "OK"]
    check = _sha256sum_check(backups[1].parent)
    assert check.returncode != 0 and f"{backups[1].name}: FAILED" in check.stdout
    assert ChecksumFile.load(backups[1].parent).entries[backups[1].name] != sha256_file(backups[1])


def test_damaged_backups_fail_each_with_its_reason_and_others_still_checked(home: Path, vault: Path, jobs_log: Path):
    folder = app_paths(home).backups_dir
    good = create_backup(folder, vault, timestamp=NOW - 3600)
    truncated = create_backup(folder, vault, timestamp=NOW - 2 * DAY)
    truncate(truncated, 0.6)
    damaged = create_backup(folder, vault, timestamp=NOW - 3 * DAY)
    damage_member(damaged, "passwords_export.dat")
    no_db = create_backup(folder, vault, timestamp=NOW - 4 * DAY, omit=["passwords.db"])
    bad_meta = create_backup(folder, vault, timestamp=NOW - 5 * DAY, metadata="{not json")
    corrupt_copy = folder.parent / "corrupt.db"
    corrupt_copy.write_bytes(vault.read_bytes()[:4096] + b"\x00" * 8192)  # header says more pages than exist
    bad_db = create_backup(folder, corrupt_copy, timestamp=NOW - 6 * DAY)

    result, _ = _run(home, BackupCheckOptions(settle_seconds=0, verify_latest=1))
    reasons = {b["file"]: (b["status"], b["reason"] or "") for b in result.details["backups"]}
    assert result.status is Status.FAIL
    assert reasons[good.name] == ("OK", "")
    assert reasons[truncated.name][1].startswith("not a readable zip archive")
    assert reasons[damaged.name][1].startswith("member passwords_export.dat is damaged")
    assert reasons[no_db.name][1] == "missing member(s) passwords.db"
    assert reasons[bad_meta.name][1].startswith("metadata.json is not valid JSON")
    assert reasons[bad_db.name][1].startswith("embedded passwords.db")
    assert result.metrics["backups_failed"] == 5
    assert "+4 more" in result.summary
    # Only the good one is recorded, so `sha256sum -c` passes on what is recorded.
    assert list(ChecksumFile.load(folder).entries) == [good.name]
    assert _sha256sum_check(folder).returncode == 0
    assert_no_canary(result, jobs_log.read_text())


def test_a_member_damaged_past_its_first_mib_fails_its_crc(home: Path, vault: Path):
    """The CRC is over the whole member: the fixtures' 4 KiB members would not tell a check of the first MiB."""
    folder = app_paths(home).backups_dir
    good = create_backup(folder, vault, timestamp=NOW - 3600, export_bytes=6 << 20)
    damaged = create_backup(folder, vault, timestamp=NOW - 2 * DAY, export_bytes=6 << 20)
    damage_member(damaged, "passwords_export.dat", at=0.9)  # about 5.4 MiB in: random data is stored as is
    with zipfile.ZipFile(damaged) as archive:
        with archive.open("passwords_export.dat") as member:
            assert len(member.read(4 << 20)) == 4 << 20  # the first 4 MiB read back fine
    result, _ = _run(home)
    reasons = {b["file"]: (b["status"], b["reason"] or "") for b in result.details["backups"]}
    assert result.status is Status.FAIL
    assert reasons[good.name] == ("OK", "")
    assert reasons[damaged.name][0] == "FAIL"
    assert reasons[damaged.name][1].startswith("member passwords_export.dat is damaged"), reasons[damaged.name]
    assert "CRC" in reasons[damaged.name][1]


def test_backup_missing_recent_entries_from_the_wal(home: Path, vault: Path, jobs_log: Path):
    folder = app_paths(home).backups_dir
    with AppProcess(vault) as app:
        new_ids = app.add([canary_entry(10, now=NOW, age_days=0.1), canary_entry(11, now=NOW, age_days=0.1)])
        app.touch(new_ids[1], NOW - 600)  # the second one was also edited: no import looks like that
        app.touch(1, NOW - 3600)  # edited an hour ago: the new version lives only in the -wal
        incomplete = create_backup(folder, vault, timestamp=NOW - 60)  # the app zips the main file only
        result, ctx = _run(home)
        app.close()  # the app exits: SQLite checkpoints the -wal into passwords.db
    (outcome,) = result.details["backups"]
    assert result.status is Status.FAIL and outcome["status"] == "FAIL"
    # The never-edited new entry is dated after the backup's newest entry: the app made it, not an import.
    assert outcome["missing_entries"] == 2 and outcome["older_entries"] == 1
    assert outcome["maybe_imported_entries"] == 0
    assert "incomplete: 2 entries saved before the backup are missing and 1 are older" in result.summary
    assert (
        "-wal" in result.summary
        and "0 of 1 backups OK (0 fully verified); 1 FAIL (3 entries missing)" in result.summary
    )
    assert outcome["entry_id_hashes"] == [ctx.hash_entry_id(i) for i in (*new_ids, 1)]
    assert result.metrics["backups_incomplete"] == 1
    assert_no_canary(result, jobs_log.read_text())

    incomplete.unlink()
    complete = create_backup(folder, vault, timestamp=NOW - 30)
    result, _ = _run(home)
    assert result.status is Status.OK and result.details["backups"][0]["file"] == complete.name


def test_entries_imported_after_the_backup_are_a_warning_not_a_failure(home: Path, vault: Path, jobs_log: Path):
    folder = app_paths(home).backups_dir
    backup = create_backup(folder, vault, timestamp=NOW - DAY)
    # Later the user imports an export: the app keeps the exported dates, older than the backup.
    with AppProcess(vault) as app:
        imported = app.add([canary_entry(20, now=NOW, age_days=40), canary_entry(21, now=NOW, age_days=35)])
        app.close()
    result, ctx = _run(home)
    (outcome,) = result.details["backups"]
    assert result.status is Status.WARN, result.summary
    assert outcome["status"] == "WARN" and outcome["missing_entries"] == 0
    assert outcome["maybe_imported_entries"] == 2
    assert outcome["maybe_imported_id_hashes"] == [ctx.hash_entry_id(i) for i in imported]
    assert result.summary.startswith(f"{backup.name}: 2 entries dated before the backup are not in it")
    assert "possibly imported after it" in result.summary
    assert result.metrics["backups_failed"] == 0 and result.metrics["entries_maybe_imported_after_backups"] == 2
    assert (
        "0 of 1 backups OK (0 fully verified); 1 WARN (2 entries possibly imported after the backup)" in result.summary
    )
    assert result.metrics["backups_verified"] == 0
    assert list(ChecksumFile.load(folder).entries) == [backup.name]  # the archive itself is intact
    assert_no_canary(result, jobs_log.read_text())


def test_entry_missing_below_the_backups_highest_id_still_fails(home: Path, vault: Path, tmp_path: Path):
    # Entry 3 was never edited, but the backup holds ids above it: no import explains its absence.
    copy = tmp_path / "passwords.db"
    copy.write_bytes(vault.read_bytes())
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM password_history WHERE password_id = 3")
        conn.execute("DELETE FROM passwords WHERE id = 3")
    conn.close()
    create_backup(app_paths(home).backups_dir, copy, timestamp=NOW - DAY)
    result, ctx = _run(home)
    (outcome,) = result.details["backups"]
    assert result.status is Status.FAIL and outcome["status"] == "FAIL"
    assert outcome["missing_entries"] == 1 and outcome["maybe_imported_entries"] == 0
    assert outcome["entry_id_hashes"] == [ctx.hash_entry_id(3)]


def test_backup_made_by_the_real_app_while_it_runs(home: Path, tmp_path: Path):
    """The app's own _create_backup_zip, with entries still in its -wal: the check must catch it."""
    pytest.importorskip("secure_password_manager.utils.backup")
    paths = app_paths(home)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    code = f"""
import time
from secure_password_manager.utils import database, backup
database.init_db()
for i in range(3):
    database.add_password("zqcanary-site-%d.example" % i, "zqcanary-user", b"gAAAAAzqcanary")
time.sleep(1.1)
export = {str(tmp_path / "export.dat")!r}
open(export, "wb").write(b"encrypted export")
backup._create_backup_zip({str(paths.backups_dir / "password_manager_backup_%d.zip")!r} % int(time.time()), export, int(time.time()))
"""
    paths.backups_dir.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=60)
    result, _ = _run(home)
    (outcome,) = result.details["backups"]
    assert result.status is Status.FAIL and outcome["missing_entries"] == 3, result.summary
    # Even the schema was still in the -wal: the app's first backup holds an empty database.
    assert "incomplete: embedded passwords.db has no 'passwords' table; 3 entries" in outcome["reason"]
    assert_no_canary(result)


def test_no_backups_or_an_old_one_is_a_warning(home: Path, vault: Path):
    result, _ = _run(home)
    assert result.status is Status.WARN and result.summary.startswith("no backups found in")
    create_backup(app_paths(home).backups_dir, vault, timestamp=NOW - 10 * DAY)
    result, _ = _run(home)
    assert result.status is Status.WARN and "newest backup is 10.0 days old (limit 8)" in result.summary
    assert result.metrics["newest_backup_age_days"] == pytest.approx(10, abs=0.01)


def test_backup_still_being_written_is_skipped(home: Path, vault: Path):
    create_backup(app_paths(home).backups_dir, vault, timestamp=NOW - 5)
    result, _ = _run(home, BackupCheckOptions(settle_seconds=120))
    assert result.details["backups"][0]["status"] == "SKIPPED" and result.status is Status.OK


def test_other_backup_folders_and_a_missing_one(home: Path, vault: Path, tmp_path: Path):
    elsewhere = tmp_path / "usb"
    backup = create_backup(elsewhere, vault, timestamp=NOW - DAY)
    options = BackupCheckOptions(settle_seconds=0, backup_dirs=(str(elsewhere), str(tmp_path / "gone")))
    result, _ = _run(home, options)
    assert (
        result.status is Status.WARN
        and f"backup folder {tmp_path / 'gone'} does not exist" in result.details["warnings"]
    )
    assert result.details["backups"][0]["folder"] == str(elsewhere)
    assert (elsewhere / "SHA256SUMS").read_text() == f"{sha256_file(backup)}  {backup.name}\n"


def test_pruned_backups_leave_the_checksum_file(home: Path, vault: Path):
    backups = _backups(home, vault)
    _run(home)
    backups[0].unlink()
    sums = backups[1].parent / "SHA256SUMS"
    with open(sums, "a") as handle:
        handle.write("# kept comment\n")
    assert _run(home)[0].status is Status.OK
    assert backups[0].name not in sums.read_text() and "# kept comment" in sums.read_text()
    assert _sha256sum_check(sums.parent).returncode == 0


def test_live_vault_problems_fail(home: Path, vault: Path):
    _backups(home, vault, days_ago=(1,))
    conn = sqlite3.connect(vault)  # foreign keys off, as the app's migration connections have them
    conn.execute("INSERT INTO password_history (password_id, old_password, changed_at) VALUES (999, x'00', 1)")
    conn.commit()
    conn.close()
    result, _ = _run(home, BackupCheckOptions(settle_seconds=0, check="quick"))
    assert result.status is Status.FAIL
    assert (
        "live vault quick check: foreign key: 1 row(s) of password_history reference missing passwords"
        in result.summary
    )
    assert result.metrics["vault_problems"] == 1


def test_registered_with_its_defaults():
    spec = load_builtin("backup_integrity_check")
    assert job_function(spec).load() is job.run and spec.defaults["cron"] == "0 3 * * 0"
    options = validate(BackupCheckOptions, {"backup_dirs": ["~/b"], "check": "quick", "verify_latest": 1})
    assert options.max_age_days == 8
    with pytest.raises(ValidationError):
        validate(BackupCheckOptions, {"check": "full"})


REAL_APP_SESSION = """
import sys, time
from secure_password_manager.utils import backup, database
database.init_db()
for i in range(137):
    database.add_password("zqcanary-site-%d.example" % i, "zqcanary-user", b"gAAAAAzqcanary" * 40)
with database.get_db_connection() as conn:  # what SQLite's auto-checkpoint does once the -wal is large
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
for i in range(137, 200):
    database.add_password("zqcanary-site-%d.example" % i, "zqcanary-user", b"gAAAAAzqcanary" * 40)
open(sys.argv[2], "wb").write(b"encrypted export")
stamp = int(time.time())
for n in range(3):  # the same second as the last entries, and later ones
    backup._create_backup_zip(sys.argv[1] % (stamp + n), sys.argv[2], stamp + n)
print("ready", flush=True)
sys.stdin.readline()  # the app keeps running: its last 63 entries stay in the -wal
database.close_connection()
"""


def test_real_app_backups_missing_entries_are_never_ok(home: Path, tmp_path: Path, jobs_log: Path):
    """200 entries made by the app, each backup holding the 137 of the main file: every backup FAILs."""
    pytest.importorskip("secure_password_manager.utils.backup")
    paths = app_paths(home)
    paths.backups_dir.mkdir(parents=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    pattern = str(paths.backups_dir / "password_manager_backup_%d.zip")
    app = subprocess.Popen(
        [sys.executable, "-c", REAL_APP_SESSION, pattern, str(tmp_path / "export.dat")],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert app.stdout is not None and app.stdout.readline().strip() == "ready"
        result, _ = _run(home)
    finally:
        app.communicate("\n", timeout=30)
    backups = result.details["backups"]
    assert result.details["vault_entries"] == 200 and len(backups) == 3
    for outcome in backups:
        with zipfile.ZipFile(paths.backups_dir / outcome["file"]) as archive:
            embedded = tmp_path / outcome["file"]
            embedded.write_bytes(archive.read("passwords.db"))
        assert sqlite3.connect(embedded).execute("SELECT count(*) FROM passwords").fetchone() == (137,)
        assert outcome["status"] == "FAIL", outcome
        assert outcome["missing_entries"] == 63 and outcome["maybe_imported_entries"] == 0, outcome
    assert result.status is Status.FAIL
    assert "0 of 3 backups OK (0 fully verified); 3 FAIL (189 entries missing)" in result.summary, result.summary
    assert result.metrics["backups_verified"] == 0 and result.metrics["entries_missing_from_backups"] == 189
    assert_no_canary(result, jobs_log.read_text())
