"""The run history: interrupted runs are found even when the pid was reused."""

import os
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
