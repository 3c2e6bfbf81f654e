"""Text from outside, end to end: control characters and credentials in a job's summary and in an
exception, through the real daemon to every output a person or a remote sink sees.

Terminal outputs (status table, console lines, doctor) show control characters as visible escapes; JSON
stays valid JSON; no credential reaches jobs.log, status, the status page, the webhook or the bundle; an
alert carries the summary and status, never the run's error text."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
import zipfile

from tests.support.alert_fixtures import free_port, webhook_receiver
from tests.support.daemon import AppHome, wait_for
from tests.support.hostile_jobs import CANARIES, RAW_CONTROLS

JOBS = {
    "hostile_summary": {"cron": "@yearly", "callable": "tests.support.hostile_jobs:hostile_summary"},
    "hostile_error": {"cron": "@yearly", "callable": "tests.support.hostile_jobs:hostile_error", "retries": 0},
}


def start_console_daemon(home: AppHome) -> tuple[subprocess.Popen, object]:
    """The real daemon with its console view on stderr (as under a terminal)."""
    stderr_path = home.root / "console.stderr"
    stderr = open(stderr_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "pmjobsd", "run", "--console"],
        env=home.env(),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    return process, (stderr, stderr_path)


def assert_terminal_safe(name: str, text: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in text, f"raw {char!r} reached {name}"
    assert not [line for line in text.splitlines() if line.startswith(("forged line", "OK all fine"))], (
        f"a forged line in {name}"
    )
    assert "\\x1b[2J" in text and "\\r" in text and "\\n" in text and "\\x07" in text and "\\x9b" in text, (
        f"{name} does not show the escapes: {text}"
    )


def assert_no_credential(name: str, text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary} leaked into {name}"


def test_hostile_text_is_escaped_and_credentials_never_leave(home, tmp_path):
    server, received = webhook_receiver()
    port = free_port()
    home.write_settings(
        {
            "alerts": {"desktop": False, "targets": [f"json://127.0.0.1:{server.server_port}/hook"]},
            "metrics": {"enabled": True, "port": port},
            "definitions": JOBS,
        }
    )
    process, (stderr, stderr_path) = start_console_daemon(home)
    try:
        wait_for(lambda: home.events("daemon.ready") or process.poll() is not None, timeout=20, message="ready")
        assert process.poll() is None, stderr_path.read_text()
        wait_for(
            lambda: (
                home.events("job.succeeded", job="hostile_summary") and home.events("job.failed", job="hostile_error")
            ),
            timeout=30,
            message="both jobs ran",
        )
        wait_for(lambda: received.snapshot(), timeout=20, message="the webhook alert")
        run_now = home.cli("run-now", "hostile_summary", "--wait")
        table = home.cli("status")
        as_json = home.cli("status", "--json")
        doctor = home.cli("doctor")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            page = response.read().decode()
        bundle_path = tmp_path / "bundle.zip"
        bundle = home.cli("logs", "bundle", "-o", str(bundle_path))
        assert bundle.returncode == 0, bundle.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        stderr.close()
        server.shutdown()
    console = stderr_path.read_text()

    # Terminal outputs show the control characters as visible escapes, on one line each.
    assert_terminal_safe("status", table.stdout)
    summary_lines = [line for line in table.stdout.splitlines() if line.startswith("hostile_summary")]
    assert (
        len(summary_lines) == 1 and "member evil\\x1b[2J\\rOK all fine\\nforged line\\x07\\x9b31m" in summary_lines[0]
    )
    assert_terminal_safe("console", "\n".join(line for line in console.splitlines() if "hostile_" in line))
    assert_terminal_safe("doctor", doctor.stdout)
    assert_terminal_safe("run-now", run_now.stdout)
    assert run_now.returncode == 1 and len(run_now.stdout.splitlines()) == 1
    # ... while the JSON document stays valid JSON and keeps the text (escaped the JSON way).
    document = json.loads(as_json.stdout)
    assert all(char not in as_json.stdout for char in RAW_CONTROLS)
    jobs = {job["name"]: job for job in document["jobs"]}
    assert "\x1b[2J" in jobs["hostile_summary"]["last_run"]["summary"]

    # No credential in any output; the error's own shape is kept.
    error_summary = jobs["hostile_error"]["last_run"]["summary"]
    assert "apikey=<redacted> token: <redacted> Authorization: <redacted>" in error_summary
    with zipfile.ZipFile(bundle_path) as archive:
        bundled = "\n".join(archive.read(name).decode("utf-8", "replace") for name in archive.namelist())
    webhook = [json.loads(request["body"]) for request in received.snapshot()]
    outputs = {
        "jobs.log": home.jobs_log.read_text(),
        "status": table.stdout,
        "status --json": as_json.stdout,
        "doctor": doctor.stdout,
        "status page": page,
        "webhook": json.dumps(webhook) + json.dumps([r["headers"] for r in received.snapshot()]),
        "bundle": bundled,
        "console": console,
    }
    for name, text in outputs.items():
        assert_no_credential(name, text)

    # The alert says which job, its status and a summary -- never the run's error text.
    alert = next(body for body in webhook if body["job"] == "hostile_error")
    assert alert["kind"] == "alert" and alert["status"] == "FAIL"
    assert set(alert) == {
        "kind",
        "job",
        "run_id",
        "host",
        "time",
        "status",
        "summary",
        "consecutive_failures",
        "title",
        "text",
    }
    assert alert["summary"] == "the job raised RuntimeError; its error is in jobs.log"
    for field in ("summary", "title", "text"):
        assert "upload of" not in alert[field] and "member evil" not in alert[field], alert[field]
        assert all(char not in alert[field] for char in RAW_CONTROLS)
