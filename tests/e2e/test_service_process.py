"""The daemon as a service sees it: sd_notify datagrams, detaching, self-healing exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tests.support.daemon import wait_for


def test_notify_protocol_from_a_real_daemon(home, tmp_path):
    home.write_settings({"definitions": {"tick": {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"}}})
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(1.0)
    env = {**home.env(), "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmjobsd", "run", "--no-console"], env=env, stderr=subprocess.DEVNULL
    )
    env["WATCHDOG_PID"] = str(proc.pid)
    messages: list[str] = []

    def receive_until(predicate, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                messages.append(receiver.recv(4096).decode())
            except TimeoutError:
                continue
            if predicate():
                return
        raise AssertionError(f"not seen in {messages}")

    try:
        receive_until(lambda: any("READY=1" in m for m in messages))
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=" in ready and "jobs scheduled" in ready
        # WATCHDOG_USEC=2 s: the loop must ping at least every second, with or without work.
        receive_until(lambda: sum("WATCHDOG=1" in m for m in messages) >= 3)
        receive_until(lambda: any(m.startswith("STATUS=") and "last run: tick" in m for m in messages))
        proc.send_signal(signal.SIGHUP)
        receive_until(lambda: any("RELOADING=1" in m for m in messages))
        reloading = next(m for m in messages if "RELOADING=1" in m)
        assert "MONOTONIC_USEC=" in reloading
        proc.send_signal(signal.SIGTERM)
        receive_until(lambda: any("STOPPING=1" in m for m in messages))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.close()


def test_detach_writes_a_locked_pidfile_refuses_a_second_start_and_stops_on_sigterm(home, tmp_path):
    home.write_settings({"definitions": {}})
    pidfile = tmp_path / "pmjobsd.pid"
    first = home.cli("run", "--detach", "--pidfile", str(pidfile))
    assert first.returncode == 0, first.stderr
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), message="pidfile"))
    wait_for(lambda: home.events("daemon.ready"), message="detached daemon ready")
    assert oct(pidfile.stat().st_mode & 0o777) == "0o600"
    code, document = home.status()
    assert document["daemon"]["running"] and document["daemon"]["pid"] == pid
    second = home.cli("run", "--detach", "--pidfile", str(pidfile))
    assert second.returncode == 1 and f"already runs (pid {pid})" in second.stderr
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists(), message="pidfile removed")
    assert home.events("daemon.stopped")


def test_too_many_abandoned_threads_exit_for_a_clean_restart(home, daemon_factory):
    home.write_settings(
        {
            "max_abandoned_threads": 1,
            "definitions": {
                f"stuck{i}": {
                    "cron": "@yearly",
                    "callable": "tests.support.sample_jobs:stubborn",
                    "timeout": "0.5s",
                    "options": {"seconds": 20},
                }
                for i in range(2)
            },
        }
    )
    daemon = daemon_factory()
    assert daemon.proc.wait(30) == 75
    (event,) = home.events("daemon.restart_required")
    assert event["abandoned_threads"] == 2 and event["limit"] == 1
    assert home.events("daemon.stopped")[-1]["exit_code"] == 75
