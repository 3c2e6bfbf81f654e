"""`pmjobsd logs bundle`: unzip the real bundle, check the manifest, the redaction, that no canary is inside."""

from __future__ import annotations

import hashlib
import json
import stat
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from pmjobsd.core.context import Status
from pmjobsd.core.privacy import REDACTED, EntryIdHasher, redact_settings
from pmjobsd.diagnostics.bundle import create_bundle
from pmjobsd.diagnostics.redaction import VaultRedactor
from tests.support.appfixtures import CANARY, canary_entry
from tests.support.diagnostics_fixtures import environment, leave_wal_without_shm, record_run, seed_home


@pytest.fixture
def env(home, monkeypatch):
    environment(home, monkeypatch)
    return seed_home(home)


def unzip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def assert_clean(members: dict[str, bytes]) -> None:
    for name, data in members.items():
        assert CANARY.encode() not in data.lower(), f"canary in {name}: {data[:400]!r}"
        assert CANARY not in name


def test_cli_bundle_members_manifest_and_privacy(env, home):
    record_run(home, "log_rotation", Status.OK, "rotated 2 logs")
    record_run(home, "log_purge", Status.OK, "old run", age_days=10)
    target = home.root / "support.zip"
    result = home.cli("--logs", "bundle", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not list(target.parent.glob(".support.zip.*"))  # no temp file left

    members = unzip(target)
    assert set(members) == {
        "jobs/jobs.log",
        "jobs/jobs.log.20261120-033000",
        "app/password_manager.log",
        "doctor.txt",
        "doctor.json",
        "status.json",
        "history.json",
        "settings.json",
        "platform.json",
        "manifest.json",
    }
    manifest = json.loads(members["manifest.json"])
    assert {row["name"] for row in manifest["members"]} == set(members) - {"manifest.json"}
    for row in manifest["members"]:
        assert hashlib.sha256(members[row["name"]]).hexdigest() == row["sha256"]
        assert len(members[row["name"]]) == row["size"]
    assert manifest["omitted"] == []
    assert manifest["redaction"]["vault_read"] is True and manifest["redaction"]["vault_terms"] >= 8
    assert_clean(members)
    # Never the vault, key files, backups or breach cache: not by name, not by content.
    key = (env.paths.data_dir / "secret.key").read_bytes()
    backup = next(env.paths.backups_dir.glob("*.zip")).read_bytes()
    for data in members.values():
        assert b"SQLite format 3" not in data and key not in data and backup[:200] not in data
        assert b"breach" not in data or b"ABCDE" not in data
    assert not any(name.endswith((".db", ".key", ".salt", ".zip")) or "breach" in name for name in members)

    history = json.loads(members["history.json"])
    assert [run["job"] for run in history["runs"]] == ["log_rotation"]  # the 10-day-old run is outside 7 days
    assert json.loads(members["status.json"])["jobs"]
    doctor_report = json.loads(members["doctor.json"])
    assert doctor_report["checks"] and members["doctor.txt"].decode().count("\n") == len(doctor_report["checks"]) + 1
    assert json.loads(members["platform.json"])["pmjobsd"]


def test_app_log_redaction(env):
    bundle = create_bundle(env, env.paths.data_dir)
    members = unzip(bundle.path)
    log = members["app/password_manager.log"].decode().splitlines()
    tag = EntryIdHasher.from_file(env.paths.id_key_path)
    assert log[0] == f"2026-11-28 09:00:00,123 - INFO - Added new password for <website:{tag(1)}> in category General"
    # Case-insensitive; the app's "(ID: 2)" becomes the entry's hash too.
    assert log[1] == f"2026-11-28 09:01:00,001 - INFO - Updated password for <website:{tag(2)}> (ID: <entry:{tag(2)}>)"
    assert log[3].endswith(f"Copied username <username:{tag(3)}> to the clipboard")
    # A website stored as a URL: the URL and its bare host are both the entry's.
    assert log[4].endswith(f"Opened <website:{tag(4)}> and <website:{tag(4)}>")
    # E-mail addresses the vault does not hold are masked, URLs keep only scheme and host.
    assert "h***@mail.example" in log[5] and "https://hooks.example/<redacted>" in log[5]
    assert log[6].endswith(f"removed entry <entry:{tag(3)}>")
    assert log[7] == "2026-11-28 09:07:00,007 - INFO - Also fine: nothing secret on this line"
    jobs_log = members["jobs/jobs.log"].decode()
    assert json.loads(jobs_log)["note"] == f"mail <username:{tag(1)}>"
    assert_clean(members)


def test_app_log_redacts_websites_the_vault_no_longer_holds(env):
    gone = f"{CANARY}-gone.example"  # deleted from the vault: only the app log still names it
    with open(env.paths.app_log_path, "a") as handle:
        handle.write(
            f"2026-11-29 10:00:00,000 - INFO - Added new password for {gone} in category Work\n"
            f"2026-11-29 10:01:00,000 - INFO - Deleted password for {gone.upper()} (ID: 9)\n"
            f"2026-11-29 10:02:00,000 - INFO - Approval requested for https://{gone} from Firefox (ab:cd)\n"
        )
    members = unzip(create_bundle(env, env.paths.data_dir).path)
    log = members["app/password_manager.log"].decode().splitlines()
    tag = EntryIdHasher.from_file(env.paths.id_key_path)
    gone_tag = f"<website:not-in-vault:{tag('website:' + gone)}>"  # same site, same tag: lines still correlate
    assert log[-3] == f"2026-11-29 10:00:00,000 - INFO - Added new password for {gone_tag} in category Work"
    assert log[-2] == f"2026-11-29 10:01:00,000 - INFO - Deleted password for {gone_tag} (ID: <entry:{tag(9)}>)"
    assert log[-1].startswith("2026-11-29 10:02:00,000 - INFO - Approval requested for <website:not-in-vault:")
    assert log[-1].endswith(" from Firefox (ab:cd)")
    assert_clean(members)


def test_vault_private_copy_goes_to_the_state_folder_not_the_system_temp(env, tmp_path, monkeypatch):
    leave_wal_without_shm(env.paths.vault_path, canary_entry(7))
    with open(env.paths.app_log_path, "a") as handle:
        handle.write(f"2026-11-29 10:00:00,000 - INFO - Opened {CANARY}-site-7.example\n")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-system-temp"))  # must not be needed
    members = unzip(create_bundle(env, env.paths.data_dir).path)
    manifest = json.loads(members["manifest.json"])
    assert manifest["redaction"]["vault_read"] is True and manifest["omitted"] == []
    tag = EntryIdHasher.from_file(env.paths.id_key_path)
    assert members["app/password_manager.log"].decode().splitlines()[-1].endswith(f"Opened <website:{tag(5)}>")
    assert not list(env.paths.state_dir.glob("vault-*"))  # the private copy is removed
    assert_clean(members)


def test_settings_secrets_redacted(env):
    members = unzip(create_bundle(env, env.paths.data_dir).path)
    settings = json.loads(members["settings.json"])["settings"]
    alerts = settings["jobs"]["alerts"]
    assert alerts["targets"] == [REDACTED] and alerts["escalation_targets"] == [REDACTED]
    assert alerts["webhook_secret"] == REDACTED
    assert settings["theme"] == "dark" and settings["browser_bridge"] == {
        "enabled": False,
        "host": "127.0.0.1",
        "port": 43110,
    }
    assert settings["jobs"]["definitions"]["log_rotation"] == {"enabled": False}


def test_unreadable_vault_leaves_the_app_log_out(env):
    env.paths.vault_path.write_bytes(b"garbage" * 100)
    bundle = create_bundle(env, env.paths.data_dir)
    members = unzip(bundle.path)
    assert "app/password_manager.log" not in members
    manifest = json.loads(members["manifest.json"])
    assert manifest["omitted"][0]["name"] == "app/password_manager.log"
    assert "not_a_database" in manifest["omitted"][0]["reason"]
    assert "jobs/jobs.log" in members
    assert_clean(members)


def test_app_log_size_cap_keeps_whole_recent_lines(env):
    with open(env.paths.app_log_path, "a") as handle:
        for n in range(2000):
            handle.write(f"2026-11-28 10:00:00,000 - INFO - filler line {n:05d} for {CANARY}-site-1.example\n")
    bundle = create_bundle(env, env.paths.data_dir, app_log_max_bytes=4096)
    members = unzip(bundle.path)
    log = members["app/password_manager.log"].decode()
    lines = log.splitlines()
    assert lines[-1].startswith("2026-11-28 10:00:00,000 - INFO - filler line 01999")
    assert all(line.startswith("2026-11-28 10:00:00,000 - INFO - filler line") for line in lines)
    row = next(r for r in bundle.members if r["name"] == "app/password_manager.log")
    assert "size cap" in row["note"]
    assert_clean(members)


def test_output_is_a_folder_or_default_name(env, home, monkeypatch):
    monkeypatch.chdir(home.root)
    bundle = create_bundle(env)
    assert bundle.path.parent == home.root and bundle.path.name.startswith("pmjobsd-bundle-")
    assert stat.S_IMODE(bundle.path.stat().st_mode) == 0o600


def test_cli_refuses_bad_days_and_names_unwritable_target(home, monkeypatch):
    environment(home, monkeypatch)
    seed_home(home)
    result = home.cli("logs", "bundle", "--days", "0", "-o", str(home.root))
    assert result.returncode == 2 and "--days must be at least 1" in result.stderr
    result = home.cli("logs", "bundle", "-o", str(home.root / "missing-folder" / "b.zip"))
    assert result.returncode == 1 and "missing-folder" in result.stderr and "Traceback" not in result.stderr


# --- the redactor itself ------------------------------------------------------------


def redactor(terms):
    return VaultRedactor({term: f"<t:{term[:2]}>" for term in terms}, lambda entry_id: f"h{entry_id}")


def test_terms_match_on_word_boundaries_longest_first():
    r = redactor(["al", "bank.example", "bank"])
    assert r.redact("also al and Al, bank.example, bankers") == "also <t:al> and <t:al>, <t:ba>, bankers"
    assert r.redact("www.bank.example/x") == "www.<t:ba>/x"


def test_folding_that_changes_length_keeps_positions():
    r = redactor(["istanbul"])
    assert r.redact("İ then istanbul") == "İ then <t:is>"


def test_every_app_website_phrase_has_its_slot_redacted():
    r = redactor(["kept.example"])
    lines = {
        "Added new password for old site in category General": "Added new password for {} in category General",
        "Deleted password for old site (ID: 4)": "Deleted password for {} (ID: <entry:h4>)",
        "Updated password for old site (ID: 4)": "Updated password for {} (ID: <entry:h4>)",
        "Failed to decrypt entry for site old site: bad token": "Failed to decrypt entry for site {}: bad token",
        "Remembered approval for old site: True": "Remembered approval for {}: True",
        "Revoked approval for old site": "Revoked approval for {}",
        "Auto-approved credential access for old site (remembered)": "Auto-approved credential access for {} (remembered)",
        "Approval requested for old site from Chrome (fp)": "Approval requested for {} from Chrome (fp)",
        "Approval denied for old site": "Approval denied for {}",
    }
    for line, expected in lines.items():
        assert r.redact_app_log(line + "\n") == expected.format("<website:not-in-vault:hwebsite:old site>") + "\n"
    # A slot that is a current vault term keeps its entry's tag.
    assert r.redact_app_log("Revoked approval for KEPT.example") == "Revoked approval for <t:ke>"


def test_redact_settings_keeps_flags_and_numbers():
    data = {
        "alerts": {"allow_remote": True, "targets": ["x://y"], "repeat_after": None},
        "smtp_password": "p",
        "note": "see https://a.example/t",
        "port": 1,
        "mail": "a@b.example",
    }
    assert redact_settings(data) == {
        "alerts": {"allow_remote": True, "targets": [REDACTED], "repeat_after": None},
        "smtp_password": REDACTED,
        "note": REDACTED,
        "port": 1,
        "mail": REDACTED,
    }


def test_app_log_after_a_rotation_holds_the_recent_lines_of_the_archive_redacted(env):
    from pmjobsd.jobs.logs.compression import compress_archive
    from pmjobsd.jobs.logs.rotate import rotate_file

    live = env.paths.app_log_path
    seeded = live.read_text().splitlines()
    older = rotate_file(live, strategy="rename").archive  # last week's rotation, since gzipped
    assert older is not None
    compress_archive(older)
    with open(live, "a") as handle:
        handle.write("2026-11-28 09:30:00,000 - INFO - line of the hour before the rotation\n")
    time.sleep(1.1)  # a second rotation gets its own stamp
    rotation = rotate_file(live, strategy="rename")  # the rotation an hour ago
    assert rotation.archive is not None and live.stat().st_size == 0
    with open(live, "a") as handle:
        handle.write("2026-11-28 10:00:00,000 - INFO - first line after the rotation\n")
    bundle = create_bundle(env, env.paths.data_dir)
    log = unzip(bundle.path)["app/password_manager.log"].decode().splitlines()
    tag = EntryIdHasher.from_file(env.paths.id_key_path)
    assert log[-2:] == [
        "2026-11-28 09:30:00,000 - INFO - line of the hour before the rotation",
        "2026-11-28 10:00:00,000 - INFO - first line after the rotation",
    ]
    assert len(log) == len(seeded) + 2  # the gzipped archive too, oldest first
    assert log[0] == f"2026-11-28 09:00:00,123 - INFO - Added new password for <website:{tag(1)}> in category General"
    assert_clean(unzip(bundle.path))
    row = next(r for r in bundle.members if r["name"] == "app/password_manager.log")
    assert rotation.archive.name in row["note"]


def test_app_log_from_archives_stops_at_the_size_cap(env):
    from pmjobsd.jobs.logs.rotate import rotate_file

    live = env.paths.app_log_path
    with open(live, "a") as handle:
        handle.writelines(f"2026-11-28 09:{n // 60:02d}:{n % 60:02d},000 - INFO - filler {n:04d}\n" for n in range(500))
    rotate_file(live, strategy="rename")
    with open(live, "a") as handle:
        handle.write("2026-11-28 10:00:00,000 - INFO - after\n")
    bundle = create_bundle(env, env.paths.data_dir, app_log_max_bytes=2048)
    log = unzip(bundle.path)["app/password_manager.log"]
    assert len(log) <= 2048 and log.decode().splitlines()[-2:] == [
        "2026-11-28 09:08:19,000 - INFO - filler 0499",
        "2026-11-28 10:00:00,000 - INFO - after",
    ]
    assert all(line.startswith("2026-11-28 ") for line in log.decode().splitlines())  # whole lines only
