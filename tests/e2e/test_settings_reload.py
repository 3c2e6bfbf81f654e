"""Settings never silently change: the app's own save, same-tick rewrites, quick pick-up, one config.invalid."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.support.daemon import wait_for

MINE = {"cron": "@yearly", "callable": "tests.support.sample_jobs:ok", "catch_up": False}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _jobs_in_status(home) -> set[str]:
    return {job["name"] for job in home.status()[1]["jobs"] if job["enabled"]}


# The app's own save (secure_password_manager 1.11.0, utils/config.py save_settings): open "w" truncates,
# then json.dump writes; nothing is atomic.  Driven here as the app runs it, with its own HOME.
HAMMER = """
import json, sys, time
from secure_password_manager.utils import config
data = config.load_settings()
end = time.monotonic() + float(sys.argv[1])
saves = 0
while time.monotonic() < end:
    data["clipboard"]["auto_clear_seconds"] = saves % 90 + 10
    config.save_settings(data)
    saves += 1
print(saves)
"""


def test_the_apps_own_save_never_makes_the_daemon_run_on_the_defaults(home, daemon_factory):
    pytest.importorskip("secure_password_manager.utils.config")
    port = _free_port()
    home.write_settings(
        # Checked every 100 ms (inotify or not), so that a reload during a save is all but certain.
        {"wake_interval": "100ms", "metrics": {"enabled": True, "port": port}, "definitions": {"mine": MINE}}
    )
    daemon_factory()
    assert _jobs_in_status(home) == {"mine"}
    hammer = subprocess.run(
        [sys.executable, "-c", HAMMER, "10"], env=home.env(), capture_output=True, text=True, timeout=60
    )
    assert hammer.returncode == 0, hammer.stderr
    saves = int(hammer.stdout)
    assert saves > 200
    time.sleep(1.5)  # let the last save settle
    for line in home.events("config.reloaded"):
        assert "mine" in line["jobs"]
    assert not home.events("config.invalid", using="defaults")
    assert not home.events("job.started"), "a job ran: the daemon applied other settings"
    assert len(home.events("metrics.listening")) == 1 and not home.events("metrics.not_started")
    assert _jobs_in_status(home) == {"mine"}
    # At most one config.invalid: one caught mid-save that stayed so through the settle delay is logged once.
    assert len(home.events("config.invalid")) <= 1
    data = json.loads(home.settings_path.read_text())
    assert data["jobs"]["definitions"]["mine"] == MINE and data["clipboard"]["auto_clear_seconds"] >= 10


def test_an_empty_file_after_a_good_one_keeps_the_good_settings(home, daemon_factory):
    home.write_settings({"definitions": {"mine": MINE}})
    daemon_factory()
    home.settings_path.write_text("")
    invalid = wait_for(lambda: home.events("config.invalid"), message="config.invalid")
    assert invalid[0]["using"] == "last good settings"
    time.sleep(3)  # three wake-ups on wake_interval 1s
    assert len(home.events("config.invalid")) == 1
    assert _jobs_in_status(home) == {"mine"}
    assert not home.events("job.started")


@pytest.mark.parametrize("bad", ["not UTF-8", "a folder"])
def test_a_lasting_problem_is_logged_once(home, daemon_factory, bad):
    home.write_settings({"definitions": {"mine": MINE}})
    daemon_factory()
    if bad == "a folder":
        home.settings_path.unlink()
        home.settings_path.mkdir()
    else:
        home.settings_path.write_bytes(b'{"jobs": {"caf\xe9": 1}}')
    wait_for(lambda: home.events("config.invalid"), message="config.invalid")
    time.sleep(4)  # four wake-ups on wake_interval 1s
    assert len(home.events("config.invalid")) == 1
    assert _jobs_in_status(home) == {"mine"}


def test_a_rewrite_within_the_same_mtime_tick_is_noticed(home, daemon_factory):
    home.write_settings({"definitions": {"job_a": MINE}})
    before = home.settings_path.stat()
    daemon_factory()
    text = home.settings_path.read_text().replace("job_a", "job_b")
    with open(home.settings_path, "r+") as handle:  # same inode, same size, same mtime
        handle.write(text)
    os.utime(home.settings_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert home.settings_path.stat().st_mtime_ns == before.st_mtime_ns
    wait_for(lambda: home.events("config.reloaded"), timeout=10, message="config.reloaded")
    assert _jobs_in_status(home) == {"job_b"}


def test_a_saved_change_applies_within_a_second(home, daemon_factory):
    home.write_settings({"wake_interval": "60s", "definitions": {"mine": MINE}})
    daemon_factory()
    time.sleep(0.5)  # the loop is asleep in select()
    saved = time.monotonic()
    home.write_settings({"wake_interval": "60s", "definitions": {"mine": MINE, "other": MINE}})
    wait_for(lambda: home.events("config.reloaded"), timeout=10, interval=0.02, message="config.reloaded")
    took = time.monotonic() - saved
    assert took < 1.0, f"the change applied after {took:.2f} s"
    assert _jobs_in_status(home) == {"mine", "other"}


def test_a_change_saved_while_the_daemon_starts_applies_within_a_second(home, daemon_factory):
    # Saved once the settings were read, before daemon.ready (the watch on the folder opens after READY).
    home.write_settings({"wake_interval": "60s", "definitions": {"mine": MINE}})
    daemon = daemon_factory(ready=False)
    wait_for(lambda: home.events("config.loaded"), timeout=20, interval=0.005, message="config.loaded")
    saved = time.monotonic()
    home.write_settings({"wake_interval": "60s", "definitions": {"mine": MINE, "other": MINE}})
    daemon.wait_ready()
    wait_for(lambda: home.events("config.reloaded"), timeout=10, interval=0.02, message="config.reloaded")
    took = time.monotonic() - saved
    assert took < 1.0, f"the change applied after {took:.2f} s"
    assert _jobs_in_status(home) == {"mine", "other"}
