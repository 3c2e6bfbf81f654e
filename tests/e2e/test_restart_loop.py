"""End to end: jobs that hang the daemon into exit 75 are held back after the restart."""

from __future__ import annotations

import json

from tests.support.alert_fixtures import webhook_receiver
from tests.support.daemon import wait_for

TICK = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"}
HANG = {
    "cron": "* * * * * *",
    "callable": "tests.support.sample_jobs:stubborn",
    "options": {"seconds": 60},
    "timeout": 1,
    "retries": 0,
}


def test_jobs_that_forced_a_restart_are_held_back_and_the_rest_keep_running(home, daemon_factory):
    server, alerts = webhook_receiver()
    try:
        home.write_settings(
            {
                "max_abandoned_threads": 2,
                "alerts": {"desktop": False, "targets": [f"json://127.0.0.1:{server.server_port}/hook"]},
                "definitions": {"tick": TICK, "hang_a": HANG, "hang_b": HANG, "hang_c": HANG},
            }
        )
        first = daemon_factory()
        assert first.proc.wait(30) == 75
        restarts = len(home.events("daemon.restart_required"))
        # What the service manager does: start it again.
        second = daemon_factory()
        ticks_before = len(home.events("job.succeeded", job="tick"))
        wait_for(
            lambda: len(home.events("job.succeeded", job="tick")) >= ticks_before + 5,
            timeout=20,
            message="tick keeps running",
        )
        assert second.proc.poll() is None, "the restart loop goes on"
        assert len(home.events("daemon.restart_required")) == restarts
        held_since_restart = [
            line
            for line in home.events("job.skipped")
            if line["job"].startswith("hang_") and "held back" in line["reason"]
        ]
        assert {line["job"] for line in held_since_restart} == {"hang_a", "hang_b", "hang_c"}
        code, document = home.status()
        assert code == 2 and document["status"] == "FAIL"
        jobs = {job["name"]: job for job in document["jobs"]}
        for name in ("hang_a", "hang_b", "hang_c"):
            assert jobs[name]["status"] == "FAIL" and jobs[name]["held"]["hangs"] == 1, jobs[name]
        assert jobs["tick"]["status"] in ("OK", "RUNNING")
        wait_for(
            lambda: (
                {json.loads(entry["body"])["title"] for entry in alerts.snapshot() if b"held back" in entry["body"]}
                >= {f"pmjobsd: {name} (held back) FAIL" for name in ("hang_a", "hang_b", "hang_c")}
            ),
            message="an alert naming each held job",
        )
        assert second.stop() == 0
    finally:
        server.shutdown()
