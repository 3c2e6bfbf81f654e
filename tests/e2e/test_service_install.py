"""`sudo pmjobsd service install --system` never hands a root-owned file or folder to the vault's owner.

The real CLI runs as root inside a private mount namespace (``unshare -m``): ``/etc/passwd`` is
bind-mounted with an extra account whose home is a temporary folder, and ``/etc/systemd/system``
is a tmpfs, so the machine's files are never touched. ``systemctl`` is a stub that exits 0 (no
systemd manager is started); the folders it creates are what is under test. The owner acts as
uid 65534 through ``setpriv``, from a world-traversable temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import REPO

UID = GID = 65534
ACCOUNT = "pmjobsd-victim"
APP = "secure-password-manager"
DROP = ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups"]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"),
    reason="needs root, setpriv and unshare",
)


@pytest.fixture
def sandbox():
    """A world-traversable folder: the owner's home (0700, uid 65534), a root-owned target, passwd, stub bin."""
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="pmjobsd-svc-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir(mode=0o700)
    os.chown(home, UID, GID)
    target = base / "root-owned"  # stands for /etc: root's, readable by all, writable by root only
    target.mkdir(mode=0o755)
    passwd = base / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text() + f"{ACCOUNT}:x:{UID}:{GID}::{home}:/usr/sbin/nologin\n")
    stub = base / "bin" / "systemctl"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    try:
        yield base, home, target
    finally:
        shutil.rmtree(base, ignore_errors=True)


def install_as_root(base: Path) -> subprocess.CompletedProcess[str]:
    """``pmjobsd service install --system --user-name ACCOUNT``, the real CLI, in a private mount namespace."""
    script = (
        f"mount --bind {base}/passwd /etc/passwd && mount -t tmpfs tmpfs /etc/systemd/system && "
        f'exec "$0" -m pmjobsd service install --system --user-name {ACCOUNT}'
    )
    env = {**os.environ, "PATH": f"{base}/bin:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    env.pop("SUDO_USER", None)
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def owned_by_victim(top: Path) -> list[str]:
    """Every path at or under ``top`` (not following symlinks) that belongs to uid 65534."""
    found = [str(top)] if top.lstat().st_uid == UID else []
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            if (Path(folder) / name).lstat().st_uid == UID:
                found.append(str(Path(folder) / name))
    return found


def test_install_creates_the_owners_folders_as_the_owner(sandbox):
    base, home, target = sandbox
    result = install_as_root(base)
    assert result.returncode == 0, result.stdout + result.stderr
    for folder in (home / ".local", home / ".local/share", home / ".local/share" / APP, home / ".cache" / APP):
        info = folder.lstat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (UID, GID, 0o700), folder


def test_a_symlinked_cache_folder_is_not_followed_into_roots_files(sandbox):
    """``~/.cache -> /etc``: root used to create /etc/secure-password-manager and give it to the user."""
    base, home, target = sandbox
    (home / ".cache").symlink_to(target)
    os.lchown(home / ".cache", UID, GID)
    result = install_as_root(base)
    assert owned_by_victim(target) == []
    assert list(target.iterdir()) == []
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("pmjobsd service:")]
    assert len(lines) == 1 and str(home / ".cache" / APP) in lines[0] and ACCOUNT in lines[0], result.stdout
    assert "Traceback" not in result.stderr


RACER = """
import os, sys
home, target, go, stop = sys.argv[1:5]
folders = [os.path.join(home, ".cache"), os.path.join(home, ".local")]
n = 0
while not os.path.exists(stop):
    for folder in folders if os.path.exists(go) else ():
        n += 1
        try:  # one rename a round: it succeeds the moment root has created the folder
            os.rename(folder, "%s.moved%d" % (folder, n))
        except OSError:
            continue
        try:
            os.symlink(target, folder)
        except OSError:
            pass
"""


def test_a_rename_to_symlink_race_during_install_hands_over_nothing(sandbox):
    """The owner swaps ``~/.cache`` for a symlink to a root-owned folder while root installs (12 real runs)."""
    base, home, target = sandbox
    racer_file = base / "racer.py"
    racer_file.write_text(RACER)
    racer_file.chmod(0o644)
    go, stop = base / "go", base / "stop"
    racer = subprocess.Popen(
        [*DROP, "/usr/bin/python3", str(racer_file), str(home), str(target), str(go), str(stop)],
        stderr=subprocess.PIPE,
        text=True,
    )
    handed_over: list[str] = []
    try:
        for _ in range(12):
            go.touch()
            install_as_root(base)
            go.unlink()
            time.sleep(0.05)  # let a swap in flight finish before looking and cleaning up
            handed_over += owned_by_victim(target)
            for leftover in list(home.iterdir()):  # a fresh home for the next run
                if leftover.is_symlink() or leftover.is_file():
                    leftover.unlink()
                else:
                    shutil.rmtree(leftover)
            for child in list(target.iterdir()):
                shutil.rmtree(child)
            os.chown(target, 0, 0)
    finally:
        stop.touch()
        racer.wait(10)
    assert racer.returncode == 0, racer.stderr.read() if racer.stderr else ""
    assert handed_over == []


def test_status_without_a_session_bus_says_so_in_one_line(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME")
    }
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "pmjobsd", "service", "status", "--user"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines[0] == f"not installed: {tmp_path}/.config/systemd/user/pmjobsd.service"
    assert len(lines) == 2 and lines[1].startswith("pmjobsd service: no session bus"), lines
    assert "systemctl --user" in lines[1]
