"""A built-in job whose implementation does not import breaks that job only (a real daemon, a broken module).

The package is copied and one implementation module made to raise at import, as a module whose
library is missing would.  The daemon reads the job's declaration, schedules it and answers; the
job's runs FAIL saying what did not import; the other jobs run; ``config validate`` and ``doctor``
name the problem without a run.
"""

from __future__ import annotations

import json
import os
import shutil

from tests.support import REPO
from tests.support.daemon import AppHome, DaemonProcess

BROKEN_MODULE = "pmjobsd/jobs/logs/log_purge.py"
CAUSE = "ImportError: libfoo.so.3: cannot open shared object file"
MESSAGE = f"built-in job 'log_purge': cannot import module 'pmjobsd.jobs.logs.log_purge': {CAUSE}"


class BrokenInstall(AppHome):
    """A home whose commands run a copy of pmjobsd with one job module broken (the tests from the checkout)."""

    def __init__(self, root, package_copy):
        super().__init__(root)
        self.package_copy = package_copy

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PYTHONPATH"] = os.pathsep.join([str(self.package_copy), env["PYTHONPATH"]])
        return env


def broken_install(tmp_path, monkeypatch) -> BrokenInstall:
    monkeypatch.chdir(tmp_path)  # `python -m` puts the working folder first on sys.path: not the checkout
    copy = tmp_path / "install"
    shutil.copytree(REPO / "pmjobsd", copy / "pmjobsd", ignore=shutil.ignore_patterns("__pycache__"))
    module = copy / BROKEN_MODULE
    module.write_text(module.read_text() + f"\nraise ImportError({CAUSE.partition(': ')[2]!r})\n")
    return BrokenInstall(tmp_path / "home", copy)


def test_a_broken_implementation_fails_its_runs_and_nothing_else(tmp_path, monkeypatch):
    home = broken_install(tmp_path, monkeypatch)
    definitions = {
        "log_purge": {"enabled": True, "catch_up": False, "retries": 0},
        "tick": {"cron": "0 0 1 1 *", "callable": "tests.support.sample_jobs:ok"},
    }
    home.write_settings({"alerts": {"desktop": False, "targets": []}, "definitions": definitions})
    daemon = DaemonProcess(home).wait_ready()
    try:
        code, status = home.status()
        purge = home.cli("run-now", "log_purge", "--wait", "--json")
        tick = home.cli("run-now", "tick", "--wait", "--json")
    finally:
        daemon.stop()
    entry = next(job for job in status["jobs"] if job["name"] == "log_purge")
    assert entry["enabled"] and "config_errors" not in entry and entry["next_run"]  # scheduled as declared
    assert purge.returncode == 2, purge.stdout + purge.stderr[-2000:]
    run = json.loads(purge.stdout)["run"]
    assert run["status"] == "FAIL" and run["summary"] == f"RegistryError: {MESSAGE}"
    assert tick.returncode == 0 and json.loads(tick.stdout)["run"]["status"] == "OK"
    (failed,) = home.events("job.failed", job="log_purge")
    assert MESSAGE in failed["error"]


def test_config_validate_and_doctor_name_a_broken_implementation(tmp_path, monkeypatch):
    home = broken_install(tmp_path, monkeypatch)
    home.write_settings({"definitions": {"log_purge": {"enabled": True}}})
    validate = home.cli("config", "validate")
    assert validate.returncode == 1
    assert f"jobs.definitions.log_purge: {MESSAGE}" in validate.stderr
    doctor = home.cli("doctor", "--json")
    settings = next(check for check in json.loads(doctor.stdout)["checks"] if check["name"] == "settings")
    assert settings["status"] == "WARN" and MESSAGE in settings["message"], settings
    # Reading the settings for anything else does not import the implementations: status says nothing.
    code, status = home.status()
    assert "config_errors" not in next(job for job in status["jobs"] if job["name"] == "log_purge")
