"""The history writer's group commit: starts share transactions, and kill -9 in a burst loses no run and no line."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

from pmjobsd.core.history import RunHistory
from pmjobsd.core.history_writer import HistoryWriter
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import Status
from pmjobsd.core.runner import new_run_id
from pmjobsd.core.start_journal import StartJournal, read_rows
from tests.support.daemon import wait_for

BURST_JOBS = 40


def _count_commits(writer: HistoryWriter) -> list[int]:
    """Replace the writer's write_many with one that appends each transaction's size to the list returned."""
    wait_for(lambda: writer._conn is not None, message="the writer's connection")
    assert writer._conn is not None
    commits: list[int] = []
    write_many = writer._conn.write_many

    def counted(records):
        records = list(records)
        commits.append(len(records))
        write_many(records)

    writer._conn.write_many = counted  # type: ignore[method-assign]
    return commits


def test_starts_return_at_once_from_the_journal_readers_see_them_and_they_share_one_commit(tmp_path):
    path = tmp_path / "history.db"
    writer = HistoryWriter(path, linger=0.05)
    commits = _count_commits(writer)
    assert writer._conn is not None
    records = [RunRecord(new_run_id(), f"job{i}", 1, "schedule", None, time.time()) for i in range(20)]
    with writer._conn._lock:  # the database takes no write meanwhile: the starts must not wait for it
        began = time.monotonic()
        for record in records:
            writer.record_start(record)
        assert time.monotonic() - began < 0.5
        assert len(read_rows(path)) == 20  # on disk before any row is committed
        with RunHistory(path, create=False) as reader:  # any reader adds them: RUNNING, their writer alive
            shown = {row["run_id"]: row["status"] for row in reader.recent(limit=100)}
        assert shown == {record.run_id: "RUNNING" for record in records}
        for record in records:
            record.status, record.finished_at = Status.OK, time.time()
            writer.record_finish(record)
    assert writer.flush(5.0)
    wait_for(lambda: not read_rows(path), message="the journal cleared once the rows are committed")
    writer.close()
    with RunHistory(path, create=False) as history:  # the ends replaced the rows the reader added
        assert {row["status"] for row in history.recent(limit=100)} == {"OK"}
    assert sum(commits) >= 20 and len(commits) <= 2


def test_without_the_journal_starts_waiting_together_share_one_commit_and_return_with_their_row(tmp_path):
    path = tmp_path / "history.db"
    owner = StartJournal(path)  # another writer owns the journal: this one waits for each start's row
    writer = HistoryWriter(path)
    assert writer._journal is None
    commits = _count_commits(writer)  # each write_many is one transaction
    assert writer._conn is not None
    records = [RunRecord(new_run_id(), f"job{i}", 1, "schedule", None, time.time()) for i in range(20)]
    seen: dict[str, bool] = {}

    def start(record: RunRecord) -> None:
        writer.record_start(record)
        with sqlite3.connect(path) as conn:  # another connection: the row is committed, not just written
            seen[record.run_id] = (
                conn.execute("SELECT 1 FROM runs WHERE run_id=?", (record.run_id,)).fetchone() is not None
            )

    # Hold the database connection: the writer takes the first start(s) and waits at the
    # transaction, while the other starts queue up behind it.
    with writer._conn._lock:
        threads = [threading.Thread(target=start, args=(record,)) for record in records]
        for thread in threads:
            thread.start()
        wait_for(lambda: writer.health().backlog == len(records), message="all twenty starts waiting")
    for thread in threads:
        thread.join(10)
    writer.close()
    owner.close()
    assert seen == {record.run_id: True for record in records}
    assert 1 <= len(commits) <= 2  # the one(s) taken first, then the rest together: not twenty


def test_an_end_alone_is_written_after_its_linger(tmp_path):
    path = tmp_path / "history.db"
    writer = HistoryWriter(path, linger=0.05)
    record = RunRecord(new_run_id(), "job", 1, "schedule", None, time.time())
    writer.record_start(record)
    record.status, record.finished_at = Status.OK, time.time()
    writer.record_finish(record)
    wait_for(lambda: RunHistory(path).recent("job")[0]["status"] == "OK", timeout=5, message="the end written")
    assert writer.health().backlog == 0
    writer.close()


def _marker_runs(marker) -> set[str]:
    """run_ids the jobs wrote themselves (a line torn by the kill is ignored)."""
    runs = set()
    for line in marker.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            runs.add(parts[1])
    return runs


def test_kill_9_in_a_burst_of_starts_keeps_every_started_run_and_every_log_line_whole(home, daemon_factory):
    marker = home.root / "ran.txt"
    definitions = {
        f"burst_{index:02d}": {
            "cron": "* * * * * *",
            "callable": "tests.support.sample_jobs:ok",
            "catch_up": False,
            "options": {"marker": str(marker)},
        }
        for index in range(BURST_JOBS)
    }
    home.write_settings({"max_workers": 4, "definitions": definitions})
    daemon = daemon_factory()
    # Let two bursts pass, then kill the daemon as soon as the third begins: mid-burst.
    wait_for(lambda: marker.exists() and len(_marker_runs(marker)) >= 2 * BURST_JOBS, message="two bursts ran")
    seen = len(_marker_runs(marker))
    deadline = time.monotonic() + 10
    while len(_marker_runs(marker)) <= seen and time.monotonic() < deadline:
        time.sleep(0.001)
    daemon.kill()  # SIGKILL

    ran = _marker_runs(marker)
    assert len(ran) > seen  # killed after the third burst had begun
    with RunHistory(home.history_path, create=False) as history:
        shown = {row["run_id"]: row["status"] for row in history.recent(limit=100_000)}
    # Every run whose job was called is in the history, finished or INTERRUPTED, never stuck RUNNING.
    assert ran <= set(shown), f"{len(ran - set(shown))} runs that ran are not in the history"
    assert {shown[run_id] for run_id in ran} <= {"OK", "INTERRUPTED"}
    assert "RUNNING" not in shown.values()
    # Every jobs.log line is whole JSON, and every run that ran has its job.started line.
    raw = home.jobs_log.read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    started = {line["run_id"] for line in lines if line["event"] == "job.started"}
    assert ran <= started


def test_the_failure_streak_reads_the_summary_and_counts_each_waiting_record_once(tmp_path):
    path = tmp_path / "history.db"
    reader = RunHistory(path)
    writer = HistoryWriter(path, reader=reader)
    statements: list[str] = []
    reader._conn.set_trace_callback(statements.append)

    def ended(status: Status, started: float) -> RunRecord:
        record = RunRecord(new_run_id(), "job", 1, "schedule", None, started)
        writer.record_start(record)
        record.status, record.finished_at = status, started + 0.5
        writer.record_finish(record)
        return record

    ended(Status.FAIL, 1000.0)
    second = ended(Status.TIMEOUT, 1001.0)
    assert writer.flush(5.0)
    assert writer.consecutive_failures("job") == 2
    # Written and still waiting (the writer commits, then forgets): counted once, not twice.
    with writer._cond:
        writer._pending[(second.run_id, 1)] = second
    assert writer.consecutive_failures("job") == 2
    with writer._cond:
        del writer._pending[(second.run_id, 1)]
    # Not written yet (the writer is held at the database): the history's streak, then the waiting ones.
    assert writer._conn is not None
    with writer._conn._lock:
        ended(Status.FAIL, 1002.0)  # its start waits up to durable_wait (1 s), then stays waiting
        assert writer.consecutive_failures("job") == 3
        ended(Status.INTERRUPTED, 1003.0)  # neither counts nor ends the streak
        assert writer.consecutive_failures("job") == 3
        ended(Status.OK, 1004.0)
        assert writer.consecutive_failures("job") == 0
    writer.close()
    assert reader.consecutive_failures("job") == 0
    # The summary row and the waiting records' own rows: never a walk over the job's attempts.
    reads = [sql for sql in statements if sql.startswith("SELECT")]
    assert reads and all("job_summary" in sql and "ORDER BY" not in sql for sql in reads)
    reader.close()
