"""log_rotation's size trigger, with the real daemon: jobs.log over max_size is rotated at the next
cheap check, without waiting for the weekly slot."""

from __future__ import annotations

import json
import time

from tests.support.daemon import AppHome, DaemonProcess, wait_for


def test_jobs_log_over_max_size_is_rotated_before_the_weekly_slot(tmp_path):
    home = AppHome(tmp_path / "apphome")
    rotations = home.data_dir / "jobs" / "state" / "log_rotation" / "rotations.json"
    home.write_settings(
        {
            "definitions": {
                # 1-second jobs fill jobs.log quickly
                **{f"tick{n}": {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"} for n in range(4)},
                # the check every 2 s stands in for the default 5 minutes; the weekly slot stays far away
                "log_rotation": {"cron": "*/2 * * * * *", "options": {"max_size": "6KB", "every": "0 0 1 1 *"}},
            }
        }
    )
    rotations.parent.mkdir(parents=True, mode=0o700)
    # Rotated by time just now: only the size can make it rotate again before next New Year.
    seeded = time.time()
    app_log = home.data_dir / "logs" / "password_manager.log"
    rotations.write_text(json.dumps({str(home.jobs_log): seeded, str(app_log): seeded}))
    daemon = DaemonProcess(home).wait_ready(timeout=60)
    try:
        rotated = wait_for(
            lambda: [e for e in home.events("log.rotated") if e["path"] == str(home.jobs_log)],
            timeout=60,
            message="jobs.log rotated by size",
        )
    finally:
        daemon.stop()
    assert rotated[0]["reason"] == "max_size" and rotated[0]["method"] == "renamed"
    assert 6000 <= rotated[0]["bytes"] < 6000 + 20_000  # rotated at the check after it passed 6 KB
    archives = sorted(home.jobs_log.parent.glob("jobs.log.*[0-9]"))
    assert archives and all(json.loads(line) for line in archives[0].read_text().splitlines())
    # the job's own record of the rotation, so the weekly slot counts from it
    assert json.loads(rotations.read_text())[str(home.jobs_log)] > seeded
