"""Detaching: a real process daemonises with detach(), holds its pidfile, stops on SIGTERM."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pmjobsd.system.lock import AlreadyRunning, InstanceLock
from tests.support import REPO
from tests.support.daemon import wait_for

# Stands in for `pmjobsd run --detach --pidfile PATH` until the CLI is wired.
DAEMON = r"""
import logging, sys, time
from pathlib import Path
from pmjobsd.system.detach import detach
from pmjobsd.system.lock import AlreadyRunning

pidfile, log_path = Path(sys.argv[1]), Path(sys.argv[2])
logger = logging.getLogger("pmjobsd")
logger.setLevel(logging.INFO)
logger.addHandler(logging.FileHandler(log_path))   # opened before detaching: must survive
try:
    with detach(pidfile) as detached:
        import os
        logger.info("detached pid=%s stale=%s cwd=%s", os.getpid(), detached.stale_pid, os.getcwd())
        for handler in logger.handlers:
            handler.flush()
        detached.ready()  # the starter exits 0 now
        while True:
            time.sleep(0.05)
except AlreadyRunning as error:
    print(f"pmjobsd: {error}", file=sys.stderr)
    sys.exit(1)
"""


def _start(tmp_path: Path, pidfile: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "detached_pmjobsd.py"  # not daemon.py: it would shadow python-daemon
    script.write_text(DAEMON)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(script), str(pidfile), str(tmp_path / "daemon.log")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; reaping is its new parent's business


def _daemon_line(tmp_path: Path) -> str | None:
    log = tmp_path / "daemon.log"
    text = log.read_text() if log.exists() else ""
    return next((line for line in text.splitlines() if line.startswith("detached")), None)


@pytest.fixture
def started(tmp_path):
    pidfile = tmp_path / "state" / "pmjobsd.pid"
    result = _start(tmp_path, pidfile)
    assert result.returncode == 0, result.stderr  # the starter returns once the daemon is off
    line = wait_for(lambda: _daemon_line(tmp_path), 20, message="the daemon's first log line")
    pid = int(line.split("pid=")[1].split()[0])
    yield pidfile, pid, line
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_daemon_writes_and_locks_its_pidfile(started):
    pidfile, pid, line = started
    assert int(pidfile.read_text()) == pid
    assert pidfile.stat().st_mode & 0o777 == 0o600
    assert pidfile.parent.stat().st_mode & 0o777 == 0o700
    with open(pidfile) as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Umask:\t0077" in status
    assert "cwd=/ " in line + " " and os.readlink(f"/proc/{pid}/cwd") == "/"
    assert os.getsid(pid) != os.getsid(0)  # its own session, no controlling terminal
    assert "stale=None" in line


def test_second_start_is_refused(started, tmp_path):
    pidfile, pid, _line = started
    result = _start(tmp_path, pidfile)
    assert result.returncode == 1
    assert f"already runs (pid {pid}): {pidfile} is locked" in result.stderr
    assert "Traceback" not in result.stderr
    assert int(pidfile.read_text()) == pid and _alive(pid)


def test_sigterm_stops_it_and_removes_the_pidfile(started):
    pidfile, pid, _line = started
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists(), 20, message="the pidfile to be removed")
    wait_for(lambda: not _alive(pid), 20, message="the daemon to exit")


def test_stale_pidfile_is_recovered(tmp_path):
    pidfile = tmp_path / "pmjobsd.pid"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    pidfile.write_text(f"{dead_pid}\n")  # left behind by a daemon killed with SIGKILL
    result = _start(tmp_path, pidfile)
    assert result.returncode == 0, result.stderr
    line = wait_for(lambda: _daemon_line(tmp_path), 20, message="the daemon's first log line")
    pid = int(line.split("pid=")[1].split()[0])
    try:
        assert f"stale={dead_pid}" in line
        assert int(pidfile.read_text()) == pid
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), 20, message="the pidfile to be removed")


def test_lock_in_process(tmp_path):
    pidfile = tmp_path / "pmjobsd.pid"
    first = InstanceLock(pidfile)
    first.acquire()
    with pytest.raises(AlreadyRunning) as refused:
        InstanceLock(pidfile).acquire()
    assert refused.value.pid == os.getpid()
    first.release()
    assert not pidfile.exists()
    with InstanceLock(pidfile) as again:
        assert int(pidfile.read_text()) == os.getpid() and again.stale_pid is None
