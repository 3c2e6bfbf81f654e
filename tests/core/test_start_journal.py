"""The start journal: starts on disk before their rows, taken into the history by the next owner or any reader."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pmjobsd.core.history import RunHistory
from pmjobsd.core.history_writer import HistoryWriter
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import Status
from pmjobsd.core.runner import new_run_id
from pmjobsd.core.start_journal import SLOT_SIZE, SLOTS, StartJournal, journal_path, read_rows
from tests.support.daemon import wait_for


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _started(job: str = "job") -> RunRecord:
    return RunRecord(new_run_id(), job, 1, "schedule", None, time.time())


def test_a_dead_owners_starts_become_interrupted_rows_and_the_next_owner_frees_their_slots(tmp_path):
    path = tmp_path / "history.db"
    RunHistory(path).close()
    dead = _dead_pid()
    crashed = StartJournal(path)  # the owner that died with these starts not yet committed
    records = [_started(f"job{i}") for i in range(3)]
    for record in records:
        assert crashed.write(record, dead, None) is not None
    crashed.close()  # no clear: as after kill -9

    writer = HistoryWriter(path, mark_interrupted=True)
    wait_for(lambda: writer._conn is not None and not read_rows(path), message="the leftover taken in")
    assert writer._journal is not None and writer._journal.free_slots() == SLOTS
    writer.close()
    with RunHistory(path, create=False) as history:
        shown = {row["run_id"]: row["status"] for row in history.recent(limit=10)}
    assert shown == {record.run_id: "INTERRUPTED" for record in records}


def test_an_entry_left_after_its_row_was_committed_never_replaces_the_row(tmp_path):
    path = tmp_path / "history.db"
    record = _started()
    with RunHistory(path) as history:
        history.record_start(record)
        record.status, record.finished_at = Status.OK, time.time()
        history.record_finish(record)
    journal = StartJournal(path)  # killed between the commit and the clearing of its slot
    journal.write(record, _dead_pid(), None)
    journal.close()
    with RunHistory(path, create=False) as history:
        assert [row["status"] for row in history.recent(limit=10)] == ["OK"]
        assert history.mark_interrupted() == 0


def test_a_reader_shows_a_live_owners_unwritten_start_as_running_and_a_dead_ones_as_interrupted(tmp_path):
    path = tmp_path / "history.db"
    RunHistory(path).close()
    live, gone = _started("live"), _started("gone")
    journal = StartJournal(path)
    journal.write(live, os.getpid(), None)
    journal.write(gone, _dead_pid(), None)
    with RunHistory(path, create=False) as history:
        newest = history.newest(["live", "gone"], 1)
    journal.close()
    assert newest["live"][0]["status"] == "RUNNING"
    assert newest["gone"][0]["status"] == "INTERRUPTED"


def test_torn_or_foreign_slots_are_skipped_and_freed(tmp_path):
    path = tmp_path / "history.db"
    RunHistory(path).close()
    good = _started()
    journal = StartJournal(path)
    journal.write(good, _dead_pid(), None)
    journal.close()
    with open(journal_path(path), "r+b") as handle:  # garbage in two other slots
        handle.seek(5 * SLOT_SIZE)
        handle.write(b'["half a record", 1')
        handle.seek(9 * SLOT_SIZE)
        handle.write(b'{"not": "an array"}')
    assert [row[0] for row in read_rows(path)] == [good.run_id]
    owner = StartJournal(path)
    assert [entry[0] for _, entry in owner.leftover] == [good.run_id]
    assert owner.free_slots() == SLOTS - 1  # the garbage slots are free again; the good one waits for its row
    owner.close()


def test_a_full_journal_makes_the_start_wait_for_its_row_instead(tmp_path):
    path = tmp_path / "history.db"
    writer = HistoryWriter(path, linger=0.0)
    assert writer._journal is not None
    wait_for(lambda: writer._conn is not None, message="the writer's connection")
    assert writer._conn is not None
    with writer._conn._lock:  # no commit: no slot comes free
        for _ in range(SLOTS):
            writer.record_start(_started())
        assert writer._journal.free_slots() == 0
        late = _started("late")
        began = time.monotonic()
        writer.durable_wait = 0.3
        writer.record_start(late)  # no slot: waits for its row, which cannot be written now
        assert time.monotonic() - began >= 0.25
    assert writer.flush(10.0)
    writer.close()
    with RunHistory(path, create=False) as history:
        assert history.newest(["late"], 1)["late"][0]["run_id"] == late.run_id
    assert not read_rows(path)


def test_a_journal_that_is_a_link_is_neither_read_nor_written(tmp_path):
    path = tmp_path / "history.db"
    RunHistory(path).close()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    journal_path(path).symlink_to(target)
    assert read_rows(path) == []
    writer = HistoryWriter(path)
    assert writer._journal is None  # every start waits for its row, as without a journal
    writer.record_start(_started())
    writer.close()
    assert target.read_bytes() == b"keep me"


def test_clearing_frees_exactly_the_slots_named_neighbours_in_one_write(tmp_path):
    path = tmp_path / "history.db"
    journal = StartJournal(path)
    records = [_started(f"job{i}") for i in range(5)]
    slots = [journal.write(record, os.getpid(), None) for record in records]
    assert slots == [0, 1, 2, 3, 4]
    journal.clear([2, 0, 1, 4])  # two runs of neighbours: 0-2 and 4
    assert [row[2] for row in read_rows(path)] == ["job3"]
    assert journal.free_slots() == SLOTS - 1
    journal.close()
