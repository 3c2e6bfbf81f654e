"""The runner in-process: outcomes, timeouts that free the seat, overlap, observers."""

import sqlite3
import threading
import time
from datetime import timezone

import pytest

from pmjobsd.core.context import JobResult, Status
from pmjobsd.core.cron import CronSchedule
from pmjobsd.core.history import RunHistory
from pmjobsd.core.history_writer import HistoryWriter
from pmjobsd.core.observers import NullObserver
from pmjobsd.core.privacy import EntryIdHasher
from pmjobsd.core.runner import Runner, RunRequest
from pmjobsd.core.settings import JobDefinition, ResolvedJob
from tests.support import sample_jobs
from tests.support.daemon import wait_for
from tests.support.helpers import app_paths


def job(name, func, options=None, **definition):
    return ResolvedJob(
        name,
        JobDefinition(cron="@hourly", callable="tests.support.sample_jobs:ok", **definition),
        func,
        options or {},
        False,
        CronSchedule("@hourly", timezone.utc),
    )


class Recorder(NullObserver):
    def __init__(self):
        self.finished = []

    def run_finished(self, record):
        self.finished.append(record)


class Exploding(NullObserver):
    def run_finished(self, record):
        raise RuntimeError("observer broke")


class Flushed:
    """The history as the tests read it: what the writer thread has been given is written first."""

    def __init__(self, history, writer):
        self.history, self.writer = history, writer

    def __getattr__(self, name):
        assert self.writer.flush(10), "the history writer did not catch up"
        return getattr(self.history, name)


@pytest.fixture
def runner_setup(tmp_path):
    paths = app_paths(tmp_path)
    history = RunHistory(paths.history_path)
    writer = HistoryWriter(paths.history_path, reader=history)
    recorder = Recorder()
    runner = Runner(
        max_workers=1,
        history=writer,
        paths=paths,
        hash_entry_id=EntryIdHasher.from_file(paths.id_key_path),
        observers=[Exploding(), recorder],
    )
    yield runner, Flushed(history, writer), recorder
    runner.shutdown(1)
    writer.close()
    history.close()


def run(runner, resolved, trigger="schedule", overlap="skip"):
    request = RunRequest(resolved, trigger)
    assert runner.offer(request, overlap) is None
    return request


def test_outcomes_are_recorded_and_an_exception_is_a_fail(runner_setup):
    runner, history, recorder = runner_setup
    good = run(runner, job("good", sample_jobs.ok))
    bad = run(runner, job("bad", sample_jobs.fail))
    none = run(runner, job("none", lambda ctx: None))
    wrong = run(runner, job("wrong", lambda ctx: 42))
    for request in (good, bad, none, wrong):
        assert request.done.wait(10)
    assert good.record.status is Status.OK and good.record.summary == "all good"
    assert bad.record.status is Status.FAIL and bad.record.error.startswith("RuntimeError: disk on fire")
    assert "T0KEN" not in bad.record.error and "T0KEN" not in bad.record.summary  # token-bearing URL scrubbed
    assert none.record.status is Status.OK
    assert wrong.record.status is Status.FAIL and "expected JobResult" in wrong.record.summary
    rows = {row["job"]: row for row in history.recent(limit=10)}
    assert rows["bad"]["status"] == "FAIL" and rows["good"]["duration_ms"] is not None
    assert len(recorder.finished) == 4  # the exploding observer did not stop the next one


def test_timeout_frees_the_seat_and_counts_the_abandoned_thread(runner_setup):
    runner, history, _ = runner_setup
    release = threading.Event()

    def stuck(ctx):
        release.wait(30)  # ignores the cancel flag on purpose
        return JobResult.ok("late")

    hung = run(runner, job("hung", stuck, timeout=0.2))
    wait_for(lambda: runner.next_deadline() is not None)
    time.sleep(0.3)
    expired = runner.expire_overdue()
    assert [record.job for record in expired] == ["hung"]
    assert hung.record.status is Status.TIMEOUT
    assert runner.abandoned_count("hung") == 1
    # The only seat is free again although the thread still runs.
    after = run(runner, job("after", sample_jobs.ok))
    assert after.done.wait(10) and after.record.status is Status.OK
    # No new run of the stuck job while its thread lives, whatever the overlap policy.
    assert "still running" in runner.offer(RunRequest(job("hung", stuck), "schedule"), "allow")
    release.set()
    wait_for(lambda: runner.abandoned_count() == 0)
    assert history.recent("hung", 1)[0]["status"] == "TIMEOUT"  # the late result does not overwrite it


def test_overlap_policies(runner_setup):
    runner, _, _ = runner_setup
    runner.resize(3)
    gate = threading.Event()

    def slow(ctx):
        gate.wait(10)

    first = run(runner, job("slow", slow))
    wait_for(lambda: runner.running())
    assert "overlap=skip" in runner.offer(RunRequest(job("slow", slow), "schedule"), "skip")
    queued = RunRequest(job("slow", slow), "schedule")
    assert runner.offer(queued, "queue") is None
    assert "already queued" in runner.offer(RunRequest(job("slow", slow), "schedule"), "queue")
    assert not queued.done.is_set() and len(runner.running()) == 1  # waits for the first
    alongside = RunRequest(job("slow", slow), "schedule")
    assert runner.offer(alongside, "allow") is None
    wait_for(lambda: len(runner.running()) == 2)
    gate.set()
    for request in (first, queued, alongside):
        assert request.done.wait(10)


def test_manual_runs_are_final_and_failures_count(runner_setup):
    runner, history, _ = runner_setup
    for trigger in ("schedule", "manual"):
        request = run(runner, job("flaky", sample_jobs.fail, retries=2), trigger)
        assert request.done.wait(10)
        assert request.record.final is (trigger == "manual")
    assert history.consecutive_failures("flaky") == 1


def test_shutdown_cancels_and_records_what_it_cut_off(runner_setup):
    runner, history, _ = runner_setup
    honours = run(runner, job("sleepy", sample_jobs.sleepy, options={"seconds": 30}))
    wait_for(lambda: runner.running())
    runner.shutdown(5)
    assert honours.record.status is Status.INTERRUPTED
    assert history.recent("sleepy", 1)[0]["status"] == "INTERRUPTED"


def test_a_run_finishing_at_its_deadline_is_not_also_abandoned(runner_setup):
    runner, history, _ = runner_setup
    gate = threading.Event()

    def until_gate(ctx):
        gate.wait(10)
        return JobResult.ok("made it")

    request = run(runner, job("edge", until_gate, timeout=0.2))
    wait_for(lambda: runner.running())
    (active,) = runner.running()
    # The job's own outcome claims the run first; the timeout check comes a moment later.
    assert runner._finish(active, Status.OK, "made it", None, {}, {})
    time.sleep(0.3)
    assert runner.expire_overdue() == []
    assert runner.abandoned_count() == 0 and request.record.status is Status.OK
    gate.set()
    after = RunRequest(job("edge", lambda ctx: None), "schedule")
    assert runner.offer(after, "skip") is None  # the job is not blocked by a phantom abandoned thread
    assert after.done.wait(10) and after.record.status is Status.OK


def test_queued_run_waits_for_an_abandoned_thread(runner_setup):
    runner, _, _ = runner_setup
    release = threading.Event()

    def stuck(ctx):
        release.wait(30)

    first = run(runner, job("q", stuck, timeout=0.2), overlap="queue")
    wait_for(lambda: runner.running())
    queued = RunRequest(job("q", stuck, timeout=0.2), "schedule")
    assert runner.offer(queued, "queue") is None
    time.sleep(0.3)
    assert [r.run_id for r in runner.expire_overdue()] == [first.run_id]
    # The seat is free (a fresh worker took it): a runnable request would start at once...
    other = run(runner, job("other", sample_jobs.ok))
    assert other.done.wait(10)
    assert not runner.running() and not queued.done.is_set()  # ...but the queued one waits for the thread
    release.set()
    wait_for(lambda: queued.done.is_set(), message="queued run after the abandoned thread exited")


def test_give_up_makes_the_last_attempt_final(runner_setup):
    runner, history, recorder = runner_setup
    request = run(runner, job("flaky", sample_jobs.fail, retries=2))
    assert request.done.wait(10) and request.record.final is False
    assert [r.run_id for r in runner.awaiting_retry()] == [request.run_id]
    record = runner.give_up(request.run_id, "retry not started")
    assert record.final and record.consecutive_failures == 1
    assert recorder.finished[-1] is record  # alerts see the final failure
    assert history.recent("flaky", 1)[0]["final"] is True
    assert runner.give_up(request.run_id, "again") is None


def test_a_locked_history_neither_blocks_nor_loses_a_run(runner_setup):
    runner, history, _ = runner_setup
    blocker = sqlite3.connect(history.history.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock, like the app or a stuck tool
    try:
        began = time.monotonic()
        lost = run(runner, job("locked", sample_jobs.ok))
        assert lost.done.wait(10) and lost.record.status is Status.OK
        assert time.monotonic() - began < 3  # the start waits at most durable_wait, the finish not at all
        health = wait_for(lambda: next((h for h in [history.writer.health()] if not h.writable), None), 5)
        assert not health.writable and not health.recording and health.backlog == 1
        assert "locked" in health.error
        after = run(runner, job("after", sample_jobs.ok))  # the only worker is still there
        assert after.done.wait(10) and after.record.status is Status.OK
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    rows = {row["job"]: row for row in history.recent(limit=10)}  # flushed once the lock is gone
    assert rows["locked"]["status"] == "OK" and rows["after"]["status"] == "OK"
    assert history.writer.health().writable and history.writer.health().backlog == 0


def test_a_timeout_sets_the_cancel_flag_so_a_job_that_honours_it_stops(runner_setup):
    """The other timeout tests use jobs that ignore the flag; this one waits on it, as jobs should."""
    runner, history, _ = runner_setup
    seen = threading.Event()

    def polite(ctx):
        if ctx.cancel_event.wait(30):  # returns at once when the runner sets the flag
            seen.set()
        ctx.check_cancelled()
        return JobResult.ok("never cancelled")

    hung = run(runner, job("polite", polite, timeout=0.2))
    wait_for(lambda: runner.next_deadline() is not None)
    time.sleep(0.3)
    assert [record.job for record in runner.expire_overdue()] == ["polite"]
    assert hung.record.status is Status.TIMEOUT
    assert seen.wait(5), "the timed-out run's cancel flag was never set"
    # Its thread returned on its own: nothing is left abandoned, and the job may run again.
    wait_for(lambda: runner.abandoned_count("polite") == 0, timeout=5, message="the cancelled thread to exit")
    again = run(runner, job("polite", lambda ctx: None))
    assert again.done.wait(10) and again.record.status is Status.OK
    assert history.recent("polite", 2)[1]["status"] == "TIMEOUT"  # the late INTERRUPTED did not overwrite it


def test_shutdown_records_a_job_that_ignores_cancel_as_interrupted_after_the_grace(runner_setup):
    """A job that honours cancel records INTERRUPTED by itself; a stubborn one must be cut off by shutdown."""
    runner, history, _ = runner_setup
    release = threading.Event()

    def stubborn(ctx):
        release.wait(30)  # ignores the cancel flag on purpose
        return JobResult.ok("finally done")

    try:
        request = run(runner, job("stubborn", stubborn, timeout=60))
        wait_for(lambda: runner.running())
        began = time.monotonic()
        assert runner.shutdown(0.5) == 1  # one attempt cut off
        assert 0.5 <= time.monotonic() - began < 10  # it waited the grace period, not the 30 s job
        assert request.done.is_set() and request.record.status is Status.INTERRUPTED
        assert history.recent("stubborn", 1)[0]["status"] == "INTERRUPTED"
        assert history.recent("stubborn", 1)[0]["finished_at"] is not None
    finally:
        release.set()


def test_overlap_skip_counts_a_run_still_waiting_in_the_queue(runner_setup):
    """With every worker busy, a run that is queued but not yet running makes the next slot skip."""
    runner, _, _ = runner_setup  # one worker
    gate = threading.Event()

    def blocker(ctx):
        gate.wait(10)

    try:
        busy = run(runner, job("blocker", blocker))
        wait_for(lambda: runner.running(), message="the only worker to be busy")
        queued = run(runner, job("later", sample_jobs.ok))  # waits in the pool queue
        assert not queued.started.is_set() and len(runner.running()) == 1
        reason = runner.offer(RunRequest(job("later", sample_jobs.ok), "schedule"), "skip")
        assert reason is not None and "overlap=skip" in reason
        assert runner.busy("later")
    finally:
        gate.set()
    assert busy.done.wait(10) and queued.done.wait(10)
    wait_for(lambda: not runner.busy("later"))
    assert runner.offer(RunRequest(job("later", sample_jobs.ok), "schedule"), "skip") is None  # free again


def test_a_jobs_own_summary_is_scrubbed_before_it_is_recorded(runner_setup):
    """Not only exception text: a summary the job returns can quote a URL or a credential too."""
    runner, history, _ = runner_setup

    def chatty(ctx):
        return JobResult.warn(
            "posted to https://hooks.example.org/T0KEN/secret with apikey=APIKEY-CANARY-5 "
            "Authorization: Bearer BEARER-CANARY for ops@example.org"
        )

    request = run(runner, job("chatty", chatty))
    assert request.done.wait(10) and request.record.status is Status.WARN
    row = history.recent("chatty", 1)[0]
    for summary in (request.record.summary, row["summary"]):
        assert "https://hooks.example.org/<redacted>" in summary
        for secret in ("T0KEN", "APIKEY-CANARY-5", "BEARER-CANARY", "ops@example.org"):
            assert secret not in summary, summary


def test_a_burst_offered_at_once_keeps_the_overlap_rules_between_its_own_requests(runner_setup):
    runner, history, recorder = runner_setup
    gate = threading.Event()

    def held(ctx):
        gate.wait(10)

    first, second, third = (RunRequest(job("burst", held), "schedule") for _ in range(3))
    queued, extra = RunRequest(job("queued", held), "schedule"), RunRequest(job("queued", held), "schedule")
    reasons = runner.offer_many(
        [(first, "skip"), (second, "skip"), (queued, "queue"), (extra, "queue"), (third, "allow")]
    )
    # The second of a job in the same burst finds the first queued: skipped; queue waits for it once.
    assert reasons[0] is None and "overlap=skip" in reasons[1]
    assert reasons[2] is None and reasons[3] is None  # the first to the pool, the second waits behind it
    assert reasons[4] is None  # allow: alongside
    gate.set()
    for request in (first, queued, extra, third):
        assert request.done.wait(10) and request.record.status is Status.OK
    assert not second.started.is_set() and not second.done.is_set()


def test_a_run_requests_events_let_every_waiter_through_once_set():
    request = RunRequest(job("flag", sample_jobs.ok), "schedule")
    assert not request.done.is_set() and request.done.wait(0.01) is False
    woken = []
    waiters = [threading.Thread(target=lambda: woken.append(request.done.wait(10))) for _ in range(5)]
    for waiter in waiters:
        waiter.start()
    setters = [threading.Thread(target=request.done.set) for _ in range(3)]  # set more than once: harmless
    for setter in setters:
        setter.start()
    for thread in waiters + setters:
        thread.join(10)
    assert woken == [True] * 5 and request.done.is_set() and request.done.wait(0) is True
    assert not hasattr(request.done, "clear"), "a run's flags are never cleared"
