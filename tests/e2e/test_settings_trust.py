"""Settings are trusted only when they are the user's own (the real daemon and CLI on real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.daemon import AppHome, all_builtins_disabled, wait_for

NOBODY = 65534


def _settings(jobs: dict) -> dict:
    definitions = {**all_builtins_disabled(), **jobs.pop("definitions", {})}
    return {"theme": "dark", "jobs": {"timezone": "UTC", "wake_interval": "1s", **jobs, "definitions": definitions}}


def _install(home: AppHome, data: dict, *, mode: int = 0o600, uid: int | None = None) -> None:
    """Put ``data`` in place with its final mode and owner already set (the daemon never sees a half state)."""
    tmp = home.settings_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.chmod(tmp, mode)
    if uid is not None:
        os.chown(tmp, uid, uid)
    os.replace(tmp, home.settings_path)


EVIL = {
    "metrics": {"enabled": True, "host": "0.0.0.0", "port": 0, "allow_remote": True},
    "alerts": {"targets": ["json://127.0.0.1:9/evil"]},
    "definitions": {"evil": {"cron": "* * * * * *", "callable": "builtins:print"}},
}


@pytest.mark.parametrize("how", ["mode 0666", "owned by nobody"])
def test_a_settings_file_others_can_write_is_refused(home, daemon_factory, how):
    _install(
        home, _settings({"definitions": {"mine": {"cron": "@yearly", "callable": "tests.support.sample_jobs:ok"}}})
    )
    daemon_factory()
    if how == "mode 0666":
        _install(home, _settings(json.loads(json.dumps(EVIL))), mode=0o666)
        fix = f"chmod 600 {home.settings_path}"
    else:
        _install(home, _settings(json.loads(json.dumps(EVIL))), uid=NOBODY)
        fix = f"chown root {home.settings_path}"
    invalid = wait_for(lambda: home.events("config.invalid"), message="config.invalid")[0]
    assert invalid["using"] == "last good settings"
    assert any(fix in error for error in invalid["errors"]), invalid
    code, status = home.status()
    names = {job["name"] for job in status["jobs"]}
    assert "mine" in names and "evil" not in names
    assert status["settings"]["valid"] is False
    assert not home.events("config.reloaded")
    assert not home.events("metrics.listening")
    assert not home.events("job.started", job="evil")
    doctor = home.cli("doctor", "--json")
    assert doctor.returncode == 2
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert checks["settings"]["status"] == "FAIL"
    assert fix in json.dumps(checks["settings"])


def test_a_settings_file_in_a_folder_others_can_write_is_refused(home):
    _install(home, _settings(json.loads(json.dumps(EVIL))))
    os.chmod(home.config_dir, 0o777)
    result = home.cli("config", "validate")
    assert result.returncode == 1
    assert f"chmod 700 {home.config_dir}" in result.stderr
    code, status = home.status()
    assert "evil" not in {job["name"] for job in status["jobs"]}


def test_a_rotated_file_outside_the_app_folders_needs_the_opt_in(home, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my private notes\n" * 100)
    definition = {"enabled": True, "options": {"files": [str(notes)], "min_size": 1}}
    _install(home, _settings({"definitions": {"log_rotation": definition}}))
    result = home.cli("config", "validate")
    assert result.returncode == 1
    assert "jobs.definitions.log_rotation.options.files" in result.stderr
    assert "allow_outside_paths" in result.stderr
    run = home.cli("run-now", "log_rotation", "--wait")
    assert run.returncode != 0
    assert notes.read_text() == "my private notes\n" * 100
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("notes")] == ["notes.txt"]

    _install(home, _settings({"definitions": {"log_rotation": {**definition, "allow_outside_paths": True}}}))
    assert home.cli("config", "validate").returncode == 0


def test_read_only_commands_never_import_a_user_job(home, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    marker = tmp_path / "imported"
    (modules / "sideeffect_job.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n\ndef run(ctx):\n    return None\n"
    )
    _install(home, _settings({"definitions": {"side": {"cron": "@yearly", "callable": "sideeffect_job:run"}}}))
    env = home.env()
    env["PYTHONPATH"] += os.pathsep + str(modules)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pmjobsd", *args], env=env, capture_output=True, text=True, timeout=60
        )

    for command in (
        ["status"],
        ["config", "validate"],
        ["config", "show"],
        ["doctor"],
        ["logs", "bundle", "-o", str(tmp_path / "b.zip")],
    ):
        result = cli(*command)
        assert result.returncode in (0, 1, 2), result.stderr
        assert not marker.exists(), f"{' '.join(command)} imported the user's job module"
    shown = json.loads(cli("config", "show").stdout)
    assert shown["definitions"]["side"]["callable"] == "sideeffect_job:run"
    # The one command that runs it does import it.
    assert cli("run-now", "side", "--wait").returncode == 0
    assert marker.exists()
