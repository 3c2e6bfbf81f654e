"""The outcome vocabulary: every word has every meaning, and the words read and print as their values."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import msgspec
import pytest

from pmjobsd import api
from pmjobsd.core.outcomes import JobState, Overlap, Severity, Status, Trigger
from pmjobsd.core.settings import JobDefinition
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.core.validation import validate


@pytest.mark.parametrize("status", list(Status))
def test_every_status_has_a_severity_an_event_a_level_and_a_metric_code(status):
    assert isinstance(status.severity, Severity)
    assert status.event.startswith("job.") and status.log_level in (logging.INFO, logging.WARNING, logging.ERROR)
    assert status.metric_code == (None if status is Status.RUNNING else status.severity)
    assert not (status.failed and status.succeeded)
    assert status.conclusive == (status.failed or status.succeeded)


def test_what_each_status_means():
    assert {status for status in Status if status.failed} == {Status.FAIL, Status.TIMEOUT}
    assert {status for status in Status if status.succeeded} == {Status.OK, Status.WARN}
    assert {status for status in Status if status.returnable} == {Status.OK, Status.WARN, Status.FAIL}
    assert [status.severity for status in Status] == [
        0,
        1,
        2,
        2,
        1,
        0,
        0,
    ]  # OK WARN FAIL TIMEOUT INTERRUPTED RUNNING SKIPPED
    events = {status: status.event for status in Status}
    assert events == {
        Status.OK: "job.succeeded",
        Status.WARN: "job.succeeded",
        Status.FAIL: "job.failed",
        Status.TIMEOUT: "job.timeout",
        Status.INTERRUPTED: "job.failed",
        Status.RUNNING: "job.started",
        Status.SKIPPED: "job.skipped",
    }
    assert [Status.of_severity(severity) for severity in Severity] == [Status.OK, Status.WARN, Status.FAIL]


@pytest.mark.parametrize("state", list(JobState))
def test_every_job_state_has_a_severity(state):
    assert isinstance(state.severity, Severity)
    assert state.metric_code in (None, state.severity)


def test_job_states():
    assert [state.severity for state in JobState] == [0, 1, 2, 0, 0, 0]  # OK WARN FAIL RUNNING NEVER_RUN DISABLED
    assert [state for state in JobState if state.verdict is not None] == [JobState.OK, JobState.WARN, JobState.FAIL]
    assert JobState.severity_of("FAIL") == Severity.FAIL and JobState.severity_of("NEVER_RUN") == Severity.OK
    assert JobState.severity_of("SOMETHING_NEW") == Severity.FAIL  # a newer daemon's word: not hidden


@pytest.mark.parametrize(
    ("status", "final", "state"),
    [
        (Status.OK, True, JobState.OK),
        (Status.WARN, True, JobState.WARN),
        (Status.FAIL, True, JobState.FAIL),
        (Status.FAIL, False, JobState.WARN),  # a retry is still to come
        (Status.TIMEOUT, True, JobState.FAIL),
        (Status.TIMEOUT, False, JobState.WARN),
        (Status.INTERRUPTED, True, JobState.WARN),
        (Status.RUNNING, True, JobState.RUNNING),
    ],
)
def test_the_state_an_attempt_puts_its_job_in(status, final, state):
    assert JobState.of_attempt(status, final) is state


def test_the_words_read_and_print_as_their_values():
    assert Status("TIMEOUT") is Status.TIMEOUT and Trigger("catch_up") is Trigger.CATCH_UP
    assert Overlap.QUEUE == "queue" and JobState.NEVER_RUN == "NEVER_RUN"
    assert f"{Trigger.RETRY}|{Status.OK:>4}" == "retry|  OK" and str(Overlap.ALLOW) == "allow"
    assert json.dumps([Status.FAIL, Trigger.MANUAL, Severity.WARN]) == '["FAIL", "manual", 1]'
    assert [trigger for trigger in Trigger if trigger.for_slot] == [Trigger.SCHEDULE, Trigger.CATCH_UP]


def test_settings_validation_reads_overlap_from_the_settings_words():
    definition = validate(JobDefinition, {"cron": "@daily", "overlap": "queue"})
    assert definition.overlap is Overlap.QUEUE
    assert validate(JobDefinition, {"cron": "@daily"}).overlap is Overlap.SKIP
    assert msgspec.to_builtins(definition)["overlap"] == "queue"
    # msgspec's "Invalid enum value 'sometimes'" quotes the input; the words say what is expected instead.
    with pytest.raises(ValueError, match="overlap: Expected one of 'skip', 'queue', 'allow'$"):
        validate(JobDefinition, {"cron": "@daily", "overlap": "sometimes"})


def test_the_public_api_exports_the_words_a_job_uses():
    assert api.Status is Status and api.Overlap is Overlap


def test_one_utc_format_that_python_3_10_reads():
    text = utc_iso(1795856400.1239)
    assert text == "2026-11-28T09:00:00.123+00:00"
    assert datetime.fromisoformat(text).timestamp() == pytest.approx(1795856400.123)
    assert utc_iso(None) is None
