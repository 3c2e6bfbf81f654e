"""The run history: interrupted runs are found even when the pid was reused."""

import os
import random
import sqlite3
import subprocess
import sys
import time

from pmjobsd.core.context import Status
from pmjobsd.core.history import RunHistory, process_start_time
from pmjobsd.core.observers import RunRecord


def test_a_running_row_of_a_dead_or_reused_pid_is_interrupted(tmp_path):
    with RunHistory(tmp_path / "history.db") as history:
        history.record_start(RunRecord("live", "job", 1, "schedule", None, time.time()))
        history.record_start(RunRecord("reused", "job", 1, "schedule", None, time.time()))
        # The same pid as ours, but a process that started long ago: the pid was reused
        # (a container's daemon is PID 1 on every start).
        history._execute("UPDATE runs SET pid_started = 1000.0 WHERE run_id = 'reused'")
        statuses = {row["run_id"]: row["status"] for row in history.recent()}
        assert statuses == {"live": "RUNNING", "reused": "INTERRUPTED"}
        assert history.mark_interrupted() == 1
        rows = {row["run_id"]: row for row in history.recent()}
        assert rows["reused"]["status"] == "INTERRUPTED" and rows["reused"]["finished_at"]
        assert rows["live"]["status"] == "RUNNING"
    assert process_start_time(os.getpid()) > 0


def test_consecutive_failures_and_mark_final(tmp_path):
    with RunHistory(tmp_path / "history.db") as history:
        clock = [0.0]

        def attempt(run_id, status, final=True):
            clock[0] += 1
            record = RunRecord(
                run_id,
                "job",
                1,
                "schedule",
                None,
                1000 + clock[0],
                status=status,
                finished_at=1000.5 + clock[0],
                final=final,
            )
            history.record_start(record)
            history.record_finish(record)

        attempt("a", Status.FAIL)
        attempt("b", Status.OK)
        attempt("c", Status.FAIL)
        attempt("d", Status.TIMEOUT)
        attempt("i", Status.INTERRUPTED)  # the daemon stopped: neither counts nor ends the streak
        attempt("e", Status.FAIL, final=False)  # a retry was still to come
        assert history.consecutive_failures("job") == 2
        history.mark_final("e", 1)
        assert history.consecutive_failures("job") == 3
        assert history.last_runs()["job"]["run_id"] == "e"


# --- the summary table against the full queries it replaces ---------------------------------------

# The queries status and metrics ran over the whole history before the summary table.
FULL_LAST_SUCCESS = (
    "SELECT j.job, (SELECT finished_at FROM runs r WHERE r.job = j.job AND r.status IN ('OK', 'WARN')"
    " ORDER BY r.started_at DESC, r.attempt DESC LIMIT 1) AS finished FROM (SELECT DISTINCT job FROM runs) j"
)
FULL_STREAK = (
    "SELECT COUNT(*) FROM runs WHERE job = ?1 AND final = 1 AND status IN ('FAIL', 'TIMEOUT')"
    " AND started_at > COALESCE((SELECT MAX(started_at) FROM runs WHERE job = ?1 AND final = 1"
    " AND status IN ('OK', 'WARN')), -1)"
)
JOBS = ("steady", "flaky", "broken", "gone")


def _seed(history, count, seed=7, start=1_000_000.0):
    """Runs of four jobs with every outcome, retries (non-final attempts), mark_final and REPLACEd starts."""
    rng = random.Random(seed)
    statuses = [Status.OK, Status.WARN, Status.FAIL, Status.TIMEOUT, Status.INTERRUPTED]
    weights = {"steady": [8, 1, 1, 0, 1], "flaky": [3, 1, 4, 2, 1], "broken": [0, 0, 5, 1, 1], "gone": [1, 1, 1, 1, 1]}
    for index in range(count):
        job = JOBS[index % len(JOBS)]
        started = start + index * 10 + rng.random()
        for attempt in (1, 2):
            status = rng.choices(statuses, weights[job])[0]
            final = attempt == 2 or not status.failed or rng.random() < 0.3
            record = RunRecord(f"{job}-{index}", job, attempt, "schedule", None, started + attempt)
            if rng.random() < 0.5:
                history.record_start(record)  # INSERT OR REPLACE, then an UPDATE
                record.status, record.finished_at, record.final = status, started + attempt + 0.5, final
                history.record_finish(record)
            else:
                history.write(record)  # the writer's upsert, twice
                record.status, record.finished_at, record.final = status, started + attempt + 0.5, final
                history.write(record)
            if not final and rng.random() < 0.3:
                history.mark_final(record.run_id, attempt)  # its retry was given up
            if final or attempt == 2:
                break
            if rng.random() < 0.1:
                history.record_start(record)  # the same attempt started again: REPLACE
                history.record_finish(record)


def _assert_summary_matches_full_queries(history):
    full_success = {row[0]: row[1] for row in history._execute(FULL_LAST_SUCCESS) if row[1] is not None}
    assert history.last_success_times() == full_success
    summaries = history.summaries(JOBS)
    newest = history.newest(JOBS, 20)
    last_runs = history.last_runs()
    for job in JOBS:
        streak = history._execute(FULL_STREAK, (job,)).fetchone()[0]
        assert history.consecutive_failures(job) == streak, job
        if job in summaries:
            assert summaries[job].consecutive_failures == streak
            assert summaries[job].last_success_at == full_success.get(job)
        else:
            assert streak == 0 and job not in full_success
        full_recent = history.recent(job, limit=20)
        keys = ["run_id", "attempt", "status", "started_at", "duration_ms", "final", "summary", "trigger"]
        assert [[row[key] for key in keys] for row in newest[job]] == [
            [row[key] for key in keys] for row in full_recent
        ]
        if job in last_runs:
            assert newest[job][0]["run_id"] == last_runs[job]["run_id"]
        else:
            assert newest[job] == []


def test_the_summary_gives_what_the_full_queries_give_also_after_purge_and_interruption(tmp_path):
    with RunHistory(tmp_path / "history.db") as history:
        _seed(history, 400)
        # Failures that outlive every success: the streak is all that is left after a purge.
        for index in range(5):
            record = RunRecord(f"late-{index}", "broken", 1, "schedule", None, 2_000_000.0 + index)
            history.record_start(record)
            record.status, record.finished_at = Status.FAIL, 2_000_000.5 + index
            history.record_finish(record)
        assert history.consecutive_failures("broken") > 5  # a long streak, not only the late ones
        _assert_summary_matches_full_queries(history)

        # kill -9 during runs: RUNNING rows whose writer is gone, shown and then marked INTERRUPTED.
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        for job in ("steady", "flaky"):
            record = RunRecord(f"{job}-killed", job, 1, "schedule", None, 3_000_000.0)
            history.record_start(record)
            history._execute("UPDATE runs SET pid = ?, pid_started = NULL WHERE run_id = ?", (dead.pid, record.run_id))
        assert history.newest(["steady"], 1)["steady"][0]["status"] == "INTERRUPTED"
        _assert_summary_matches_full_queries(history)
        assert history.mark_interrupted() == 2
        _assert_summary_matches_full_queries(history)

        # Purges that take away the newest successes of some jobs, then everything of "gone".
        for cutoff in (1_001_000.0, 1_002_500.0, 1_003_990.0, 2_000_002.0):
            history.purge(cutoff, batch=37, pause=0)
            _assert_summary_matches_full_queries(history)
        history._execute("DELETE FROM runs WHERE job = 'gone'")
        _assert_summary_matches_full_queries(history)


def test_a_history_written_before_the_summary_gets_it_filled_once(tmp_path):
    path = tmp_path / "history.db"
    with RunHistory(path) as history:
        _seed(history, 200, seed=11)
        expected = {job: history.summaries([job]).get(job) for job in JOBS}
    with sqlite3.connect(path) as conn:  # as pmjobsd 0.1 left it: no summary, no triggers
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE job_summary")
    with RunHistory(path, create=False) as history:
        assert {job: history.summaries([job]).get(job) for job in JOBS} == expected
        _assert_summary_matches_full_queries(history)


def test_purge_removes_exactly_the_finished_runs_older_than_the_cutoff_in_batches(tmp_path):
    day = 86400.0
    now = 1_800_000_000.0
    with RunHistory(tmp_path / "history.db") as history:
        for index in range(1000):  # one attempt every 1.2 h over 50 days
            started = now - 50 * day + index * 4320.0
            record = RunRecord(f"r{index}", JOBS[index % 4], 1, "schedule", None, started, Status.OK, started + 1)
            history.write(record)
        old_running = RunRecord("still-running", "steady", 1, "schedule", None, now - 40 * day)
        history.write(old_running)  # an attempt in flight is never purged, however old
        cutoff = now - 30 * day
        expected = {
            row[0]
            for row in history._execute(
                "SELECT run_id FROM runs WHERE started_at >= ? OR status = 'RUNNING'", (cutoff,)
            )
        }
        older = history._execute("SELECT COUNT(*) FROM runs WHERE started_at < ? AND status != 'RUNNING'", (cutoff,))
        removed_expected = older.fetchone()[0]
        assert removed_expected > 3 * 7  # several batches of 7

        assert history.purge(cutoff, batch=7, pause=0) == removed_expected
        assert {row[0] for row in history._execute("SELECT run_id FROM runs")} == expected
        assert history.purge(cutoff, batch=7, pause=0) == 0
        _assert_summary_matches_full_queries(history)


def test_the_newest_attempts_are_read_again_when_another_connection_or_this_one_writes(tmp_path):
    path = tmp_path / "history.db"
    with RunHistory(path) as reader, RunHistory(path) as writer:
        writer.write(RunRecord("a", "job", 1, "schedule", None, 1000.0, Status.OK, 1001.0))
        assert [row["run_id"] for row in reader.newest(["job"], 5)["job"]] == ["a"]
        assert [row["run_id"] for row in reader.newest(["job"], 5)["job"]] == ["a"]  # kept
        writer.write(RunRecord("b", "job", 1, "schedule", None, 2000.0, Status.FAIL, 2001.0))  # another connection
        assert [row["run_id"] for row in reader.newest(["job"], 5)["job"]] == ["b", "a"]
        reader.purge(1500.0, pause=0)  # this connection
        assert [row["run_id"] for row in reader.newest(["job"], 5)["job"]] == ["b"]
        assert reader.consecutive_failures("job") == 1 and reader.last_success_times() == {}


def test_last_slots_are_the_newest_moment_per_job_by_index_also_across_a_dst_change(tmp_path):
    from datetime import datetime, timedelta, timezone

    summer, winter = timezone(timedelta(hours=2)), timezone(timedelta(hours=1))
    # 02:30+02:00 then, an hour later, 02:30+01:00: as text the earlier one sorts last.
    first = datetime(2026, 10, 25, 2, 30, tzinfo=summer)
    second = datetime(2026, 10, 25, 2, 30, tzinfo=winter)
    with RunHistory(tmp_path / "history.db") as history:
        for run_id, job, trigger, slot, started in (
            ("a", "dst", "schedule", first, 1000.0),
            ("b", "dst", "catch_up", second, 999.0),  # started earlier, for the later slot
            ("c", "dst", "manual", None, 2000.0),
            ("d", "dst", "retry", datetime(2027, 1, 1, tzinfo=timezone.utc), 3000.0),  # not a slot's own run
            ("e", "micro", "schedule", datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=timezone.utc), 5.0),
            ("f", "micro", "schedule", datetime(2026, 1, 1, 0, 0, 0, 125000, tzinfo=timezone.utc), 6.0),
        ):
            history.record_start(RunRecord(run_id, job, 1, trigger, slot, started))
        slots = history.last_slots(["dst", "micro", "never"])
        assert slots == {"dst": second, "micro": datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=timezone.utc)}
        plan = " ".join(
            str(tuple(row))
            for row in history._execute(
                "EXPLAIN QUERY PLAN SELECT slot FROM runs INDEXED BY runs_job_slot WHERE job = 'dst'"
                " AND slot IS NOT NULL AND trigger IN ('schedule', 'catch_up') ORDER BY julianday(slot) DESC LIMIT 3"
            )
        )
        assert "runs_job_slot" in plan and "SCAN" not in plan, plan


def test_the_slot_index_is_added_once_after_an_upgrade_and_the_long_step_is_reported(tmp_path):
    path = tmp_path / "history.db"
    with RunHistory(path) as history:
        _seed(history, 200, seed=5)
    with sqlite3.connect(path) as conn:  # as a history from before the index
        conn.execute("DROP INDEX runs_job_slot")
    calls = []
    with RunHistory(path, on_long_step=lambda: calls.append(1)) as history:
        assert history._execute("SELECT 1 FROM sqlite_master WHERE name = 'runs_job_slot'").fetchone()
    assert calls  # reported before it started (and every second while it ran)
    calls.clear()
    with RunHistory(path, on_long_step=lambda: calls.append(1)):
        pass
    assert calls == []  # done: opening is O(1) again


def test_the_own_start_time_read_from_proc_is_psutils():
    import psutil

    from pmjobsd.core.history import _proc_start_time

    own = _proc_start_time()
    assert own is not None and abs(own - psutil.Process().create_time()) < 0.02
