"""Privacy end to end: a vault full of canary strings, every built-in job run by the real
daemon, and not one canary in any log line, history row, status output or remote alert.
Only the local desktop notification of the expiry digest may name websites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.alert_fixtures import NotificationService, SessionBus, webhook_receiver
from tests.support.appfixtures import CANARY, canary_entry, create_backup, create_vault, truncate, write_key_files
from tests.support.daemon import DaemonProcess, wait_for

LOCAL_JOBS = (
    "expiring_password_digest",
    "backup_integrity_check",
    "log_rotation",
    "log_purge",
    "browser_bridge_health",
)


@pytest.fixture
def bus():
    try:
        session = SessionBus()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    service = NotificationService(session.address)
    yield session, service
    service.close()
    session.close()


def test_no_canary_leaves_the_vault(home, bus, monkeypatch):
    session, notifications = bus
    vault = home.data_dir / "passwords.db"
    write_key_files(home.data_dir)
    create_vault(
        vault, [canary_entry(1, expires_in_days=-2), canary_entry(2, expires_in_days=3), canary_entry(3)], history=2
    )
    hour_ago = int(time.time()) - 3600
    good = create_backup(home.data_dir / "backups", vault, timestamp=hour_ago)
    bad = create_backup(home.data_dir / "backups", vault, timestamp=hour_ago + 60)
    truncate(bad)  # a FAIL to alert on
    for backup in (good, bad):  # settled: the job leaves files the app may still be writing
        os.utime(backup, (hour_ago, hour_ago))
    app_log = home.data_dir / "logs" / "password_manager.log"
    app_log.parent.mkdir(mode=0o700)
    app_log.write_text(f"2026-11-28 09:00:00 - INFO - Added password for {CANARY}-site-1.example\n")

    server, received = webhook_receiver()
    hook = f"json://127.0.0.1:{server.server_port}/hook/{CANARY}-token"
    home.write_settings(
        {
            "alerts": {"desktop": True, "targets": [hook], "webhook_secret": f"{CANARY}-secret"},
            # retries 0: the failing backup check is final at once, so its alert goes out now.
            "definitions": {name: {"enabled": True, "catch_up": True, "retries": 0} for name in LOCAL_JOBS},
        },
        browser_bridge={"enabled": True, "host": "127.0.0.1", "port": 9},
    )
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session.address)
    daemon = DaemonProcess(home).wait_ready()
    try:
        # log_rotation waits for its first slot instead of running at first start: run it now.
        assert home.cli("run-now", "log_rotation", "--wait").returncode == 0
        wait_for(
            lambda: all(
                home.events("job.succeeded", job=name) or home.events("job.failed", job=name) for name in LOCAL_JOBS
            ),
            timeout=30,
            message="every local job finished",
        )
        wait_for(
            lambda: any(b"backup_integrity_check" in r["body"] for r in received.snapshot()) and notifications.calls,
            timeout=20,
            message="alert and notice",
        )
        status = home.cli("status", "--json").stdout
        config = home.cli("config", "show").stdout
    finally:
        assert daemon.stop() == 0
        server.shutdown()

    # The failing backup raised an alert, and the digest's notice went to both sinks.
    bodies = [request["body"].decode() for request in received.snapshot()]
    assert any("backup_integrity_check" in body for body in bodies)
    assert any(call for call in notifications.calls if f"{CANARY}-site-" in json.dumps(call, default=str))

    history_dump = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
                "print('\\n'.join(map(str, c.execute('select * from runs'))))"
            ),
            str(home.history_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    state_files = "".join(p.read_text(errors="replace") for p in (home.data_dir / "jobs").rglob("*.json"))
    outputs = {
        "jobs.log": "".join(p.read_text() for p in home.jobs_log.parent.glob("jobs.log*")),
        "history": history_dump,
        "status": status,
        "config show": config,
        "webhook": "\n".join(bodies) + json.dumps([r["headers"] for r in received.snapshot()]),
        "state": state_files,
        "stderr": daemon.stderr_path.read_text(),
    }
    for name, text in outputs.items():
        assert CANARY not in text, f"canary leaked into {name}"
    assert "entry_id_hash" in outputs["jobs.log"] or "entry_id_hash" in history_dump
