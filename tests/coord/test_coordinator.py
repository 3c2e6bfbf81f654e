"""The coordinator against a real redis-server: claims before runs, lost leases, watches, a dead engine."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from pmjobsd.coord import keys
from pmjobsd.coord.claims import Claims
from pmjobsd.coord.coordinator import Coordinator, slot_name
from pmjobsd.coord.engine import connect
from pmjobsd.core.outcomes import Status, Trigger
from pmjobsd.core.runner import RunRequest
from pmjobsd.core.settings import Coordination, load_settings

SLOT = datetime(2026, 12, 1, 20, 30, tzinfo=timezone.utc)


class Log:
    """Collects the coordinator's events (the daemon's would go to jobs.log)."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def _add(self, event, **fields):
        self.events.append((event, fields))

    info = warning = error = _add

    def named(self, event):
        return [fields for name, fields in self.events if name == event]


def _job(tmp_path, **definition):
    path = tmp_path / "settings.json"
    job = {"callable": "tests.support.coord_jobs:vault_tick", "cron": "* * * * *", "scope": "vault", **definition}
    path.write_text(json.dumps({"jobs": {"timezone": "UTC", "definitions": {"tick": job}}}))
    path.chmod(0o600)
    loaded = load_settings(path, import_jobs=False)
    assert loaded.ok, loaded.issues
    return loaded.jobs["tick"]


def _coordinator(url, member="laptop", lease=1.0, **callbacks):
    settings = Coordination(url=url, group="g", member=member, lease=lease)
    log = Log()
    coordinator = Coordinator(settings, log=log, **callbacks)
    coordinator.start()
    return coordinator, log


@pytest.fixture
def made():
    coordinators = []
    yield coordinators
    for coordinator in coordinators:
        coordinator.close()


def test_a_dead_engine_skips_quickly_says_so_once_and_alerts_once(tmp_path, made):
    alerts = []
    coordinator, log = _coordinator("redis://127.0.0.1:9/0", on_engine_alert=lambda down, text: alerts.append(down))
    made.append(coordinator)
    job = _job(tmp_path)
    started = time.monotonic()
    decisions = [coordinator.begin(RunRequest(job, Trigger.SCHEDULE, SLOT), threading.Event()) for _ in range(5)]
    assert time.monotonic() - started < 2 * coordinator.timeout + 0.5  # never blocks the runner for long
    assert {(d.run, d.status) for d in decisions} == {(False, Status.WARN)}
    assert "unreachable" in decisions[0].summary
    assert len(log.named("coordination.engine_down")) == 1 and alerts == [True]
    state = coordinator.state.snapshot()
    assert (state.reachable, state.engine_down_skips) == (False, 5) and state.reconnect_at is not None


def test_run_local_runs_without_a_token_when_the_engine_is_down(tmp_path, made):
    coordinator, _ = _coordinator("redis://127.0.0.1:9/0")
    made.append(coordinator)
    decision = coordinator.begin(
        RunRequest(_job(tmp_path, when_engine_down="run_local"), Trigger.SCHEDULE, SLOT), threading.Event()
    )
    assert decision.run and decision.token is None and decision.lease is None and decision.fence()


def test_a_device_job_is_not_coordinated(tmp_path, redis_server, made):
    coordinator, _ = _coordinator(redis_server.url)
    made.append(coordinator)
    assert (
        coordinator.begin(RunRequest(_job(tmp_path, scope="device"), Trigger.SCHEDULE, SLOT), threading.Event()) is None
    )


def test_a_lease_taken_by_another_member_cancels_the_run(tmp_path, redis_server, made):
    coordinator, log = _coordinator(redis_server.url)
    made.append(coordinator)
    cancel = threading.Event()
    decision = coordinator.begin(RunRequest(_job(tmp_path), Trigger.SCHEDULE, SLOT), cancel)
    assert decision.run and decision.fence()
    redis_server.client().set(keys.claim("g", "tick", slot_name(SLOT)), f"desktop|{decision.token + 1}|running")
    assert cancel.wait(3), "the run was not told its lease is lost"
    assert decision.lost == "another member took the slot"
    assert coordinator.state.snapshot().leases_lost == 1 and log.named("coordination.lease_lost")


def test_a_lease_that_cannot_be_renewed_is_lost_when_it_runs_out(tmp_path, redis_server, made):
    coordinator, _ = _coordinator(redis_server.url)
    made.append(coordinator)
    cancel = threading.Event()
    claimed = time.monotonic()
    decision = coordinator.begin(RunRequest(_job(tmp_path), Trigger.SCHEDULE, SLOT), cancel)
    redis_server.pause()
    try:
        assert cancel.wait(4)
        assert time.monotonic() - claimed < 1.0  # told before the lease (1 s) can free the slot elsewhere
        assert "unreachable" in decision.lost
        assert not decision.fence()  # the engine cannot vouch for the token: do not commit
    finally:
        redis_server.resume()


def test_a_held_slot_is_watched_and_taken_over_when_its_holder_vanishes(tmp_path, redis_server, made):
    taken = threading.Event()
    coordinator, log = _coordinator(redis_server.url, on_takeover=lambda job, slot: taken.set() or True)
    made.append(coordinator)
    holder = Claims(connect(redis_server.url, member="desktop", timeout=2), group="g", member="desktop", lease=1.0)
    held = holder.claim("tick", slot_name(SLOT))
    decision = coordinator.begin(
        RunRequest(_job(tmp_path, on_holder_lost="retry"), Trigger.SCHEDULE, SLOT), threading.Event()
    )
    assert (decision.run, decision.status, decision.member, decision.token) == (
        False,
        Status.SKIPPED,
        "desktop",
        held.token,
    )
    assert not taken.wait(0.5)  # still held
    assert taken.wait(3), "the slot of a vanished holder was not taken over"
    assert log.named("coordination.holder_lost")[0]["holder"] == "desktop"


def test_a_finished_slot_is_not_taken_over_and_skip_records_a_lost_holder(tmp_path, redis_server, made):
    outcomes = []
    coordinator, _ = _coordinator(
        redis_server.url,
        on_takeover=lambda job, slot: outcomes.append("takeover") or True,
        on_lost_skip=lambda job, slot, value: outcomes.append(("skip", value.member)),
    )
    made.append(coordinator)
    holder = Claims(connect(redis_server.url, member="desktop", timeout=2), group="g", member="desktop", lease=1.0)
    done = holder.claim("tick", slot_name(SLOT))
    job = _job(tmp_path, on_holder_lost="skip")
    coordinator.begin(RunRequest(job, Trigger.SCHEDULE, SLOT), threading.Event())
    holder.finish(done, "done", keep_for=60)
    other = datetime(2026, 12, 1, 20, 31, tzinfo=timezone.utc)
    holder.claim("tick", slot_name(other))  # never renewed: its holder is gone
    coordinator.begin(RunRequest(job, Trigger.SCHEDULE, other), threading.Event())
    time.sleep(2.5)
    assert outcomes == [("skip", "desktop")]


def test_a_takeover_the_runner_cannot_take_yet_is_offered_again(tmp_path, redis_server, made):
    offers = []
    coordinator, log = _coordinator(
        redis_server.url, on_takeover=lambda job, slot: offers.append(slot) or len(offers) > 2
    )
    made.append(coordinator)
    holder = Claims(connect(redis_server.url, member="desktop", timeout=2), group="g", member="desktop", lease=1.0)
    holder.claim("tick", slot_name(SLOT))
    coordinator.begin(RunRequest(_job(tmp_path, on_holder_lost="retry"), Trigger.SCHEDULE, SLOT), threading.Event())
    deadline = time.monotonic() + 5
    while len(offers) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    assert offers == [SLOT] * 3  # busy twice, taken the third time, then no more
    assert len(log.named("coordination.holder_lost")) == 1


def _ended(coordinator, request, status, final=True):
    from pmjobsd.core.observers import RunRecord

    decision = coordinator.begin(request, threading.Event())
    assert decision.run and decision.lease is not None
    record = RunRecord(request.run_id, "tick", 1, request.trigger, request.slot, time.time(), status, time.time())
    record.final = final
    decision.end(record)
    return decision


def test_a_finished_slot_stays_done_past_the_jobs_next_slot_and_a_stopped_one_is_given_up(tmp_path, redis_server, made):
    coordinator, _ = _coordinator(redis_server.url, lease=2.0)
    made.append(coordinator)
    client = redis_server.client()
    job = _job(tmp_path)  # every minute
    now = datetime.now(timezone.utc)
    slot = now.replace(second=0, microsecond=0)
    key = keys.claim("g", "tick", slot_name(slot))
    done = _ended(coordinator, RunRequest(job, Trigger.SCHEDULE, slot), Status.OK)
    assert client.get(key) == f"laptop|{done.token}|done"
    until_next = (slot.timestamp() + 60) - time.time()
    assert until_next + 60 < client.pttl(key) / 1000 <= until_next + 2 * 2.0 + 60 + 1
    later = slot + timedelta(minutes=1)
    _ended(coordinator, RunRequest(job, Trigger.SCHEDULE, later), Status.INTERRUPTED)
    assert client.get(keys.claim("g", "tick", slot_name(later))) is None  # another member may run it now
    retried = _ended(coordinator, RunRequest(job, Trigger.SCHEDULE, SLOT), Status.FAIL, final=False)
    assert client.get(keys.claim("g", "tick", slot_name(SLOT))) == f"laptop|{retried.token}|retry"
    assert coordinator.state.snapshot().leases_held == 0


def test_a_manual_run_of_a_vault_job_gets_a_token_of_its_own_and_gives_it_back(tmp_path, redis_server, made):
    coordinator, _ = _coordinator(redis_server.url)
    made.append(coordinator)
    request = RunRequest(_job(tmp_path), Trigger.MANUAL)
    decision = _ended(coordinator, request, Status.OK)
    assert decision.slot == f"manual-{request.run_id}" and decision.token
    assert redis_server.client().get(keys.claim("g", "tick", decision.slot)) is None
