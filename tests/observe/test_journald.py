"""Journal logging: only when stderr is journald, with one journal field per event field."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from pmjobsd.observe import journald as journal
from pmjobsd.observe.joblog import LOGGER_NAME, EventLogger

pytestmark = pytest.mark.skipif(journal._JournalHandler is None, reason="systemd-python is not installed")

CANARY_TOKEN = "canary-token-7f3a9c"


def _stream_id(handle) -> str:
    info = os.fstat(handle.fileno())
    return f"{info.st_dev}:{info.st_ino}"


def test_handler_only_when_journal_stream_is_stderr(tmp_path):
    with open(tmp_path / "stderr", "w") as stderr, open(tmp_path / "other", "w") as other:
        assert journal.journal_handler({}, stderr) is None
        assert journal.journal_handler({"JOURNAL_STREAM": _stream_id(other)}, stderr) is None
        assert journal.journal_handler({"JOURNAL_STREAM": "garbage"}, stderr) is None
        assert isinstance(journal.journal_handler({"JOURNAL_STREAM": _stream_id(stderr)}, stderr), logging.Handler)


def test_a_real_process_detects_its_journal_stream(tmp_path):
    # The process's real fd 2 is a file; JOURNAL_STREAM names it, as systemd would name its socket.
    with open(tmp_path / "stderr", "w") as stderr:
        env = {**os.environ, "JOURNAL_STREAM": _stream_id(stderr)}
        code = "from pmjobsd.observe.journald import journal_handler; print(type(journal_handler()).__name__)"
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            stderr=stderr,
            capture_output=False,
            stdout=subprocess.PIPE,
            text=True,
            timeout=30,
        ).stdout
    assert out.strip() == "EventJournalHandler"


def test_events_become_structured_journal_fields(tmp_path):
    sent = []
    with open(tmp_path / "stderr", "w") as stderr:
        handler = journal.journal_handler(
            {"JOURNAL_STREAM": _stream_id(stderr)},
            stderr,
            sender_function=lambda message, **fields: sent.append((message, fields)),
        )
    logger = logging.getLogger(LOGGER_NAME + ".journaltest")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        log = EventLogger("runner", logger).bind(job="log_rotation", run_id="r-123", attempt=2)
        log.info("job.succeeded", status="OK", duration_ms=812)
        log.error("job.failed", status="FAIL", error=f"POST https://hooks.example.org/{CANARY_TOKEN} failed")
    finally:
        logger.removeHandler(handler)
    (message, fields), (_failed_message, failed) = sent
    assert fields["EVENT"] == "job.succeeded"
    assert fields["COMPONENT"] == "runner" and fields["JOB"] == "log_rotation" and fields["RUN_ID"] == "r-123"
    assert fields["ATTEMPT"] == 2 and fields["STATUS"] == "OK" and fields["DURATION_MS"] == 812
    assert fields["PRIORITY"] == "6" and fields["SYSLOG_IDENTIFIER"] == "pmjobsd"
    assert "job.succeeded" in message and "run_id=r-123" in message
    assert failed["PRIORITY"] == "3"
    assert all(name == name.upper() for name in fields)  # journald drops lower-case names
    assert CANARY_TOKEN not in repr(sent)


@pytest.mark.parametrize(
    "key,name",
    [
        ("run_id", "RUN_ID"),
        ("entry_id_hash", "ENTRY_ID_HASH"),
        ("_private", "PRIVATE"),
        ("9lives", None),
        ("a-b", "A_B"),
    ],
)
def test_field_names(key, name):
    assert journal.journal_field_name(key) == name
