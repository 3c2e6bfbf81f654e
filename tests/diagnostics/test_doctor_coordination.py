"""The doctor's coordination checks that need no daemon: the file system of the state folder, TLS, off."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmjobsd.core.context import Status
from pmjobsd.diagnostics import doctor
from pmjobsd.diagnostics.doctor.checks_coordination import _tls, filesystem_type, is_network_fs
from tests.support.diagnostics_fixtures import environment, seed_home

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /home/a/nas rw,relatime shared:9 - nfs4 nas:/export rw,vers=4.2
31 30 0:41 / /home/a/nas/local\\040disk rw shared:10 - ext4 /dev/sdb1 rw
32 22 0:42 / /home/a/box rw,nosuid shared:11 - fuse.sshfs me@box:/ rw
33 22 0:43 / /home/a/nasty rw shared:12 - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("path", "kind", "network"),
    [
        ("/home/a/.local/state/pmjobsd/laptop", "ext4", False),
        ("/home/a/nas/state", "nfs4", True),
        ("/home/a/nas", "nfs4", True),
        ("/home/a/nas/local disk/state", "ext4", False),
        ("/home/a/box/state", "fuse.sshfs", True),
        ("/home/a/nasty/state", "tmpfs", False),  # a prefix of the name is not the mount point
    ],
)
def test_the_file_system_of_a_path_is_its_innermost_mount(path, kind, network):
    assert filesystem_type(Path(path), MOUNTINFO) == kind
    assert is_network_fs(kind) is network


def test_a_remote_engine_without_tls_is_a_warning_with_the_fix():
    assert _tls("redis://127.0.0.1:6379/0", "x").status is Status.OK
    assert _tls("rediss://nas.local:6380/0", "x").status is Status.OK
    check = _tls("redis://u:pw@nas.local:6379/0", "redis://u:<redacted>@nas.local:6379/0")
    assert check.status is Status.WARN and "rediss://" in check.hint and "pw@" not in check.message


def test_without_coordination_the_doctor_says_nothing_about_it(home, monkeypatch):
    environment(home, monkeypatch)
    env = seed_home(home)
    assert env.loaded.settings.coordination is None
    assert doctor.check_coordination(env) == []
