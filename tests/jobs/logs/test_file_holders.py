"""open_holders against real processes holding real files: /proc on Linux, lsof elsewhere."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pmjobsd.jobs.logs import file_holders
from pmjobsd.jobs.logs.file_holders import open_holders

# Opens the file named by argv[1], says so, and keeps it open until its stdin closes.
HOLDER = "import sys\nf = open(sys.argv[1], 'a')\nprint('open', flush=True)\nsys.stdin.read()\n"

linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="the /proc scan is Linux's")


class Holder:
    """A second process that holds ``path`` open until :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "open\n"
        self.pid = self.proc.pid

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture()
def log(tmp_path: Path) -> Path:
    path = tmp_path / "password_manager.log"
    path.write_text("line\n")
    return path


@pytest.fixture()
def holders():
    started: list[Holder] = []

    def start(path: Path) -> Holder:
        started.append(Holder(path))
        return started[-1]

    yield start
    for holder in started:
        if holder.proc.poll() is None:
            holder.close()


def without_proc(monkeypatch) -> None:
    """Take the path a Mac or BSD takes: no /proc/self/fd, so lsof is asked."""
    real_isdir = os.path.isdir
    monkeypatch.setattr(file_holders.os.path, "isdir", lambda p: False if p == "/proc/self/fd" else real_isdir(p))


def fake_lsof(folder: Path, monkeypatch, script: str) -> None:
    """An ``lsof`` on PATH that behaves as ``script`` says (exit codes lsof uses)."""
    folder.mkdir()
    lsof = folder / "lsof"
    lsof.write_text("#!/bin/sh\n" + script + "\n")
    lsof.chmod(lsof.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(folder))


def test_a_missing_file_has_no_holders(tmp_path):
    assert open_holders(tmp_path / "gone.log") == set()


@linux_only
def test_another_process_holding_the_file_is_found_and_gone_once_it_closes(log, holders):
    holder = holders(log)
    assert open_holders(log) == {holder.pid}
    holder.close()
    assert open_holders(log) == set()


@linux_only
def test_our_own_descriptors_do_not_count(log):
    with open(log, "a"):
        assert open_holders(log) == set()


@linux_only
def test_the_same_name_replaced_by_another_file_is_not_held(log, holders):
    """Holders are matched by inode and device: a process holding the renamed old file does not hold the new one."""
    holder = holders(log)
    log.rename(log.with_name(log.name + ".1"))
    log.write_text("new\n")
    assert open_holders(log) == set()
    assert open_holders(log.with_name(log.name + ".1")) == {holder.pid}


@linux_only
def test_two_holders_are_both_found(log, holders):
    first, second = holders(log), holders(log)
    assert open_holders(log) == {first.pid, second.pid}


@pytest.mark.skipif(not os.path.exists("/usr/bin/lsof") and not os.path.exists("/usr/sbin/lsof"), reason="no lsof")
def test_without_proc_the_real_lsof_is_asked(log, holders, monkeypatch):
    holder = holders(log)
    without_proc(monkeypatch)
    assert open_holders(log) == {holder.pid}
    holder.close()
    assert open_holders(log) == set()  # lsof exits 1 with no output: nobody holds it


def test_without_proc_and_without_lsof_the_answer_is_unknown(log, tmp_path, monkeypatch):
    without_proc(monkeypatch)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert open_holders(log) is None


def test_lsof_failing_makes_the_answer_unknown(log, tmp_path, monkeypatch):
    without_proc(monkeypatch)
    fake_lsof(tmp_path / "bin", monkeypatch, "echo 'lsof: WARNING: can't stat() fuse' >&2; exit 2")
    assert open_holders(log) is None


def test_lsof_exit_1_with_output_is_not_taken_for_nobody(log, tmp_path, monkeypatch):
    without_proc(monkeypatch)
    fake_lsof(tmp_path / "bin", monkeypatch, "echo 4242; exit 1")
    assert open_holders(log) is None


def test_lsof_pids_are_read_and_our_own_pid_left_out(log, tmp_path, monkeypatch):
    without_proc(monkeypatch)
    fake_lsof(tmp_path / "bin", monkeypatch, f"printf '4242\\n{os.getpid()}\\n17\\n'; exit 0")
    assert open_holders(log) == {4242, 17}


def test_lsof_that_cannot_start_makes_the_answer_unknown(log, tmp_path, monkeypatch):
    without_proc(monkeypatch)
    fake_lsof(tmp_path / "bin", monkeypatch, "")
    (tmp_path / "bin" / "lsof").write_bytes(b"\x7fELF-not-really")  # exec fails: OSError
    assert open_holders(log) is None
