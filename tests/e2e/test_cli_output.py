"""The command line's text output: whole next-run times with their zone in the status table, and no
traceback when a reader such as `head` closes the pipe early."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

COMMANDS = (("status",), ("doctor",), ("config", "schema"))


def test_status_table_shows_whole_next_runs_with_their_zone(home, daemon_factory):
    # Jitter makes the next run a time with fractions of a second: 32 characters with its offset.
    home.write_settings(
        {
            "timezone": "Europe/Berlin",
            "definitions": {
                "jittered": {
                    "cron": "@yearly",
                    "callable": "tests.support.sample_jobs:ok",
                    "jitter": "30s",
                    "catch_up": False,
                }
            },
        }
    )
    daemon_factory()
    _, document = home.status()
    next_run = next(job for job in document["jobs"] if job["name"] == "jittered")["next_run"]
    assert next_run.endswith(("+01:00", "+02:00")) and len(next_run) > 25
    table = home.cli("status").stdout
    line = next(line for line in table.splitlines() if line.startswith("jittered"))
    assert next_run in line.split(), table


def _closed_pipe_run(home, *command: str) -> subprocess.CompletedProcess:
    """Run ``pmjobsd COMMAND`` with its stdout a pipe whose reader is already gone (as after `head`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "pmjobsd", *command],
            env=home.env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_closed_pipe_is_no_traceback(home, command):
    home.write_settings({})
    result = _closed_pipe_run(home, *command)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as a shell reports a writer killed by it


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_piped_to_head_leaves_stderr_empty(home, tmp_path, command):
    home.write_settings({})
    stderr_path = tmp_path / "stderr"
    shell = f"{sys.executable} -m pmjobsd {' '.join(command)} 2>{stderr_path} | head -1"
    result = subprocess.run(["bash", "-c", shell], env=home.env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    first = result.stdout.strip()
    assert first.startswith({"status": "pmjobsd", "doctor": "OK", "config": "{"}[command[0]]), first
    assert stderr_path.read_text() == ""


def test_json_output_is_unchanged_when_read_whole(home):
    home.write_settings({})
    result = home.cli("config", "schema")
    assert result.returncode == 0 and json.loads(result.stdout)["type"] == "object"
