"""`pmjobsd service install|uninstall|status`: dry runs, and real installs into a temporary root."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from pmjobsd.app.paths import APP_NAME as APP
from pmjobsd.system import service
from tests.support import REPO

PACKAGING = REPO / "packaging"
ME = pwd.getpwuid(os.getuid())
# The system service runs as the vault's owner, never root: any other account will do.
OWNER = next(entry for entry in pwd.getpwall() if entry.pw_uid != 0)
COMMAND = list(service.DEFAULT_COMMAND)


class Recorder:
    """A runner that records argv instead of calling systemctl/launchctl."""

    def __init__(self, codes=None):
        self.calls, self.codes = [], codes or {}

    def __call__(self, argv):
        self.calls.append(list(argv))
        return self.codes.get(argv[-2] if len(argv) > 1 else argv[0], 0)


def _run(action, scope, **kwargs):
    out = io.StringIO()
    code = action(scope, kwargs.pop("dry_run", False), out, command=COMMAND, **kwargs)
    return code, out.getvalue()


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    # `status --user` asks the user manager only with a session bus (tests/e2e covers none).
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/0/bus")
    return home


def test_dry_run_user_systemd_prints_paths_and_commands(home):
    runner = Recorder()
    code, out = _run(service.install, "user", dry_run=True, platform="linux", runner=runner)
    assert code == 0 and runner.calls == []
    assert f"would write: {home}/.config/systemd/user/pmjobsd.service (0600)" in out
    assert f"would create folder: {home}/.local/share/secure-password-manager (0700)" in out
    assert "would run: systemctl --user daemon-reload\nwould run: systemctl --user enable --now pmjobsd.service" in out
    assert not (home / ".config").exists()


def test_dry_run_system_systemd(home):
    code, out = _run(service.install, "system", dry_run=True, platform="linux", user_name=OWNER.pw_name)
    assert code == 0
    assert "would write: /etc/systemd/system/pmjobsd@.service (0644)" in out
    assert f"would create folder: {OWNER.pw_dir}/.cache/secure-password-manager (0700, as {OWNER.pw_name})" in out
    assert f"would run: systemctl enable --now pmjobsd@{OWNER.pw_name}.service" in out
    code, out = _run(service.uninstall, "system", dry_run=True, platform="linux", user_name=OWNER.pw_name)
    assert f"would run: systemctl disable --now pmjobsd@{OWNER.pw_name}.service" in out
    assert "would remove: /etc/systemd/system/pmjobsd@.service" in out


def test_dry_run_launchd(home):
    code, out = _run(service.install, "user", dry_run=True, platform="darwin")
    label = "org.securepasswordmanager.pmjobsd"
    plist = f"{home}/Library/LaunchAgents/{label}.plist"
    assert code == 0 and f"would write: {plist} (0600)" in out
    assert f"would run: launchctl bootstrap gui/{ME.pw_uid} {plist}" in out
    code, out = _run(service.install, "system", dry_run=True, platform="darwin", user_name=OWNER.pw_name)
    assert f"would run: launchctl bootstrap system /Library/LaunchDaemons/{label}.{OWNER.pw_name}.plist" in out
    code, out = _run(service.status, "system", dry_run=True, platform="darwin", user_name=OWNER.pw_name)
    assert f"would run: launchctl print system/{label}.{OWNER.pw_name}" in out


def test_system_service_refuses_root_account(home):
    code, out = _run(service.install, "system", dry_run=True, platform="linux", user_name="root")
    assert code == 2 and "not root" in out and "Traceback" not in out
    code, out = _run(service.install, "system", dry_run=True, platform="linux", user_name="no-such-user-9z")
    assert code == 2 and "no such account 'no-such-user-9z'" in out


@pytest.mark.parametrize(
    "platform,scope,relative,committed",
    [
        ("linux", "user", "{home}/.config/systemd/user/pmjobsd.service", "systemd/pmjobsd.service"),
        ("linux", "system", "etc/systemd/system/pmjobsd@.service", "systemd/pmjobsd@.service"),
        (
            "darwin",
            "user",
            "{home}/Library/LaunchAgents/org.securepasswordmanager.pmjobsd.plist",
            "launchd/org.securepasswordmanager.pmjobsd.plist",
        ),
    ],
)
def test_install_status_uninstall_into_a_root(request, tmp_path, home, platform, scope, relative, committed):
    root = tmp_path / "root"
    if scope == "system":  # the owner creates its folders itself: its home must be reachable and its own
        root = Path(tempfile.mkdtemp(dir="/tmp", prefix="pmjobsd-root-"))
        root.chmod(0o755)
        owner_home = root / OWNER.pw_dir.lstrip("/")
        owner_home.mkdir(parents=True, mode=0o755)
        os.chown(owner_home, OWNER.pw_uid, OWNER.pw_gid)
        request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    runner = Recorder()
    user = {"user_name": OWNER.pw_name} if scope == "system" else {}
    code, out = _run(service.install, scope, platform=platform, root=root, runner=runner, **user)
    assert code == 0, out
    target = root / relative.format(home=home).lstrip("/")
    expected = (PACKAGING / committed).read_text()
    if platform == "darwin":  # the committed agent is rendered for /Users/USERNAME
        expected = expected.replace("/Users/USERNAME", str(home))
    assert target.read_text() == expected
    assert target.stat().st_mode & 0o777 == (0o644 if scope == "system" else 0o600)
    owner = OWNER if scope == "system" else ME
    data_dir = root / str(Path(owner.pw_dir if scope == "system" else home, ".local/share", APP)).lstrip("/")
    info = data_dir.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (owner.pw_uid if os.geteuid() == 0 else os.getuid(), 0o700)
    assert runner.calls and runner.calls[-1][0] in ("systemctl", "launchctl")

    code, out = _run(service.status, scope, platform=platform, root=root, runner=Recorder(), **user)
    assert code == 0 and f"installed: {target}" in out and "differs" not in out

    code, out = _run(service.uninstall, scope, platform=platform, root=root, runner=Recorder(), **user)
    assert code == 0 and not target.exists()
    code, out = _run(service.status, scope, platform=platform, root=root, runner=Recorder(), **user)
    assert code == 1 and "not installed" in out


def test_failed_manager_command_is_reported(tmp_path, home):
    runner = Recorder(codes={"--now": 1})
    code, out = _run(service.install, "user", platform="linux", root=tmp_path / "root", runner=runner)
    assert code == 1 and "systemctl exited with 1" in out


def test_status_notices_an_outdated_unit(tmp_path, home):
    root = tmp_path / "root"
    _run(service.install, "user", platform="linux", root=root, runner=Recorder())
    out = io.StringIO()
    code = service.status(
        "user", False, out, platform="linux", command=["/opt/new/pmjobsd"], root=root, runner=Recorder()
    )
    assert code == 0  # an outdated unit is still installed and running
    assert "differs from this version" in out.getvalue()


def test_installed_command_is_absolute():
    command = service.installed_command()
    assert Path(command[0]).is_absolute()
