"""The committed units and plists: one source of truth, valid for systemd and launchd."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pmjobsd.system import service
from tests.support import REPO

PACKAGING = REPO / "packaging"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
SYSTEM_EXPOSURE_LIMIT = 2.5
USER_EXPOSURE_LIMIT = 2.5


def test_committed_files_are_the_rendered_templates():
    rendered = service.render_packaging()
    committed = {
        str(p.relative_to(PACKAGING)): p.read_text(encoding="utf-8") for p in PACKAGING.rglob("*") if p.is_file()
    }
    assert committed == rendered


def test_units_state_the_service_contract():
    for name in (service.SYSTEMD_USER_UNIT, service.SYSTEMD_SYSTEM_TEMPLATE):
        text = (PACKAGING / "systemd" / name).read_text()
        for line in (
            "Type=notify",
            "WatchdogSec=5min",
            "Restart=on-failure",
            "UMask=0077",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "SystemCallFilter=@system-service",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        ):
            assert f"\n{line}\n" in text, (name, line)
        stop = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.M)
        assert stop and int(stop.group(1)) > 20  # settings jobs.shutdown_grace default
    assert "\nUser=%i\n" in (PACKAGING / "systemd/pmjobsd@.service").read_text()
    # A user manager fails the empty bounding set (218/CAPABILITIES); it takes a non-empty one with PrivateUsers=.
    user = (PACKAGING / "systemd/pmjobsd.service").read_text()
    assert "\nCapabilityBoundingSet=\n" not in user and "\nPrivateUsers=yes\n" in user


def _values(text: str, key: str) -> list[str]:
    return [word for line in text.splitlines() if line.startswith(key + "=") for word in line[len(key) + 1 :].split()]


def test_user_unit_shows_the_daemon_only_the_apps_folders():
    """An empty home (tmpfs) with the app's data and cache (rw) and config (ro): no ~/.ssh, no ~/.gnupg."""
    text = (PACKAGING / "systemd/pmjobsd.service").read_text()
    assert "\nProtectHome=tmpfs\n" in text and "\nPrivateMounts=yes\n" in text
    app = "secure-password-manager"
    assert [w for w in _values(text, "BindPaths") if w.startswith("%h")] == [
        f"%h/.local/share/{app}",
        f"%h/.cache/{app}",
    ]
    assert _values(text, "BindReadOnlyPaths") == [f"-%h/.config/{app}"]
    runtime = [w for w in _values(text, "BindPaths") if "%t" in w]
    assert runtime == ["-%t/pmjobsd", "-%t/systemd/notify", "-%t/bus", f"-%t/{app}"]  # not the whole %t
    assert _values(text, "NoExecPaths") == ["/"] and "/usr" in _values(text, "ExecPaths")
    assert _values(text, "SocketBindAllow") == ["tcp:9464"] and _values(text, "SocketBindDeny") == ["any"]


def test_installed_user_unit_honours_xdg_and_a_venv_in_the_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    venv = home / "venvs/pm 100%"
    (venv / "bin").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/alice/data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # XDG: a relative value means the default
    plan = service.make_plan("user", platform="linux", command=[str(venv / "bin/pmjobsd")])
    text = plan.unit_text
    app = "secure-password-manager"
    assert [w for w in _values(text, "BindPaths") if "%t" not in w] == [f"/srv/alice/data/{app}", f"%h/cache/{app}"]
    assert f"\nBindReadOnlyPaths=-%h/.config/{app}\n" in text
    assert '\nBindReadOnlyPaths="%h/venvs/pm 100%%/bin"\n' in text
    (exec_paths,) = [line for line in text.splitlines() if line.startswith("ExecPaths=")]
    assert exec_paths.endswith(' "%h/venvs/pm 100%%/bin"')
    assert plan.folders == [Path(f"/srv/alice/data/{app}"), home / "cache" / app]


def test_exec_start_quotes_awkward_paths():
    text = service.render_systemd("pmjobsd.service", ["/opt/my tools/100%/pmjobsd"])
    assert '\nExecStart="/opt/my tools/100%%/pmjobsd" run\n' in text


# Keys and value types from launchd.plist(5).
LAUNCHD_KEYS = {
    "Label": str,
    "UserName": str,
    "GroupName": str,
    "InitGroups": bool,
    "ProgramArguments": list,
    "EnvironmentVariables": dict,
    "RunAtLoad": bool,
    "KeepAlive": (bool, dict),
    "ThrottleInterval": int,
    "ExitTimeOut": int,
    "ProcessType": str,
    "Umask": int,
    "WorkingDirectory": str,
    "StandardOutPath": str,
    "StandardErrorPath": str,
    "Nice": int,
    "LowPriorityIO": bool,
}
KEEPALIVE_KEYS = {"SuccessfulExit", "NetworkState", "PathState", "OtherJobEnabled", "AfterInitialDemand", "Crashed"}


@pytest.mark.parametrize(
    "name,daemon",
    [
        ("org.securepasswordmanager.pmjobsd.plist", False),
        ("org.securepasswordmanager.pmjobsd.USERNAME.plist", True),
    ],
)
def test_plists_are_valid_launchd_jobs(name, daemon):
    path = PACKAGING / "launchd" / name
    job = plistlib.loads(path.read_bytes())
    for key, value in job.items():
        assert key in LAUNCHD_KEYS, f"{name}: {key} is not a launchd.plist(5) key"
        assert isinstance(value, LAUNCHD_KEYS[key]), key
    assert job["Label"] + ".plist" == name
    assert job["ProgramArguments"] == ["/usr/local/bin/pmjobsd", "run"]
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False} and set(job["KeepAlive"]) <= KEEPALIVE_KEYS
    assert job["ProcessType"] == "Background"
    assert job["Umask"] == 0o077
    assert job["ExitTimeOut"] > 20
    assert all(Path(job[key]).is_absolute() for key in ("StandardOutPath", "StandardErrorPath", "WorkingDirectory"))
    assert ("UserName" in job) is daemon


@pytest.fixture(scope="module")
def verifiable_units(tmp_path_factory):
    """The units rendered for a stub pmjobsd that exists, so verify can check ExecStart=."""
    base = tmp_path_factory.mktemp("units")
    stub = base / "bin" / "pmjobsd"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    (base / "runtime").mkdir(mode=0o700)
    user_unit = base / "pmjobsd.service"
    user_unit.write_text(service.render_systemd("pmjobsd.service", [str(stub)]))
    template = base / "pmjobsd@.service"
    template.write_text(service.render_systemd("pmjobsd@.service", [str(stub)]))
    instance = base / "pmjobsd@alice.service"  # a template is verified through an instance
    instance.symlink_to(template.name)
    # Only the ExecStart= path differs from the committed files.
    assert (
        user_unit.read_text().replace(str(stub), "/usr/local/bin/pmjobsd")
        == (PACKAGING / "systemd/pmjobsd.service").read_text()
    )
    env = {**os.environ, "XDG_RUNTIME_DIR": str(base / "runtime"), "SYSTEMD_LOG_COLOR": "0"}
    return {"user": (["--user"], user_unit), "system": ([], instance), "env": env}


def _analyze(args, env):
    return subprocess.run([SYSTEMD_ANALYZE, *args], env=env, capture_output=True, text=True, timeout=60)


@needs_analyze
@pytest.mark.parametrize("scope", ["user", "system"])
def test_systemd_analyze_verify(verifiable_units, scope):
    flags, unit = verifiable_units[scope]
    result = _analyze([*flags, "verify", str(unit)], verifiable_units["env"])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def exposure(verifiable_units, scope) -> float:
    flags, unit = verifiable_units[scope]
    result = _analyze([*flags, "security", "--offline=true", "--no-pager", str(unit)], verifiable_units["env"])
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


@needs_analyze
def test_system_unit_exposure_is_low(verifiable_units):
    assert exposure(verifiable_units, "system") <= SYSTEM_EXPOSURE_LIMIT


@needs_analyze
def test_user_unit_exposure_is_low(verifiable_units):
    # Offline analysis rates a user unit as if it ran as root (no User=); docs/service.md explains.
    assert exposure(verifiable_units, "user") <= USER_EXPOSURE_LIMIT


@needs_analyze
def test_user_unit_rendered_for_a_venv_in_the_home_verifies(tmp_path, monkeypatch):
    home = tmp_path / "home"
    stub = home / "my venv/bin/pmjobsd"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "elsewhere"))
    unit = tmp_path / "pmjobsd.service"
    unit.write_text(service.make_plan("user", platform="linux", command=[str(stub)]).unit_text)
    (tmp_path / "runtime").mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "runtime"), "SYSTEMD_LOG_COLOR": "0"}
    result = _analyze(["--user", "verify", str(unit)], env)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
