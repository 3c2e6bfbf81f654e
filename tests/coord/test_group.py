"""The heartbeat, duplicate member detection and the run stream, against a real redis-server."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import pytest

from pmjobsd import __version__
from pmjobsd.coord import keys, view
from pmjobsd.coord.group import BEATS_PER_TTL, Heartbeat, RunPublisher, beat_interval, run_entry
from pmjobsd.coord.state import CoordinationState
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import Severity, Status, Trigger
from pmjobsd.observe.joblog import EventLogger
from tests.support.appfixtures import CANARY, assert_no_canary
from tests.support.daemon import wait_for


class Events(logging.Handler):
    """The events an EventLogger emitted (by name)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.names.append(record.getMessage())


@pytest.fixture
def events():
    logger = logging.getLogger(f"test-group-{time.monotonic_ns()}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Events()
    logger.addHandler(handler)
    return EventLogger("coordination", logger), handler


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _beat(server, state, log, **kw):
    kw.setdefault("host", "laptop")
    return Heartbeat(server.url, "g", "laptop", 3.0, state, log=log, **kw)


def _state():
    return CoordinationState("g", "laptop", "redis://127.0.0.1/0")


def test_the_beat_interval_is_a_third_of_the_lease_within_bounds():
    assert (beat_interval(2), beat_interval(30), beat_interval(3600)) == (1.0, 10.0, 10.0)


def test_a_beat_writes_the_member_key_with_a_ttl_and_remembers_the_member(redis_server, events):
    log, _ = events
    state = _state()
    heartbeat = _beat(redis_server, state, log)
    try:
        before = time.time()
        assert heartbeat.beat()
        client = redis_server.client()
        fields = client.hgetall(keys.member("g", "laptop"))
        assert {k: fields[k] for k in ("host", "version", "pid", "instance", "duplicate", "stopped")} == {
            "host": "laptop",
            "version": __version__,
            "pid": str(heartbeat.pid),
            "instance": heartbeat.instance,
            "duplicate": "",
            "stopped": "",
        }
        assert abs(float(fields["started"]) - heartbeat.started) < 0.01
        ttl_ms = client.pttl(keys.member("g", "laptop"))
        assert heartbeat.interval * (BEATS_PER_TTL - 1) * 1000 < ttl_ms <= heartbeat.ttl * 1000
        assert client.zscore(keys.members("g"), "laptop") == pytest.approx(float(fields["beat"]), abs=0.01)
        assert state.snapshot().last_heartbeat >= before
    finally:
        heartbeat.stop()
    fields = redis_server.client().hgetall(keys.member("g", "laptop"))
    assert fields["stopped"], "a clean stop marks the member stopped"
    document = view.read_group(redis_server.client(), "g")
    assert [(m["name"], m["state"]) for m in document["members"]] == [("laptop", "stopped")]


def test_the_thread_keeps_beating_and_stops(redis_server, events):
    log, _ = events
    state = _state()
    heartbeat = _beat(redis_server, state, log).start()
    try:
        first = wait_for(lambda: state.snapshot().last_heartbeat, 5, message="a first beat")
        wait_for(lambda: state.snapshot().last_heartbeat > first, 5, message="a second beat")
    finally:
        started = time.monotonic()
        heartbeat.stop()
    assert time.monotonic() - started < 1.5, "stopping waits for no beat"
    assert not heartbeat._thread.is_alive()


def test_two_daemons_with_one_member_name_both_see_the_duplicate_once(redis_server, events):
    log, handler = events
    clock = FakeClock()
    told_a, told_b = [], []
    state_a, state_b = _state(), _state()
    a = _beat(redis_server, state_a, log, host="desktop", clock=clock, on_duplicate=told_a.append)
    b = _beat(redis_server, state_b, log, host="laptop", clock=clock, on_duplicate=told_b.append)
    try:
        a.beat()
        assert state_a.snapshot().duplicate_member is None, "alone so far"
        for _ in range(3):  # each overwrites the other's key at every beat
            b.beat()
            a.beat()
            clock.now += 1
        assert "laptop" in (state_a.snapshot().duplicate_member or "")
        assert "desktop" in (state_b.snapshot().duplicate_member or "")
        assert len(told_a) == len(told_b) == 1, "told once, not at every beat"
        assert handler.names.count("coordination.duplicate_member") == 2
        fields = redis_server.client().hgetall(keys.member("g", "laptop"))
        assert fields["duplicate"] == "laptop", "the group view shows it too"
        document = view.read_group(redis_server.client(), "g")
        assert view.severity(document) is Severity.FAIL
        # b stops: a keeps seeing its own key; after a key's lifetime the duplicate is over.
        b.stop()
        a.beat()
        assert state_a.snapshot().duplicate_member is not None, "not before a key's lifetime"
        clock.now += a.ttl + 0.1
        a.beat()
        assert state_a.snapshot().duplicate_member is None
        assert told_a == [told_a[0], None]
        assert handler.names.count("coordination.duplicate_member_gone") == 1
    finally:
        a.stop()
        b.stop()


def test_a_killed_predecessor_on_this_machine_is_no_duplicate(redis_server, events):
    log, handler = events
    old = _beat(redis_server, _state(), log)
    old.beat()  # killed -9 now: its key lives on for a few beats
    state = _state()
    new = _beat(redis_server, state, log, pid_alive=lambda pid: False)
    try:
        new.beat()
        new.beat()
        assert state.snapshot().duplicate_member is None
        assert "coordination.duplicate_member" not in handler.names
    finally:
        new.stop()
        old.client.close()


def test_a_cleanly_stopped_member_is_no_duplicate_for_its_successor(redis_server, events):
    log, _ = events
    old = _beat(redis_server, _state(), log, host="elsewhere")
    old.beat()
    old.stop()
    state = _state()
    new = _beat(redis_server, state, log)
    try:
        new.beat()
        assert state.snapshot().duplicate_member is None
    finally:
        new.stop()


def test_the_heartbeat_survives_the_engine_going_away_and_coming_back(redis_server, events):
    log, handler = events
    state = _state()
    heartbeat = _beat(redis_server, state, log)
    try:
        assert heartbeat.beat()
        last = state.snapshot().last_heartbeat
        redis_server.stop()
        assert not heartbeat.beat()
        assert not heartbeat.beat()
        assert state.snapshot().last_heartbeat == last, "an old heartbeat says the engine is not taking it"
        assert handler.names.count("coordination.heartbeat_failed") == 1, "said once"
        redis_server.start()  # same port, every key gone
        assert heartbeat.beat()
        assert state.snapshot().last_heartbeat > last
        assert handler.names.count("coordination.heartbeat_restored") == 1
        assert redis_server.client().exists(keys.member("g", "laptop"))
    finally:
        heartbeat.stop()


def test_a_paused_engine_never_holds_the_beat_longer_than_its_timeout(redis_server, events):
    log, _ = events
    heartbeat = _beat(redis_server, _state(), log)
    try:
        heartbeat.beat()
        redis_server.pause()
        started = time.monotonic()
        assert not heartbeat.beat()
        assert time.monotonic() - started < heartbeat.interval + 1.0
    finally:
        redis_server.resume()
        heartbeat.stop()


def _record(job="breach_cache_refresh", **kw) -> RunRecord:
    slot = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
    fields = dict(
        run_id="r1",
        job=job,
        attempt=1,
        trigger=Trigger.SCHEDULE,
        slot=slot,
        started_at=slot.timestamp() + 0.25,
        status=Status.WARN,
        finished_at=slot.timestamp() + 1.5,
        summary=f"{CANARY}-summary",
        error=f"{CANARY}-error",
        details={"entry": f"{CANARY}-details"},
        metrics={"found": 3.0},
    )
    fields.update(kw)
    return RunRecord(**fields)


def test_a_stream_entry_holds_names_times_and_status_only():
    entry = run_entry(_record(), "laptop", "vm", token=42)
    assert entry == {
        "job": "breach_cache_refresh",
        "slot": "2026-12-01T03:00:00.000+00:00",
        "member": "laptop",
        "host": "vm",
        "status": "WARN",
        "trigger": "schedule",
        "attempt": "1",
        "final": "1",
        "started": "2026-12-01T03:00:00.250+00:00",
        "duration_ms": "1250",
        "run_id": "r1",
        "token": "42",
    }
    assert run_entry(_record(slot=None, trigger=Trigger.MANUAL), "m", "h")["slot"] == ""


def test_the_publisher_streams_vault_runs_only_and_bounds_the_stream(redis_server, events):
    log, _ = events
    publisher = RunPublisher(
        redis_server.url, "g", "laptop", is_vault=lambda job: job != "log_rotation", log=log, host="vm", maxlen=10
    )
    try:
        publisher.run_finished(_record())
        publisher.run_finished(_record(job="log_rotation"))
        publisher.run_finished(_record(given_up=True))  # told again: already published
        for n in range(300):
            publisher.run_finished(_record(run_id=f"bulk{n}", status=Status.OK))
    finally:
        publisher.close()
    client = redis_server.client()
    entries = client.xrange(keys.runs("g"))
    assert 10 <= len(entries) < 300, "MAXLEN ~ keeps the stream near its bound"
    assert {fields["job"] for _, fields in entries} == {"breach_cache_refresh"}
    assert entries[-1][1]["run_id"] == "bulk299"
    assert_no_canary(entries)
    document = view.read_group(client, "g", vault_jobs=["backup_integrity_check"])
    assert [(job["name"], (job["latest"] or {}).get("run_id")) for job in document["jobs"]] == [
        ("backup_integrity_check", None),
        ("breach_cache_refresh", "bulk299"),
    ]


def test_the_publisher_keeps_runs_while_the_engine_is_down(redis_server, events):
    log, handler = events
    redis_server.stop()
    publisher = RunPublisher(redis_server.url, "g", "laptop", is_vault=lambda job: True, log=log, retry_s=0.05)
    try:
        started = time.monotonic()
        publisher.run_finished(_record(run_id="while-down"))
        assert time.monotonic() - started < 0.1, "the runner never waits for the engine"
        wait_for(lambda: "coordination.publish_failed" in handler.names, 5, message="publish_failed")
        redis_server.start()
        client = redis_server.client()
        wait_for(lambda: client.xlen(keys.runs("g")) == 1, 10, message="the queued run published")
        assert client.xrange(keys.runs("g"))[0][1]["run_id"] == "while-down"
        assert handler.names.count("coordination.publish_failed") == 1
        assert "coordination.publish_restored" in handler.names
    finally:
        publisher.close()


def test_closing_with_the_engine_down_does_not_hang(redis_server, events):
    log, _ = events
    redis_server.stop()
    publisher = RunPublisher(redis_server.url, "g", "laptop", is_vault=lambda job: True, log=log, retry_s=0.05)
    publisher.run_finished(_record())
    started = time.monotonic()
    publisher.close(timeout=0.5)
    assert time.monotonic() - started < 2.0


def test_only_runs_this_member_ran_are_published_with_their_fencing_token(redis_server, events):
    log, _ = events
    publisher = RunPublisher(redis_server.url, "g", "laptop", is_vault=lambda job: True, log=log)
    try:
        ours, theirs = _record(run_id="ours"), _record(run_id="theirs")
        ours.member, ours.token = "laptop", 17  # as the claim side records a vault run
        theirs.member, theirs.token = "desktop", 18  # a slot the desktop held: SKIPPED here
        publisher.run_finished(theirs)
        publisher.run_finished(ours)
    finally:
        publisher.close()
    entries = redis_server.client().xrange(keys.runs("g"))
    assert [(f["run_id"], f["member"], f["token"]) for _, f in entries] == [("ours", "laptop", "17")]


def test_an_unreachable_engine_neither_ends_nor_starts_a_duplicate(redis_server, events):
    log, handler = events
    clock = FakeClock()
    told: list = []
    state = _state()
    a = _beat(redis_server, state, log, host="desktop", clock=clock, on_duplicate=told.append)
    b = _beat(redis_server, _state(), log, host="laptop", clock=clock)
    try:
        b.beat()
        a.beat()
        assert state.snapshot().duplicate_member is not None
        redis_server.stop()
        clock.now += 10 * a.ttl
        assert not a.beat()
        assert state.snapshot().duplicate_member is not None, "no recovery while nothing can be seen"
        redis_server.start()  # every key gone; the other daemon still beats
        assert a.beat()
        assert state.snapshot().duplicate_member is not None, "a key's lifetime to see it again"
        b.beat()
        a.beat()
        assert told == [told[0]], "one alert, no flapping"
    finally:
        a.stop()
        b.stop()
