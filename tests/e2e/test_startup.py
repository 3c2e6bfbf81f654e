"""Start-up: every failure is one line on stderr and a non-zero exit, detached or not.

Real processes, real file systems: a full 1 MB tmpfs, a read-only tmpfs, 10 simultaneous
``run --detach`` starters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pmjobsd.system.lock import holder_pid
from tests.support.daemon import wait_for
from tests.system.test_own_files import assert_one_line, start_refused

TICK = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"}


def mount_tmpfs(point: Path, options: str) -> None:
    point.mkdir(parents=True, exist_ok=True, mode=0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def outside(tmp_path) -> Path:
    """A root-owned 0600 file outside the app's folders."""
    (tmp_path / "root-only").mkdir(mode=0o700)
    target = tmp_path / "root-only" / "shadow"
    target.write_text("root:secret\n")
    return target


@pytest.fixture
def mounts():
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False)


def daemons_of(home) -> list[int]:
    """Live `pmjobsd run` processes whose HOME is this test's home."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"run" in cmdline and f"HOME={home.root}".encode() in environ:
            found.append(int(entry.name))
    return found


def stop_all(home) -> None:
    for pid in daemons_of(home):
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not daemons_of(home), 30, message="the daemons to stop")


def test_full_disk_at_start_is_one_line(home, mounts):
    home.write_settings({"definitions": {"tick": TICK}})
    data = home.root / "small"
    mount_tmpfs(data, "size=1m,mode=0700")
    mounts.append(data)
    with open(data / "filler", "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):
            try:
                while handle.write(b"\0" * size):
                    pass
            except OSError:
                pass
    result = start_refused(home, "--data-dir", str(data))
    assert_one_line(result, "cannot start", str(data), "No space left on device")


def test_unopenable_jobs_log_at_start_is_one_line(home):
    home.write_settings({"definitions": {"tick": TICK}})
    home.jobs_log.mkdir(parents=True)
    result = start_refused(home)
    assert_one_line(result, "cannot start", str(home.jobs_log))


def test_read_only_pid_file_folder_is_one_line(home, mounts):
    home.write_settings({"definitions": {"tick": TICK}})
    state = home.data_dir / "jobs"
    mount_tmpfs(state, "ro,size=1m,mode=0700")
    mounts.append(state)
    result = start_refused(home)
    assert_one_line(result, "cannot start", str(state / "pmjobsd.pid"), "Read-only file system")


def test_detached_start_that_fails_exits_non_zero_with_the_reason(home, outside):
    home.write_settings({"definitions": {"tick": TICK}})
    home.jobs_log.parent.mkdir(mode=0o700)
    home.jobs_log.symlink_to(outside)
    result = home.cli("run", "--detach", timeout=60)
    assert_one_line(result, str(home.jobs_log), "symbolic link")
    assert not daemons_of(home) and outside.read_text() == "root:secret\n"


def test_ten_simultaneous_detached_starts_one_wins(home):
    home.write_settings({"definitions": {"tick": TICK}})
    lock = home.data_dir / "jobs" / "pmjobsd.pid"
    try:
        for round_ in range(2):  # the default pid file, then a pid file of its own per starter
            starters = [
                subprocess.Popen(
                    [sys.executable, "-m", "pmjobsd", "run", "--detach", "--no-console"]
                    + (["--pidfile", str(home.root / f"detached-{n}.pid")] if round_ else []),
                    env=home.env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for n in range(10)
            ]
            results = [(proc.wait(90), proc.stderr.read()) for proc in starters]
            winners = [err for code, err in results if code == 0]
            assert len(winners) == 1, results
            for code, err in results:
                if code != 0:
                    assert len(err.strip().splitlines()) == 1 and "already runs" in err, err
            time.sleep(1.5)  # a daemon that would die after its starter returned has done so now
            (pid,) = daemons_of(home)
            assert holder_pid(lock) == pid
            stop_all(home)
    finally:
        stop_all(home)


def test_pidfile_in_the_foreground_is_honoured(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK}})
    pidfile = home.root / "fg.pid"
    daemon = daemon_factory("--pidfile", str(pidfile))
    assert int(pidfile.read_text()) == daemon.pid and holder_pid(pidfile) == daemon.pid
    assert daemon.stop() == 0
    assert not pidfile.exists()


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_the_garbage_collector_is_on_once_the_daemon_is_ready(home, daemon_factory, detach):
    # The start runs with the cyclic collector off (cli.cmd_run); from READY on the daemon has it back.
    job = {"cron": "0 0 1 1 *", "catch_up": False, "callable": "tests.support.sample_jobs:collector_state"}
    home.write_settings({"definitions": {"gc": job}})
    try:
        if detach:
            started = home.cli("run", "--detach", "--no-console", timeout=60)
            assert started.returncode == 0, started.stderr
        else:
            daemon_factory()
        result = home.cli("run-now", "gc", "--wait", "--json")
    finally:
        stop_all(home)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert json.loads(result.stdout)["run"]["summary"] == "gc enabled: True"
