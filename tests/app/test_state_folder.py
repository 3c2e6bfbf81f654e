"""With jobs.coordination each machine keeps its state in its own folder, never on a network file system."""

from __future__ import annotations

import json

import pytest

from pmjobsd.app.paths import AppPaths, check_local_state_folder, network_filesystem
from pmjobsd.core.settings import app_folders, load_settings
from pmjobsd.system.files import describe_error


def _mounts(tmp_path, *lines):
    table = tmp_path / "mounts"
    table.write_text("".join(line + "\n" for line in lines))
    return table


def test_the_longest_mount_point_decides(tmp_path):
    share = tmp_path / "share"
    (share / "local").mkdir(parents=True)
    table = _mounts(
        tmp_path,
        "/dev/sda1 / ext4 rw 0 0",
        f"nas:/vault {share} nfs4 rw 0 0",
        f"/dev/sdb1 {share}/local ext4 rw 0 0",
    )
    assert network_filesystem(share / "jobs", table) == "nfs4"  # not made yet: its parent counts
    assert network_filesystem(share / "local" / "state", table) is None
    assert network_filesystem(tmp_path / "elsewhere", table) is None
    (tmp_path / "shared").mkdir()  # a prefix of a mount point's name is not inside it
    assert network_filesystem(tmp_path / "shared", table) is None


@pytest.mark.parametrize("kind", ["nfs", "cifs", "smb3", "fuse.sshfs", "9p", "ceph"])
def test_a_state_folder_on_a_network_file_system_is_refused_in_one_line(tmp_path, kind):
    table = _mounts(tmp_path, "/dev/sda1 / ext4 rw 0 0", f"server:/x {tmp_path} {kind} rw 0 0")
    with pytest.raises(OSError) as raised:
        check_local_state_folder(tmp_path / "state", table)
    message = describe_error(raised.value)
    assert message.startswith(f"{tmp_path / 'state'}: on a network file system ({kind})")
    assert "XDG_STATE_HOME" in message and "\n" not in message


def test_a_local_state_folder_passes(tmp_path):
    check_local_state_folder(tmp_path, _mounts(tmp_path, "/dev/sda1 / ext4 rw 0 0", "tmpfs /tmp tmpfs rw 0 0"))


def test_coordination_moves_the_state_folder_to_the_members_own(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    base = AppPaths.resolve(data_dir=tmp_path / "shared", config_dir=tmp_path / "config")
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps({"jobs": {"coordination": {"url": "redis://127.0.0.1/0", "group": "g", "member": "nas"}}})
    )
    settings.chmod(0o600)
    folders = app_folders(base, load_settings(settings, base=base, import_jobs=False).settings)
    assert folders.state_dir == tmp_path / "state" / "pmjobsd" / "nas"
    assert folders.history_path.parent == folders.lock_path.parent == folders.state_dir
    assert folders.vault_path == tmp_path / "shared" / "passwords.db"  # the app's files stay shared
    settings.write_text("{}")
    assert app_folders(base, load_settings(settings, base=base, import_jobs=False).settings).state_dir == (
        tmp_path / "shared" / "jobs"
    )
