"""End to end: the real `pmjobsd run` process on a temporary HOME, real signals, real files."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import datetime, timezone

from tests.support.daemon import wait_for

TICK = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"}


def no_slot_job() -> dict:
    """A job whose only slot is months away and that is not caught up at start: it runs only
    when asked, so a run-now of it can never meet a scheduled run in flight (overlap=skip)."""
    month = (datetime.now().month + 5) % 12 + 1
    return {"cron": f"0 0 1 {month} *", "catch_up": False, "callable": "tests.support.sample_jobs:ok"}


def shown(result: subprocess.CompletedProcess) -> str:
    """Both streams of a command, for a failed assert: --json puts its errors on stdout."""
    return f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def rows(home, job=None):
    with sqlite3.connect(home.history_path) as conn:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM runs" + (" WHERE job = ?" if job else "") + " ORDER BY started_at"
        return [dict(row) for row in conn.execute(sql, (job,) if job else ())]


def test_runs_jobs_records_them_and_reports_status(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK, "manual": no_slot_job()}})
    daemon = daemon_factory()
    wait_for(lambda: len(home.events("job.succeeded", job="tick")) >= 2, message="two runs of tick")

    line = home.events("job.succeeded", job="tick")[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])
    assert datetime.fromisoformat(line["ts"]).tzinfo == timezone.utc  # readable by Python 3.10 too
    assert {"level": "INFO", "component": "runner", "status": "OK"}.items() <= line.items()
    assert len(line["run_id"]) == 32 and line["attempt"] == 1 and isinstance(line["duration_ms"], int)
    started = home.events("job.started", run_id=line["run_id"])
    assert started and started[0]["job"] == "tick"
    assert stat.S_IMODE(home.jobs_log.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.history_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.history_path.parent.stat().st_mode) == 0o700
    assert all(row["status"] in ("OK", "RUNNING") for row in rows(home, "tick"))

    code, document = home.status()
    assert code == 0, document
    assert document["daemon"]["running"] is True and document["daemon"]["pid"] == daemon.pid
    (tick,) = [job for job in document["jobs"] if job["name"] == "tick"]
    assert tick["status"] in ("OK", "RUNNING") and tick["cron"] == "* * * * * *" and tick["enabled"] is True
    assert tick["next_run"] and tick["last_run"]["run_id"] and tick["consecutive_failures"] == 0
    disabled = [job for job in document["jobs"] if not job["enabled"]]
    assert all(job["status"] == "DISABLED" for job in disabled)

    result = home.cli("run-now", "manual", "--wait", "--json")
    assert result.returncode == 0, shown(result)
    answer = json.loads(result.stdout)
    assert answer["run"]["status"] == "OK" and answer["run"]["summary"] == "all good", shown(result)
    assert [(row["trigger"], row["status"]) for row in rows(home, "manual")] == [("manual", "OK")]

    unknown = home.cli("run-now", "no_such_job")
    assert unknown.returncode == 2 and "unknown job 'no_such_job'" in unknown.stderr

    assert daemon.stop() == 0
    assert home.events("daemon.stopped")


def test_second_instance_is_refused(home, daemon_factory):
    home.write_settings({"definitions": {}})
    first = daemon_factory()
    second = home.cli("run", "--no-console", timeout=30)
    assert second.returncode == 1
    assert f"already runs (pid {first.pid})" in second.stderr


def test_reload_on_sighup_and_on_file_change_keeps_last_good_settings(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK}})
    daemon = daemon_factory()
    home.write_settings({"definitions": {"tick": TICK, "tock": {**TICK, "callable": "tests.support.sample_jobs:warn"}}})
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: home.events("job.succeeded", job="tock"), message="tock after reload")
    assert home.events("config.reloaded")

    # A broken file: the daemon says why and keeps running the last good jobs.
    home.settings_path.write_text('{"jobs": {"max_workers": "many"')
    wait_for(lambda: home.events("config.invalid"), message="config.invalid")
    invalid = home.events("config.invalid")[-1]
    assert invalid["using"] == "last good settings" and "not valid JSON" in invalid["errors"][0]
    count = len(home.events("job.succeeded", job="tick"))
    wait_for(lambda: len(home.events("job.succeeded", job="tick")) > count + 1, message="tick still runs")
    code, document = home.status()
    assert code == 1 and document["settings"]["valid"] is False

    # One bad job in an otherwise good file: that job keeps its last good definition.
    home.write_settings({"definitions": {"tick": {**TICK, "cron": "99 * * * *"}, "tock": TICK}})
    wait_for(lambda: any(e.get("job") == "tick" for e in home.events("config.invalid")), message="job error")
    count = len(home.events("job.succeeded", job="tick"))
    wait_for(lambda: len(home.events("job.succeeded", job="tick")) > count, message="tick kept")
    code, document = home.status()
    (tick,) = [job for job in document["jobs"] if job["name"] == "tick"]
    assert tick["cron"] == "* * * * * *" and tick["next_run"]  # still scheduled by its last good definition
    assert "jobs.definitions.tick.cron" in tick["config_errors"][0] and code == 1
    assert daemon.stop() == 0


def test_sigterm_drains_running_jobs_and_closes_history(home, daemon_factory):
    home.write_settings(
        {
            "shutdown_grace": "10s",
            "definitions": {
                "sleepy": {
                    "cron": "@yearly",
                    "callable": "tests.support.sample_jobs:sleepy",
                    "catch_up": True,
                    "options": {"seconds": 60},
                    "timeout": "2m",
                }
            },
        }
    )
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.started", job="sleepy"), message="sleepy started")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 10  # the job honoured its cancel flag well inside the grace period
    (row,) = rows(home, "sleepy")
    assert row["status"] == "INTERRUPTED" and row["finished_at"]
    stopping = [e["event"] for e in home.events() if e["event"].startswith("daemon.")]
    assert stopping[-2:] == ["daemon.stopping", "daemon.stopped"]


def test_sigterm_records_a_job_that_ignores_cancel_as_interrupted_after_the_grace(home, daemon_factory):
    """The job above honours its cancel flag and records INTERRUPTED by itself; this one never returns."""
    home.write_settings(
        {
            "shutdown_grace": "1s",
            "definitions": {
                "stubborn": {
                    "cron": "@yearly",
                    "callable": "tests.support.sample_jobs:stubborn",
                    "catch_up": True,
                    "options": {"seconds": 60},
                    "timeout": "5m",
                }
            },
        }
    )
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.started", job="stubborn"), message="stubborn started")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 15  # the grace period, not the job's 60 s
    (row,) = rows(home, "stubborn")
    assert row["status"] == "INTERRUPTED" and row["finished_at"]  # recorded by the daemon, not found after a crash
    assert home.events("job.failed", job="stubborn", status="INTERRUPTED")


def test_an_interrupted_last_run_is_a_warning_while_a_daemon_runs(home, daemon_factory):
    """Not only without a daemon (which is a WARN by itself): the job's INTERRUPTED is never OK."""
    sleepy = {
        "cron": "@yearly",
        "callable": "tests.support.sample_jobs:sleepy",
        "catch_up": True,
        "options": {"seconds": 60},
    }
    home.write_settings({"definitions": {"sleepy": sleepy}})
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.started", job="sleepy"), message="sleepy started")
    assert daemon.stop() == 0
    assert rows(home, "sleepy")[0]["status"] == "INTERRUPTED"
    home.write_settings({"definitions": {"sleepy": {**sleepy, "catch_up": False}}})  # not run again at start
    daemon_factory()
    code, document = home.status()
    (job,) = [j for j in document["jobs"] if j["name"] == "sleepy"]
    assert document["daemon"]["running"] is True and job["last_run"]["status"] == "INTERRUPTED"
    assert job["status"] == "WARN" and document["status"] == "WARN" and code == 1


def test_kill_9_leaves_an_interrupted_run_never_a_stuck_one(home, daemon_factory):
    home.write_settings(
        {
            "definitions": {
                "stubborn": {
                    "cron": "@yearly",
                    "callable": "tests.support.sample_jobs:stubborn",
                    "options": {"seconds": 60},
                    "timeout": "5m",
                }
            }
        }
    )
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.started", job="stubborn"), message="stubborn started")
    daemon.kill()
    code, document = home.status()  # no daemon: read straight from the history
    (job,) = [j for j in document["jobs"] if j["name"] == "stubborn"]
    assert job["last_run"]["status"] == "INTERRUPTED" and document["daemon"]["running"] is False
    assert code == 1
    daemon_factory()
    assert home.events("history.interrupted_runs")[-1]["count"] == 1
    assert rows(home, "stubborn")[0]["status"] == "INTERRUPTED"


def test_hanging_job_times_out_and_is_not_piled_up(home, daemon_factory):
    home.write_settings(
        {
            "definitions": {
                "hang": {
                    "cron": "* * * * * *",
                    "callable": "tests.support.sample_jobs:stubborn",
                    "timeout": "1s",
                    "options": {"seconds": 4},
                }
            }
        }
    )
    daemon_factory()
    wait_for(lambda: home.events("job.timeout", job="hang"), message="job.timeout")
    timeout = home.events("job.timeout", job="hang")[0]
    assert timeout["status"] == "TIMEOUT" and 900 <= timeout["duration_ms"] < 4000
    code, document = home.status()
    (job,) = [j for j in document["jobs"] if j["name"] == "hang"]
    assert job["status"] == "FAIL" and code == 2
    wait_for(
        lambda: any("timed-out run" in e["reason"] for e in home.events("job.skipped", job="hang")),
        message="skips while the abandoned thread lives",
    )
    wait_for(lambda: home.events("job.abandoned_thread_exited", job="hang"), timeout=10, message="thread exit")


def test_failing_job_is_retried_with_backoff(home, daemon_factory):
    home.write_settings(
        {
            "definitions": {
                "flaky": {
                    "cron": "@yearly",
                    "callable": "tests.support.sample_jobs:flaky",
                    "retries": 3,
                    "backoff": {"initial": 0.3, "factor": 3},
                    "options": {"succeed_on": 3},
                }
            }
        }
    )
    daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="flaky"), message="flaky succeeded")
    retries = home.events("job.retry_scheduled", job="flaky")
    assert [r["attempt"] for r in retries] == [2, 3]
    assert retries[1]["delay_s"] > retries[0]["delay_s"] * 2  # exponential: 0.3 s then 0.9 s (+ jitter)
    runs = rows(home, "flaky")
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "FAIL"), (2, "FAIL"), (3, "OK")]
    assert len({r["run_id"] for r in runs}) == 1  # one run, three attempts
    assert [r["final"] for r in runs] == [0, 0, 1]


def test_a_failure_with_its_retry_still_pending_is_a_warning(home, daemon_factory):
    """Between a failed attempt and its retry the job is WARN (exit 1); only the final failure is FAIL."""
    home.write_settings(
        {
            "definitions": {
                "boom": {
                    "cron": "@yearly",
                    "callable": "tests.support.sample_jobs:fail",
                    "catch_up": True,
                    "retries": 1,
                    "backoff": {"initial": 600},
                }
            }
        }
    )
    daemon_factory()
    wait_for(lambda: home.events("job.retry_scheduled", job="boom"), message="a retry scheduled")
    code, document = home.status()
    (job,) = [j for j in document["jobs"] if j["name"] == "boom"]
    assert job["last_run"]["status"] == "FAIL" and job["next_run"]  # the retry, in ten minutes
    assert job["status"] == "WARN" and document["status"] == "WARN" and code == 1
    assert [(r["status"], r["final"]) for r in rows(home, "boom")] == [("FAIL", 0)]


def test_overlap_skip(home, daemon_factory):
    home.write_settings(
        {
            "definitions": {
                "slow": {
                    "cron": "* * * * * *",
                    "callable": "tests.support.sample_jobs:sleepy",
                    "options": {"seconds": 2.5},
                    "catch_up": False,
                }
            }
        }
    )
    daemon_factory()
    wait_for(lambda: home.events("job.skipped", job="slow"), message="a skipped slot")
    assert "overlap=skip" in home.events("job.skipped", job="slow")[0]["reason"]
    wait_for(lambda: home.events("job.succeeded", job="slow"), message="the slow run finishing")
    runs = rows(home, "slow")
    assert all(r["status"] != "RUNNING" for r in runs[:-1])  # never two at once: only the newest may run


def test_catch_up_after_the_daemon_was_down_across_a_slot(home, daemon_factory):
    home.write_settings(
        {"definitions": {"every3": {"cron": "*/3 * * * * *", "callable": "tests.support.sample_jobs:ok"}}}
    )
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="every3", status="OK"), message="first run")
    assert home.events("job.caught_up", job="every3")[0]["reason"] == "never_run"
    daemon.stop()
    time.sleep(3.2)  # at least one */3 slot passes while nothing runs
    daemon_factory()
    wait_for(lambda: len(home.events("job.caught_up", job="every3")) == 2, message="catch-up")
    caught = home.events("job.caught_up", job="every3")[-1]
    assert caught["reason"] == "missed" and caught["missed_slot"] > caught["last_slot"]
    wait_for(lambda: any(r["trigger"] == "catch_up" for r in rows(home, "every3")[1:]), message="catch-up run")


def test_run_now_without_a_daemon_runs_in_process_and_is_recorded(home):
    home.write_settings({"definitions": {"tick": TICK, "boom": {**TICK, "callable": "tests.support.sample_jobs:fail"}}})
    result = home.cli("run-now", "tick", "--wait")
    assert result.returncode == 0 and "tick: OK" in result.stdout
    failed = home.cli("run-now", "boom")
    assert failed.returncode == 2 and "boom: FAIL" in failed.stdout
    assert [r["trigger"] for r in rows(home)] == ["manual", "manual"]
    assert home.events("job.failed", job="boom")
    # A token-bearing URL in an exception never reaches the log.
    assert "T0KEN" not in home.jobs_log.read_text()


def test_job_log_handler_survives_rotation(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK}})
    daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="tick"), message="a run")
    rotated = home.jobs_log.with_name("jobs.log.1")
    os.rename(home.jobs_log, rotated)

    def new_file_has_a_run():
        if not home.jobs_log.exists():
            return False
        return any(json.loads(line).get("event") == "job.succeeded" for line in home.jobs_log.read_text().splitlines())

    wait_for(new_file_has_a_run, message="a run logged in the new jobs.log")
    assert stat.S_IMODE(home.jobs_log.stat().st_mode) == 0o600


def test_aliases_and_bad_flags(home):
    result = home.cli("--jobs", "status", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["daemon"]["running"] is False  # no daemon: WARN
    bad = home.cli("status", "--colour")
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr
    home.settings_path.write_text(
        '{"jobs": {"definitions": {"x": {"cron": "1 2 3", "callable": "tests.support.sample_jobs:ok"}}}}'
    )
    invalid = home.cli("config", "validate")
    assert invalid.returncode == 1 and "jobs.definitions.x.cron" in invalid.stderr


def test_logs_purge_command(home):
    refused = home.cli("--logs", "purge", "--days", "0")
    assert refused.returncode == 2 and "at least 1" in refused.stderr
    archive = home.data_dir / "logs" / "jobs.log.20260101-000000"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_text("old\n")
    os.utime(archive, (time.time() - 40 * 86400,) * 2)
    done = home.cli("logs", "purge", "--days", "30")
    assert done.returncode == 0 and str(archive) in done.stdout and not archive.exists()


def test_a_retry_that_cannot_start_makes_the_failure_final(home, daemon_factory):
    home.write_settings(
        {
            "definitions": {
                "hang": {
                    "cron": "@yearly",
                    "callable": "tests.support.sample_jobs:stubborn",
                    "timeout": "1s",
                    "retries": 1,
                    "backoff": {"initial": 0.2},
                    "options": {"seconds": 6},
                }
            }
        }
    )
    daemon_factory()
    wait_for(lambda: home.events("job.retry_dropped", job="hang"), message="retry dropped")
    assert "timed-out run" in home.events("job.retry_dropped", job="hang")[0]["reason"]
    code, document = home.status()
    (job,) = [j for j in document["jobs"] if j["name"] == "hang"]
    assert job["status"] == "FAIL" and job["consecutive_failures"] == 1 and code == 2
    assert rows(home, "hang")[0]["final"] == 1


def test_cli_creates_private_folders_and_refuses_a_second_detached_daemon(home, daemon_factory, tmp_path):
    home.write_settings({"definitions": {"tick": TICK}})
    fresh = home.root / ".local/share/secure-password-manager"
    for folder in sorted(fresh.rglob("*"), reverse=True):
        folder.rmdir() if folder.is_dir() else folder.unlink()
    fresh.rmdir()
    assert home.cli("run-now", "tick", "--wait").returncode == 0
    for folder in [fresh, *(p for p in fresh.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    daemon = daemon_factory()
    refused = home.cli("run", "--detach", "--pidfile", str(tmp_path / "d.pid"))
    assert refused.returncode == 1 and f"already runs (pid {daemon.pid})" in refused.stderr


def test_run_now_never_runs_beside_a_daemon_that_does_not_answer(home, tmp_path):
    home.write_settings({"definitions": {"tick": {**TICK, "options": {"marker": str(tmp_path / "ran")}}}})
    lock = home.data_dir / "jobs" / "pmjobsd.pid"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600);"
                "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True);"
                "time.sleep(60)"
            ),
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = home.cli("run-now", "tick", "--wait")
        assert result.returncode == 2 and "does not answer" in result.stderr
        assert not (tmp_path / "ran").exists()
        code, document = home.status()
        assert code == 2 and document["daemon"]["responding"] is False
    finally:
        holder.kill()
        holder.wait()


def test_control_socket_in_a_deep_state_folder_without_runtime_dir(home, monkeypatch):
    """A system unit has no XDG_RUNTIME_DIR: the socket goes to the state folder, however deep."""
    home.write_settings({"definitions": {"tick": TICK}})
    env = {k: v for k, v in home.env().items() if k != "XDG_RUNTIME_DIR"}
    socket_path = home.data_dir / "jobs" / "control.sock"
    assert len(str(socket_path)) > 108  # longer than AF_UNIX allows
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmjobsd", "run", "--no-console"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: home.events("daemon.ready"), message="ready")
        assert socket_path.is_socket()
        status = subprocess.run(
            [sys.executable, "-m", "pmjobsd", "status", "--json"], env=env, capture_output=True, text=True, timeout=30
        )
        assert json.loads(status.stdout)["daemon"]["pid"] == proc.pid
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_a_settings_change_noticed_with_a_failure_keeps_its_retry(home, daemon_factory):
    """The loop reloads before it schedules retries: a failure arriving with a reload must still be retried."""
    settings = {
        "wake_interval": "30s",
        "definitions": {
            "slow": {
                "cron": "@yearly",
                "callable": "tests.support.sample_jobs:slow_fail",
                "retries": 1,
                "backoff": {"initial": 0.2},
                "options": {"seconds": 1.5},
            }
        },
    }
    home.write_settings(dict(settings))
    daemon_factory()
    wait_for(lambda: home.events("job.started", job="slow"), message="first attempt")
    home.write_settings(dict(settings, max_workers=3))  # the app rewrote settings.json meanwhile
    wait_for(lambda: len(home.events("job.failed", job="slow")) == 2, message="both attempts")
    assert home.events("config.reloaded") and not home.events("job.retry_dropped")
    assert [e["attempt"] for e in home.events("job.retry_scheduled", job="slow")] == [2]
