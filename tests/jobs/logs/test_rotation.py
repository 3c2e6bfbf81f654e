"""Rotation against real files, a real writer process and real crashes (SIGKILL at each step)."""

from __future__ import annotations

import collections
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from pmjobsd.jobs.logs import compression
from pmjobsd.jobs.logs import rotate as rotation
from pmjobsd.jobs.logs.archives import list_archives
from pmjobsd.jobs.logs.compression import compress_archive
from pmjobsd.jobs.logs.file_holders import open_holders
from pmjobsd.jobs.logs.rotate import rotate_file
from tests.support import REPO

ROOT = REPO
WRITER = REPO / "tests" / "support" / "rotation_writer.py"
NOW = datetime(2026, 11, 28, 3, 30, 0)
# The copy-truncate window, measured under load (docs/log-rotation.md): 0-5 lines per rotation.
LOST_LINES_PER_ROTATION = 5


def write_lines(path: Path, start: int, stop: int, mode: int | None = None) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.writelines(f"{n:09d} line\n" for n in range(start, stop))
    if mode is not None:
        os.chmod(path, mode)


def read_everything(live: Path) -> list[str]:
    """Every line of the live file and of all its archives (``.gz`` read with zcat)."""
    lines = live.read_text().splitlines() if live.exists() else []
    for archive in list_archives(live):
        if archive.suffix == ".gz":
            text = subprocess.run(["zcat", str(archive)], check=True, capture_output=True, text=True).stdout
        else:
            text = archive.read_text()
        lines += text.splitlines()
    return lines


def numbers(lines: list[str]) -> tuple[collections.Counter, int]:
    """Count of each line number, and the number of torn (malformed) lines."""
    counts: collections.Counter = collections.Counter()
    torn = 0
    for line in lines:
        head, _, rest = line.partition(" ")
        if len(head) == 9 and head.isdigit() and rest in ("line", "x" * 60):
            counts[int(head)] += 1
        else:
            torn += 1
    return counts, torn


def assert_exactly_once(live: Path, total: int) -> None:
    counts, torn = numbers(read_everything(live))
    assert torn == 0
    assert [n for n, c in counts.items() if c > 1] == []
    assert sorted(counts) == list(range(total))


def lost_runs(missing: list[int]) -> list[int]:
    """The lengths of the runs of consecutive numbers in sorted ``missing``: one per loss."""
    sizes: list[int] = []
    for index, number in enumerate(missing):
        if index and missing[index - 1] == number - 1:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return sizes


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


# ------------------------------------------------------------- naming, sizes
def test_archive_name_has_date_suffix_and_avoids_clashes(tmp_path):
    live = tmp_path / "password_manager.log"
    write_lines(live, 0, 10)
    first = rotate_file(live, now=NOW, strategy="rename")
    assert first.archive.name == "password_manager.log.20261128-033000"
    write_lines(live, 10, 20)
    second = rotate_file(live, now=NOW, strategy="copytruncate")
    assert second.archive.name == "password_manager.log.20261128-033000-2"
    compress_archive(first.archive)
    write_lines(live, 20, 30)
    third = rotate_file(live, now=NOW, strategy="rename")
    assert third.archive.name == "password_manager.log.20261128-033000-3"
    assert_exactly_once(live, 30)


def test_empty_and_small_files_are_not_rotated(tmp_path):
    live = tmp_path / "password_manager.log"
    live.touch()
    assert rotate_file(live, now=NOW).action == "skipped"
    write_lines(live, 0, 3)
    assert rotate_file(live, now=NOW, min_size=10_000).action == "skipped"
    assert rotate_file(tmp_path / "missing.log", now=NOW).action == "skipped"
    assert list_archives(live) == []


def test_auto_renames_when_nobody_holds_the_file_and_keeps_the_mode(tmp_path):
    live = tmp_path / "password_manager.log"
    write_lines(live, 0, 100, mode=0o640)
    assert open_holders(live) == set()
    result = rotate_file(live, now=NOW)
    assert result.action == "renamed"
    assert stat.S_IMODE(os.stat(result.archive).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(live).st_mode) == 0o640 and live.stat().st_size == 0
    gz = compress_archive(result.archive)
    assert stat.S_IMODE(os.stat(gz).st_mode) == 0o640
    assert_exactly_once(live, 100)


def test_open_holders_sees_another_process(tmp_path):
    live = tmp_path / "app.log"
    live.write_text("x\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; f=open(sys.argv[1],'a'); print('ready', flush=True); time.sleep(60)",
            str(live),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert holder.pid in open_holders(live)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------ a real writer process
def run_writer_during_rotations(tmp_path: Path, mode: str, strategy: str, rotations: int = 6):
    live = tmp_path / "password_manager.log"
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(live), str(stop), mode], stdout=subprocess.PIPE, text=True
    )
    results = []
    try:
        while not live.exists() or live.stat().st_size < 256 * 1024:
            time.sleep(0.01)
        for index in range(rotations):
            results.append(rotate_file(live, now=datetime(2026, 11, 28, 3, 30, index), strategy=strategy))
            time.sleep(0.05)  # let the writer fill the new file
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    return live, int(out), results


def test_copytruncate_with_a_writer_that_never_reopens_counts_every_line(tmp_path):
    """The app's case: its FileHandler keeps the log open and never reopens it.

    Copy-truncate can lose the lines written between its last read and the
    truncate.  The test measures that loss and prints it; duplicates are not
    allowed at all.
    """
    live, total, results = run_writer_during_rotations(tmp_path, "append", "auto")
    assert [r.action for r in results] == ["copytruncated"] * len(results)  # /proc shows the writer
    counts, torn = numbers(read_everything(live))
    duplicates = [n for n, c in counts.items() if c > 1]
    missing = sorted(set(range(total)) - set(counts))
    gap_sizes = lost_runs(missing)
    gaps = len(gap_sizes)
    print(
        f"\ncopy-truncate under load: {total} lines written, {len(results)} rotations, "
        f"lost {len(missing)} in {gaps} gaps {gap_sizes}, torn {torn}, duplicated {len(duplicates)}"
    )
    assert duplicates == []
    assert max(counts) == total - 1
    # Structure, not timing: each truncate may lose one run of consecutive lines
    # (those written between its last read and the truncate, one maybe torn);
    # how many depends on scheduling and is reported above.
    assert gaps <= len(results)
    assert torn <= len(results)
    # And the size of that window, in lines: the tail passes and the final copy to
    # EOF keep it to one read plus one ftruncate, 0-5 lines per rotation.  Without
    # them every rotation loses hundreds (2,146-5,300 per run).  A rotation
    # preempted inside the window on a machine shared by other work can lose
    # more (docs/log-rotation.md measured 178-1,261 before the yield), so a third
    # of the rotations may be outliers; the others must be inside the window.
    outliers = [size for size in gap_sizes if size > LOST_LINES_PER_ROTATION]
    assert len(outliers) <= len(results) // 3, f"lost {gap_sizes} lines in {len(results)} rotations"
    assert leftovers(tmp_path) == ["stop"] or leftovers(tmp_path) == []


def test_rename_with_a_reopening_writer_loses_nothing(tmp_path):
    """pmjobsd's own jobs.log: WatchedFileHandler reopens after the rename."""
    live, total, results = run_writer_during_rotations(tmp_path, "watched", "rename")
    assert [r.action for r in results] == ["renamed"] * len(results)
    assert_exactly_once(live, total)
    assert stat.S_IMODE(live.stat().st_mode) == 0o600


# ------------------------------------------------ crashes at every step
CRASH_SCRIPT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from datetime import datetime
from pmjobsd.jobs.logs import compression, rotate as rotation
target, action, step = sys.argv[2], sys.argv[3], sys.argv[4]
def hook(name):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)
if action == "compress":
    compression.compress_archive(target, on_step=hook)
else:
    rotation.rotate_file(target, now=datetime(2026, 11, 28, 3, 30, 0), strategy=action, on_step=hook)
print("step never reached")
"""


def crash_at(target: Path, action: str, step: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(ROOT), str(target), action, step], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr


COPYTRUNCATE_STEPS = [
    "journal_written",
    "copied",
    "tail_copied",
    "truncated",
    "journal_truncated",
    "archive_renamed",
    "journal_removed",
]


@pytest.mark.parametrize("step", COPYTRUNCATE_STEPS)
def test_copytruncate_crash_at_each_step_then_rerun(tmp_path, step):
    live = tmp_path / "password_manager.log"
    write_lines(live, 0, 50_000, mode=0o640)
    crash_at(live, "copytruncate", step)
    write_lines(live, 50_000, 50_100)  # the app kept writing while we were down
    rotate_file(live, now=datetime(2026, 11, 28, 3, 31, 0), strategy="copytruncate")
    assert_exactly_once(live, 50_100)
    assert leftovers(tmp_path) == []
    for archive in list_archives(live):
        assert stat.S_IMODE(archive.stat().st_mode) == 0o640


@pytest.mark.parametrize("step", ["renamed", "recreated"])
def test_rename_crash_then_rerun(tmp_path, step):
    live = tmp_path / "jobs.log"
    write_lines(live, 0, 1000, mode=0o600)
    crash_at(live, "rename", step)
    write_lines(live, 1000, 1010)
    rotate_file(live, now=datetime(2026, 11, 28, 3, 31, 0), strategy="rename")
    assert_exactly_once(live, 1010)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("step", ["gz_written", "gz_renamed", "plain_removed"])
def test_compress_crash_at_each_step_then_rerun(tmp_path, step):
    live = tmp_path / "password_manager.log"
    write_lines(live, 0, 20_000, mode=0o640)
    archive = rotate_file(live, now=NOW, strategy="rename").archive
    os.utime(archive, (1_700_000_000, 1_700_000_000))
    crash_at(archive, "compress", step)
    # Never neither, never a half file taken for whole: a listed archive is complete.
    assert_exactly_once(live, 20_000) if step == "gz_written" else None
    assert list_archives(live), "a crash must leave the plain or the compressed archive"
    gz = compress_archive(archive)
    assert not archive.exists() and gz.exists()
    assert_exactly_once(live, 20_000)
    assert gz.stat().st_mtime == 1_700_000_000
    assert stat.S_IMODE(gz.stat().st_mode) == 0o640
    compression.clean_partials(live)
    assert leftovers(tmp_path) == []


def test_both_plain_and_gz_present_after_crash_counts_once_after_rerun(tmp_path):
    live = tmp_path / "app.log"
    write_lines(live, 0, 10)
    archive = rotate_file(live, now=NOW, strategy="rename").archive
    crash_at(archive, "compress", "gz_renamed")
    assert {p.name for p in list_archives(live)} == {archive.name, archive.name + ".gz"}
    compress_archive(archive)
    assert [p.name for p in list_archives(live)] == [archive.name + ".gz"]


def test_unusable_file_raises_with_its_path(tmp_path):
    folder_not_file = tmp_path / "notes.log"
    folder_not_file.mkdir()
    with pytest.raises(rotation.RotationError, match=str(folder_not_file)):
        rotate_file(folder_not_file, now=NOW)
    broken = tmp_path / "x.log"
    write_lines(broken, 0, 3)
    rotation._journal_path(broken).write_text("not json")
    with pytest.raises(rotation.RotationError, match="journal"):
        rotate_file(broken, now=NOW)
