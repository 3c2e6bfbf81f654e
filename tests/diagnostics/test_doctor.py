"""`pmjobsd doctor`: each check on a real temporary home, the hints, the exit codes, privacy."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile

import pytest

from pmjobsd.core.context import Status
from pmjobsd.diagnostics import doctor
from pmjobsd.diagnostics.doctor import GIB, MIB
from tests.support.appfixtures import CANARY, assert_no_canary, canary_entry
from tests.support.diagnostics_fixtures import (
    StatVfs,
    default_settings,
    environment,
    leave_wal_without_shm,
    local_server,
    make_env,
    record_run,
    seed_home,
)


@pytest.fixture
def env(home, monkeypatch):
    environment(home, monkeypatch)
    return seed_home(home)


def by_name(checks):
    return {check.name: check for check in checks}


def run(env, *functions):
    return by_name(doctor.run_checks(env, functions))


def test_seeded_home_files_are_ok(env):
    checks = run(
        env,
        doctor.check_settings,
        doctor.check_vault,
        doctor.check_secret_files,
        doctor.check_settings_file,
        doctor.check_folders,
        doctor.check_writable,
    )
    assert {c.status for c in checks.values()} == {Status.OK}, checks
    assert "SQLite vault with 4 entries" in checks["files.vault"].message


def test_permission_problems_name_the_exact_chmod(env, tmp_path):
    paths = env.paths
    paths.vault_path.chmod(0o644)
    (paths.data_dir / "secret.key").chmod(0o640)
    paths.data_dir.chmod(0o755)
    paths.settings_path.chmod(0o644)
    checks = run(env, doctor.check_secret_files, doctor.check_folders, doctor.check_settings_file)

    secrets = checks["files.secrets"]
    assert secrets.status is Status.FAIL
    assert secrets.hint == f"chmod 600 {paths.vault_path} {paths.data_dir / 'secret.key'}"
    assert "(0644)" in secrets.message and "(0640)" in secrets.message
    assert checks["files.folders"].status is Status.WARN
    assert checks["files.folders"].hint == f"chmod 700 {paths.data_dir}"
    assert checks["files.settings"].status is Status.WARN
    assert checks["files.settings"].hint == f"chmod 600 {paths.settings_path}"

    for check in checks.values():  # the hints, run as they are, fix the problems
        subprocess.run(shlex.split(check.hint), check=True)
    after = run(env, doctor.check_secret_files, doctor.check_folders, doctor.check_settings_file)
    assert {c.status for c in after.values()} == {Status.OK}


def test_backups_open_to_others_fail(env):
    backup = next(env.paths.backups_dir.glob("*.zip"))
    backup.chmod(0o644)  # the app writes backups with the default umask
    check = run(env, doctor.check_secret_files)["files.secrets"]
    assert check.status is Status.FAIL and check.hint == f"chmod 600 {backup}"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another account needs root")
def test_file_of_another_owner_names_chown(env):
    key = env.paths.data_dir / "secret.key"
    os.chown(key, 65534, 65534)
    check = run(env, doctor.check_secret_files)["files.secrets"]
    assert check.status is Status.FAIL
    assert check.hint == f"chown {doctor.env.user_name()} {key}"


def test_vault_private_copy_goes_to_the_state_folder_not_the_system_temp(env, tmp_path, monkeypatch):
    leave_wal_without_shm(env.paths.vault_path, canary_entry(7))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-system-temp"))  # must not be needed
    shutil.rmtree(env.paths.state_dir, ignore_errors=True)
    check = run(env, doctor.check_vault)["files.vault"]
    assert check.status is Status.OK, check.message
    assert check.message.endswith("SQLite vault with 5 entries")  # the -wal entry is seen
    assert stat.S_IMODE(env.paths.state_dir.stat().st_mode) == 0o700
    assert list(env.paths.state_dir.iterdir()) == []  # the private copy is removed


def test_vault_missing_and_not_sqlite(env):
    env.paths.vault_path.write_bytes(b"not a database at all" * 10)
    check = run(env, doctor.check_vault)["files.vault"]
    assert check.status is Status.FAIL and "not an SQLite database" in check.message
    env.paths.vault_path.unlink()
    check = run(env, doctor.check_vault)["files.vault"]
    assert check.status is Status.WARN and "no vault" in check.message


@pytest.mark.parametrize(
    "free, total, expected",
    [
        (500 * GIB, 1000 * GIB, Status.OK),
        (900 * MIB, 10 * GIB, Status.WARN),  # under 1 GiB
        (2 * GIB, 100 * GIB, Status.WARN),  # under 5 %
        (99 * MIB, 1000 * GIB, Status.FAIL),  # under 100 MiB
        (101 * MIB, 1 * GIB, Status.WARN),
    ],
)
def test_disk_thresholds(home, monkeypatch, free, total, expected):
    environment(home, monkeypatch)
    seen = []

    def statvfs(path):
        seen.append(path)
        return StatVfs(f_bavail=free // 4096, f_frsize=4096, f_blocks=total // 4096)

    env = seed_home(home)
    env.statvfs = statvfs
    checks = doctor.check_disk(env)
    assert [c.status for c in checks] == [expected]  # one file system holds all four folders
    assert checks[0].name == "disk.data+logs+state+cache"
    assert seen and all(os.path.isdir(path) for path in seen)
    if expected is not Status.OK:
        assert str(env.paths.data_dir) in checks[0].hint


def test_unwritable_folder_fails_with_a_fix(home, monkeypatch):
    environment(home, monkeypatch)
    env = seed_home(home)
    blocker = home.root / "not-a-folder"
    blocker.write_text("x")
    env.paths = env.paths.with_overrides(log_dir=str(blocker))
    checks = by_name(doctor.check_writable(env))
    assert checks["writable.logs"].status is Status.FAIL
    assert checks["writable.logs"].hint == f"move it away: mv {blocker} {blocker}.old"
    assert checks["writable.state"].status is Status.OK


def test_settings_invalid_json_fails_and_job_error_warns(home, monkeypatch):
    environment(home, monkeypatch)
    seed_home(home)
    home.settings_path.write_text("{ not json")
    check = run(make_env(home), doctor.check_settings)["settings"]
    assert check.status is Status.FAIL and "not valid JSON" in check.message
    assert check.hint.endswith(f"pmjobsd config validate {home.settings_path}")
    bad = default_settings()
    bad["jobs"]["definitions"]["log_rotation"] = {"cron": "61 * * * *"}
    home.settings_path.write_text(json.dumps(bad))
    check = run(make_env(home), doctor.check_settings)["settings"]
    assert check.status is Status.WARN and "jobs.definitions.log_rotation.cron" in check.message


def test_service_installed_active_or_not(env, home):
    unit = home.root / ".config/systemd/user/pmjobsd.service"
    env.platform = "linux"
    env.run_command = lambda argv: 0
    check = run(env, doctor.check_service)["service"]
    assert check.status is Status.WARN and check.hint.startswith("pmjobsd service install --user")

    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    asked = []
    env.run_command = lambda argv: asked.append(tuple(argv)) or 0
    check = run(env, doctor.check_service)["service"]
    assert check.status is Status.OK and "active" in check.message
    assert asked == [("systemctl", "--user", "is-active", "--quiet", "pmjobsd.service")]

    env.run_command = lambda argv: 3  # systemctl is-active: inactive
    check = run(env, doctor.check_service)["service"]
    assert check.status is Status.WARN
    assert "systemctl --user enable --now pmjobsd.service" in check.hint


def test_no_daemon_and_a_live_daemon(env, home, daemon_factory):
    checks = run(env, doctor.check_daemon, doctor.check_threads)
    assert checks["daemon"].status is Status.WARN and "no daemon" in checks["daemon"].message

    home.write_settings({})
    daemon = daemon_factory()
    live = make_env(home)
    checks = run(live, doctor.check_daemon, doctor.check_threads, doctor.check_service)
    assert checks["daemon"].status is Status.OK and f"pid {daemon.pid}" in checks["daemon"].message
    assert checks["daemon.threads"].status is Status.OK
    assert checks["service"].status is Status.OK and "by hand" in checks["service"].message


def test_latest_result_of_every_job(env, home):
    settings = default_settings()
    settings["jobs"]["definitions"].update(
        {"log_rotation": {"enabled": True}, "log_purge": {"enabled": True}, "backup_integrity_check": {"enabled": True}}
    )
    home.settings_path.write_text(json.dumps(settings))
    run_id = record_run(home, "log_rotation", Status.FAIL, "2 logs could not be rotated")
    record_run(home, "log_purge", Status.OK, "purged 3 archives")
    checks = by_name(doctor.check_jobs(make_env(home)))
    assert checks["job.log_rotation"].status is Status.FAIL
    assert "2 logs could not be rotated" in checks["job.log_rotation"].message
    assert "1 failures in a row" in checks["job.log_rotation"].message
    assert (
        run_id in checks["job.log_rotation"].hint
        and "pmjobsd run-now log_rotation --wait" in checks["job.log_rotation"].hint
    )
    assert checks["job.log_purge"].status is Status.OK
    assert (
        checks["job.backup_integrity_check"].status is Status.OK
        and "never run" in checks["job.backup_integrity_check"].message
    )
    assert checks["job.browser_bridge_health"].message == "disabled"


def test_online_breach_api_local_server(env):
    body = "0005AD76BD555C1D6D771DE417A4B87E4B4:10\r\n000A8DAE4228F821FB418F59826079BF368:2\r\n"
    with local_server({"/range/00000": (200, "text/plain", body)}) as base:
        env.breach_api_base = base
        check = run(env, doctor.check_breach_api)["online.breach_api"]
        assert check.status is Status.OK and "127.0.0.1" in check.message
    with local_server({"/range/00000": (503, "text/plain", "busy")}) as base:
        env.breach_api_base = base
        check = run(env, doctor.check_breach_api)["online.breach_api"]
        assert check.status is Status.FAIL and "HTTP 503" in check.message


def test_breach_api_base_from_the_job_options(home, monkeypatch):
    environment(home, monkeypatch)
    settings = default_settings()
    settings["jobs"]["definitions"]["breach_cache_refresh"] = {"options": {"api_base": "http://127.0.0.1:9/x"}}
    seed_home(home, settings=settings)
    assert doctor.breach_api_base(make_env(home)) == "http://127.0.0.1:9/x"
    assert doctor.breach_api_base(make_env(home, breach_api_base="http://127.0.0.1:1")) == "http://127.0.0.1:1"


def test_online_bridge(home, monkeypatch):
    environment(home, monkeypatch)
    with local_server({"/v1/status": (200, "application/json", '{"status": "ok"}')}) as base:
        port = int(base.rsplit(":", 1)[1])
        settings = {**default_settings(), "browser_bridge": {"enabled": True, "host": "127.0.0.1", "port": port}}
        env = seed_home(home, settings=settings)
        assert run(env, doctor.check_bridge)["online.bridge"].status is Status.OK
    # The server is gone: fine while the app is not running, a failure while it runs.
    env.is_app_running = lambda: False
    check = run(env, doctor.check_bridge)["online.bridge"]
    assert check.status is Status.OK and "not running" in check.message
    env.is_app_running = lambda: True
    check = run(env, doctor.check_bridge)["online.bridge"]
    assert check.status is Status.FAIL and "refused" in check.message


def test_exit_code_and_report():
    checks = [doctor.ok("a", "fine"), doctor.warn("b", "hmm", "do x")]
    assert doctor.exit_code(checks) == 1
    assert doctor.exit_code(checks + [doctor.fail("c", "bad", "do y")]) == 2
    assert doctor.exit_code(checks[:1]) == 0
    document = doctor.report(checks)
    assert document["status"] == "WARN" and document["checks"][1] == {
        "name": "b",
        "status": "WARN",
        "message": "hmm",
        "hint": "do x",
    }
    text = doctor.render_text(checks).splitlines()
    assert len(text) == 3 and text[1].startswith("WARN") and text[1].endswith("-> do x")


def test_a_crashing_check_is_a_fail_not_a_traceback(env):
    def check_broken(env):
        raise RuntimeError("boom")

    checks = doctor.run_checks(env, [check_broken])
    assert checks[0].name == "broken" and checks[0].status is Status.FAIL and "boom" in checks[0].message


def test_cli_text_json_exit_codes_and_no_canary(env, home):
    record_run(home, "log_rotation", Status.FAIL, "rotation failed")
    env.paths.vault_path.chmod(0o644)
    text = home.cli("doctor")
    document_run = home.cli("--doctor", "--json")
    document = json.loads(document_run.stdout)
    assert text.returncode == document_run.returncode == document["exit_code"] == 2
    assert document["status"] == "FAIL"
    names = [check["name"] for check in document["checks"]]
    assert len(text.stdout.strip().splitlines()) == len(names) + 1  # one line per check, then the overall line
    secrets = next(check for check in document["checks"] if check["name"] == "files.secrets")
    assert secrets["status"] == "FAIL" and secrets["hint"] == f"chmod 600 {env.paths.vault_path}"
    assert {"python", "dependencies", "settings", "files.vault", "service", "daemon", "daemon.threads"} <= set(names)
    assert not any(name.startswith("online.") for name in names)
    assert_no_canary(text.stdout, text.stderr, document_run.stdout, document_run.stderr)
    assert CANARY not in json.dumps(document)


def test_doctor_names_the_apps_exposure_with_the_exact_chmod(env, home):
    """The app writes its key, its breach cache and its log with the default umask: doctor WARNs for
    each with the chmod that closes it (pmjobsd never changes the app's files itself)."""
    paths = env.paths
    key = paths.data_dir / "secret.key"
    archive = paths.app_log_path.with_name("password_manager.log.20261120-033000.gz")
    archive.write_bytes(b"")
    for path in (key, paths.breach_cache_path, paths.app_log_path, archive):
        path.chmod(0o644)
    result = home.cli("doctor", "--json")
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    expected = {
        "files.exposure.secret_key": f"chmod 600 {key}",
        "files.exposure.breach_cache": f"chmod 600 {paths.breach_cache_path}",
        "files.exposure.app_log": f"chmod 600 {paths.app_log_path} {archive}",
    }
    for name, hint in expected.items():
        assert checks[name]["status"] == "WARN", checks[name]
        assert checks[name]["hint"] == hint
        assert "(0644)" in checks[name]["message"] and "readable by other users" in checks[name]["message"]
    assert_no_canary(result.stdout)
    text = home.cli("doctor").stdout
    assert f"-> chmod 600 {paths.breach_cache_path}" in text

    for name in expected:  # the hints, run as they are, close the exposure
        subprocess.run(shlex.split(checks[name]["hint"]), check=True)
    after = by_name(doctor.run_checks(env, [doctor.check_app_exposure]))
    assert list(after) == ["files.exposure"] and after["files.exposure"].status is Status.OK
