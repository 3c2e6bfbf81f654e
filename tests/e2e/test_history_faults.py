"""End to end: the run history survives a lock held by another process and a damaged file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.support.alert_fixtures import free_port, webhook_receiver
from tests.support.daemon import wait_for

TICK = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"}
# A 1-second job that runs past its timeout: the main loop records its TIMEOUT.
SLOW = {
    "cron": "*/2 * * * * *",
    "callable": "tests.support.sample_jobs:sleepy",
    "options": {"seconds": 3},
    "timeout": 1,
    "retries": 0,
}

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def history_rows(home) -> dict[tuple[str, int], dict]:
    with sqlite3.connect(home.history_path) as conn:
        conn.row_factory = sqlite3.Row
        return {(row["run_id"], row["attempt"]): dict(row) for row in conn.execute("SELECT * FROM runs")}


def test_a_history_locked_by_another_process_neither_kills_nor_stalls_the_daemon(home, daemon_factory):
    port = free_port()
    server, alerts = webhook_receiver()
    try:
        home.write_settings(
            {
                "metrics": {"enabled": True, "port": port},
                "alerts": {"desktop": False, "targets": [f"json://127.0.0.1:{server.server_port}/hook"]},
                "definitions": {"tick": TICK, "slow": SLOW},
            }
        )
        daemon = daemon_factory()
        wait_for(lambda: home.events("job.succeeded", job="tick"), message="a first run")
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(home.history_path), "15"], stdout=subprocess.PIPE, text=True
        )
        assert locker.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        codes, degraded, failing = [], [], None
        while locker.poll() is None:
            assert daemon.proc.poll() is None, daemon.stderr_path.read_text()
            code, body = healthz(port)
            codes.append(code)
            degraded.append(body.get("status") == "degraded")
            if failing is None and time.monotonic() - locked_at > 6:
                failing = home.status()
            time.sleep(0.5)
        assert set(codes) == {200}, codes  # the loop never waited on the lock
        assert any(degraded)  # but /healthz said that runs are not being recorded
        code, document = failing
        assert code == 2 and document["status"] == "FAIL"
        history = document["daemon"]["history"]
        assert history["recording"] is False and history["backlog"] >= 1 and "locked" in history["error"]
        timeouts = home.events("job.timeout", job="slow")
        assert timeouts and not home.events("daemon.crashed")
        started = {(line["run_id"], line["attempt"]) for line in home.events("job.started")}
        # Once the lock is gone every run is written, and status says so.
        wait_for(lambda: home.status()[1]["daemon"]["history"]["backlog"] == 0, timeout=20, message="backlog written")
        rows = history_rows(home)
        assert started <= set(rows), started - set(rows)
        assert {rows[(t["run_id"], t["attempt"])]["status"] for t in timeouts} == {"TIMEOUT"}
        assert home.events("history.write_failed") and home.events("history.recovered")
        code, body = healthz(port)
        assert code == 200 and body["status"] == "ok"
        # An alert went out when runs stopped being recorded, and a recovery after.
        wait_for(lambda: len(alerts.snapshot()) >= 2, message="the history alert and its recovery")
        titles = [json.loads(entry["body"])["title"] for entry in alerts.snapshot()]
        assert any("history" in title and "FAIL" in title for title in titles), titles
        assert any("history" in title and "recovered" in title for title in titles), titles
        assert daemon.stop() == 0
    finally:
        server.shutdown()


def test_kill_9_while_the_history_takes_no_writes_still_leaves_the_started_runs_interrupted(home, daemon_factory):
    """The start journal alone: nothing reached history.db before the kill, every started run is shown."""
    home.write_settings({"definitions": {"tick": TICK}})
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="tick"), message="a first run")
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(home.history_path), "60"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout.readline().strip() == "locked"
        before = len(home.events("job.started", job="tick"))
        wait_for(lambda: len(home.events("job.started", job="tick")) >= before + 3, message="runs while locked")
        daemon.kill()  # SIGKILL: the runs since the lock are in the journal only
    finally:
        locker.kill()
        locker.wait()
    started = {line["run_id"] for line in home.events("job.started", job="tick")}
    assert not started <= {run_id for run_id, _ in history_rows(home)}  # some never reached the database
    code, document = home.status()  # no daemon: the reader takes the journal in
    rows = history_rows(home)
    assert started <= {run_id for run_id, _ in rows}
    assert {row["status"] for row in rows.values()} <= {"OK", "RUNNING"}  # RUNNING rows of a dead pid...
    (job,) = [j for j in document["jobs"] if j["name"] == "tick"]
    shown = [run["status"] for run in job["recent"]]
    assert job["last_run"]["status"] == "INTERRUPTED" and code in (1, 2)
    assert "RUNNING" not in shown and shown.count("INTERRUPTED") >= 3  # ...shown INTERRUPTED
    daemon = daemon_factory()  # the next owner marks them and frees the journal
    wait_for(lambda: home.events("history.interrupted_runs"), message="the interrupted runs marked")
    rows = history_rows(home)
    assert started <= {run_id for run_id, _ in rows}
    assert "RUNNING" not in {row["status"] for row in rows.values() if row["run_id"] in started}
    assert daemon.stop() == 0


def _damage(home, how: str) -> None:
    """A history with rows, then truncated in the middle or overwritten with garbage."""
    home.history_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in ("", "-wal", "-shm"):
        home.history_path.with_name(f"history.db{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(home.history_path) as conn:
        conn.execute("CREATE TABLE runs (run_id TEXT, attempt INTEGER, job TEXT, payload TEXT)")
        conn.executemany("INSERT INTO runs VALUES (?, 1, 'old', ?)", [(str(i), "x" * 500) for i in range(400)])
    data = home.history_path.read_bytes()
    if how == "truncated":
        home.history_path.write_bytes(data[: len(data) // 2])
    else:
        home.history_path.write_bytes(b"this is no database at all\n" * 200)


def test_a_damaged_history_is_reported_then_moved_aside_and_replaced(home, daemon_factory):
    for how in ("truncated", "garbage"):
        home.write_settings({"definitions": {"tick": TICK}})
        _damage(home, how)
        # Without a daemon, status reports the damage on one line and moves nothing.
        result = home.cli("status")
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stdout.splitlines() if "damaged" in line]
        assert len(lines) == 1 and str(home.history_path) in lines[0], result.stdout
        assert not list(home.history_path.parent.glob("history.db.corrupt-*"))
        code, document = home.status()
        assert code == 1 and "damaged" in document["daemon"]["history"]["damage"]

        daemon = daemon_factory()
        wait_for(lambda: home.events("job.succeeded", job="tick"), message="runs after the damage")
        (moved,) = home.history_path.parent.glob("history.db.corrupt-*")
        assert home.events("history.moved_aside", path=str(moved))
        code, document = home.status()
        assert code == 1 and document["status"] == "WARN", document
        assert document["daemon"]["history"]["moved_aside"] == str(moved)
        assert str(moved) in home.cli("status").stdout
        assert daemon.stop() == 0
        assert history_rows(home)  # the fresh history has the new runs
        moved.unlink()
