"""pmjobsd's own files never follow a link and never live in someone else's folder.

Every test runs the real ``python -m pmjobsd`` process on a temporary HOME (as root,
which is what makes the attacks dangerous) and looks at the real files afterwards.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pmjobsd.system.files import UnsafePathError, ensure_private_dir, open_private
from tests.support.daemon import AppHome, wait_for

TICK = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"}
NOBODY = 65534


def start_refused(home: AppHome, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``pmjobsd run``; it must exit on its own (a refused start), not keep running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmjobsd", "run", "--no-console", *args],
        env=env or home.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"pmjobsd started instead of refusing: {err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def outside(tmp_path) -> Path:
    """A root-owned 0600 file outside the app's folders: what an attacker points links at."""
    folder = tmp_path / "root-only"
    folder.mkdir(mode=0o700)
    target = folder / "shadow"
    target.write_text("root:secret\n")
    target.chmod(0o600)
    return target


def test_symlinked_jobs_log_is_refused_and_its_target_untouched(home, outside):
    home.write_settings({"definitions": {"tick": TICK}})
    home.jobs_log.parent.mkdir(mode=0o700)
    home.jobs_log.symlink_to(outside)

    result = start_refused(home)
    assert_one_line(result, str(home.jobs_log), "symbolic link")
    now = home.cli("run-now", "tick", "--wait")  # no daemon: runs here and would append to jobs.log
    assert now.returncode != 0 and str(home.jobs_log) in now.stderr and "Traceback" not in now.stderr
    assert outside.read_text() == "root:secret\n" and stat.S_IMODE(outside.stat().st_mode) == 0o600


def test_symlinked_pid_file_is_refused_and_its_target_untouched(home, outside):
    home.write_settings({"definitions": {"tick": TICK}})
    state = home.data_dir / "jobs"
    state.mkdir(mode=0o700)
    (state / "pmjobsd.pid").symlink_to(outside)

    result = start_refused(home)
    assert_one_line(result, str(state / "pmjobsd.pid"), "symbolic link")
    assert outside.read_text() == "root:secret\n"


@pytest.mark.parametrize("attack", ["owned by nobody", "mode 0777"])
def test_state_folder_of_someone_else_or_writable_by_all_is_refused(home, attack):
    home.write_settings({"definitions": {"tick": TICK}})
    state = home.data_dir / "jobs"
    state.mkdir(mode=0o700)
    if attack == "owned by nobody":
        os.chown(state, NOBODY, NOBODY)
        needle = f"uid {NOBODY}"
    else:
        state.chmod(0o777)
        needle = "writable"
    result = start_refused(home)
    assert_one_line(result, str(state), needle)
    assert not (state / "pmjobsd.pid").exists() and not (state / "history.db").exists()


def test_root_on_a_users_home_is_refused(home):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    home.write_settings({"definitions": {"tick": TICK}})
    os.chown(home.root, NOBODY, NOBODY)
    result = start_refused(home)
    assert_one_line(result, "root", f"HOME={home.root}", f"uid {NOBODY}")
    assert not (home.data_dir / "jobs").exists()


def test_own_folders_are_created_0700_and_the_apps_logs_folder_is_left_as_it_is(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK}})
    app_logs = home.jobs_log.parent
    app_logs.mkdir(mode=0o755)
    app_logs.chmod(0o755)  # the app's own folder, as the app made it
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="tick"), message="a run of tick")
    assert stat.S_IMODE(app_logs.stat().st_mode) == 0o755
    assert stat.S_IMODE(home.jobs_log.stat().st_mode) == 0o600
    assert stat.S_IMODE((home.data_dir / "jobs").stat().st_mode) == 0o700
    assert stat.S_IMODE(home.history_path.stat().st_mode) == 0o600
    assert daemon.stop() == 0


def test_open_private_refuses_links_other_files_and_someone_elses_file(tmp_path, outside):
    link = tmp_path / "link"
    link.symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        open_private(link, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnsafePathError, match="not a regular file"):  # and it does not block on the fifo
        open_private(fifo, os.O_WRONLY | os.O_CREAT)
    foreign = tmp_path / "foreign"
    foreign.write_text("x")
    if os.geteuid() == 0:
        os.chown(foreign, NOBODY, NOBODY)
        with pytest.raises(UnsafePathError, match=f"uid {NOBODY}"):
            open_private(foreign, os.O_WRONLY | os.O_APPEND)
    fd = open_private(tmp_path / "new", os.O_WRONLY | os.O_CREAT)
    try:
        assert os.get_inheritable(fd) is False and stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)
    assert outside.read_text() == "root:secret\n"


def test_ensure_private_dir_creates_0700_and_refuses_a_link_planted_by_someone_else(tmp_path):
    made = ensure_private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    if os.geteuid() != 0:
        return
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    planted = tmp_path / "planted"
    planted.symlink_to(elsewhere)
    os.lchown(planted, NOBODY, NOBODY)
    with pytest.raises(UnsafePathError, match="link"):
        ensure_private_dir(planted)
