"""Three real daemons on one shared app folder, coordinated through a real redis-server.

Each member has its own settings (its member name), state folder (``XDG_STATE_HOME``) and
jobs.log; the data folder is shared.  The vault job (tests/support/coord_jobs.py) runs every
second for half a second and appends a line to the shared ``commits`` file only after its
fencing check: the commits are what a shared file would have received.  What is asserted is
what docs/coordination.md promises, fault by fault.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.alert_fixtures import webhook_receiver
from tests.support.daemon import AppHome, DaemonProcess, wait_for

LEASE = 2.0
JOB = "vault_tick"


class Member(AppHome):
    """A machine of the group: the shared HOME's data folder, its own config, state and runtime folders."""

    def __init__(self, shared: Path, name: str):
        super().__init__(shared)
        self.name = name
        self.own = shared / "machines" / name
        self.config_dir = self.own / "config" / "secure-password-manager"
        self.runtime_dir = self.own / "run"
        for folder in (self.config_dir, self.runtime_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def jobs_log(self) -> Path:
        return self.own / "logs" / "jobs.log"

    @property
    def history_path(self) -> Path:
        return self.own / "state" / "pmjobsd" / self.name / "history.db"

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(XDG_CONFIG_HOME=str(self.own / "config"), XDG_STATE_HOME=str(self.own / "state"))
        return env

    def configure(self, url: str, alerts: dict | None = None, **job) -> None:
        definition = {
            "callable": "tests.support.coord_jobs:vault_tick",
            "cron": "* * * * * *",
            "scope": "vault",
            "on_holder_lost": "retry",
            "catch_up": False,
            "timeout": 10,
            "options": {"member": self.name},
            **job,
        }
        coordination = {"url": url, "group": "home-vault", "member": self.name, "lease": LEASE}
        self.write_settings(
            {
                "coordination": coordination,
                "paths": {"log_dir": str(self.own / "logs")},
                "alerts": alerts or {"desktop": False},
                "definitions": {JOB: definition},
            }
        )

    def rows(self) -> list[dict]:
        if not self.history_path.exists():
            return []
        with sqlite3.connect(self.history_path) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute("SELECT * FROM runs WHERE job = ?", (JOB,))]


def _lines(path: Path) -> list[tuple[str, str, int]]:
    if not path.exists():
        return []
    return [
        (slot, member, 0 if token == "None" else int(token))
        for slot, member, token in (line.split() for line in path.read_text().splitlines())
    ]


class Group:
    def __init__(self, root: Path, url: str, names=("laptop", "desktop", "nas")):
        self.root = root
        self.members = [Member(root, name) for name in names]
        for member in self.members:
            member.configure(url)
        self.daemons: dict[str, DaemonProcess] = {}
        self.coord = self.members[0].data_dir / "coord"

    def start(self) -> float:
        for member in self.members:
            self.daemons[member.name] = DaemonProcess(member)
        for member in self.members:
            self.daemons[member.name].wait_ready(30)
        return time.time()

    def stop(self) -> float:
        stopped = time.time()
        for daemon in self.daemons.values():
            if daemon.proc.poll() is None:
                daemon.signal(signal.SIGTERM)
        for daemon in self.daemons.values():
            daemon.stop(30)
        return stopped

    def commits(self) -> list[tuple[str, str, int]]:
        return _lines(self.coord / "commits")

    def starts(self) -> list[tuple[str, str, int]]:
        return _lines(self.coord / "starts")

    def rows(self) -> list[dict]:
        return [dict(row, history=member.name) for member in self.members for row in member.rows()]


def _slots_between(first: float, last: float) -> list[str]:
    """Every one-second slot from ``first`` to ``last`` (epoch seconds), named as the daemons name them."""
    from pmjobsd.core.timestamps import utc_iso

    return [utc_iso(float(second)) for second in range(int(first) + 1, int(last))]


def _duplicates(commits) -> dict[str, int]:
    return {slot: n for slot, n in Counter(slot for slot, _, _ in commits).items() if n > 1}


def _recorded(rows) -> set[str]:
    """Slots some history has a finished row for (who ran it, or why it was not run)."""
    return {row["slot_utc"] for row in rows if row["status"] != "RUNNING"}


def _with_utc(rows):
    """The rows with ``slot_utc``: their slot as the daemons name it (the history keeps the job's zone)."""
    from pmjobsd.core.timestamps import utc_iso

    for row in rows:
        row["slot_utc"] = utc_iso(datetime.fromisoformat(row["slot"]).timestamp()) if row["slot"] else None
    return rows


@pytest.fixture
def group(tmp_path, redis_server):
    made = Group(tmp_path, redis_server.url)
    yield made
    for daemon in made.daemons.values():
        if daemon.proc.poll() is None:
            daemon.kill()


def test_three_daemons_run_every_slot_of_a_vault_job_exactly_once_for_a_minute(group):
    ready = group.start()
    time.sleep(60)
    stopped = group.stop()
    commits = group.commits()
    rows = _with_utc(group.rows())
    window = _slots_between(ready + 1, stopped - 2)
    committed = {slot: (member, token) for slot, member, token in commits}
    assert not _duplicates(commits)
    missing = [slot for slot in window if slot not in committed]
    assert not missing, f"{len(missing)} of {len(window)} slots never ran: {missing[:5]}"
    assert len({member for member, _ in committed.values()}) >= 2  # the work is shared, not one machine's
    # Every history tells the same story: the runner's row names itself, the others' name the runner.
    for slot in window:
        member, token = committed[slot]
        ran = [row for row in rows if row["slot_utc"] == slot and row["status"] == "OK"]
        assert [(row["history"], row["member"], row["token"]) for row in ran] == [(member, member, token)]
        for row in rows:
            if row["slot_utc"] == slot and row["status"] == "SKIPPED":
                assert (row["member"], row["token"]) == (member, token), row
    tokens = [token for _, _, token in sorted(commits)]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)  # fencing tokens only ever grow


def test_a_member_killed_mid_run_has_its_slot_taken_over_after_the_lease(group):
    ready = group.start()
    time.sleep(4)
    # Kill whichever member starts a run next, while it runs (a start line without its commit yet).
    seen = len(group.starts())
    victim_slot, victim, victim_token = wait_for(lambda: group.starts()[seen:][:1], 10, 0.01, "a run to start")[0]
    group.daemons[victim].proc.send_signal(signal.SIGKILL)
    group.daemons[victim].proc.wait(10)
    killed_at = time.time()
    time.sleep(12)
    stopped = group.stop()
    commits = group.commits()
    assert not _duplicates(commits)
    takeover = [(member, token) for slot, member, token in commits if slot == victim_slot]
    assert len(takeover) == 1, f"the killed member's slot was committed {len(takeover)} times"
    assert takeover[0][0] != victim and takeover[0][1] > victim_token
    taken_at = datetime.fromisoformat(victim_slot).timestamp()
    assert any(slot == victim_slot for slot, _, _ in group.starts()[seen + 1 :])
    rows = _with_utc(group.rows())
    takeover_rows = [r for r in rows if r["slot_utc"] == victim_slot and r["status"] == "OK"]
    assert len(takeover_rows) == 1 and takeover_rows[0]["started_at"] - taken_at >= LEASE * 0.5
    # None lost without a record: every slot ran, or some history says why not.
    window = _slots_between(ready + 1, stopped - 2)
    committed = {slot for slot, _, _ in commits}
    unaccounted = [slot for slot in window if slot not in committed and slot not in _recorded(rows)]
    assert not unaccounted, unaccounted
    assert killed_at - ready < 20


def test_a_paused_engine_skips_vault_runs_with_a_record_and_never_runs_a_slot_twice(group, redis_server):
    server, alerts = webhook_receiver()
    group.members[0].configure(
        redis_server.url, alerts={"desktop": False, "targets": [f"json://127.0.0.1:{server.server_port}/hook"]}
    )
    group.start()
    time.sleep(4)
    paused_at = time.time()
    redis_server.pause()
    time.sleep(2 * LEASE + 1)
    redis_server.resume()
    resumed_at = time.time()
    time.sleep(6)
    stopped = group.stop()
    commits = group.commits()
    assert not _duplicates(commits)
    rows = _with_utc(group.rows())
    during = _slots_between(paused_at + 1, resumed_at - 1)
    skipped = {row["slot_utc"] for row in rows if row["status"] == "WARN" and "unreachable" in row["summary"]}
    assert set(during) <= skipped | {slot for slot, _, _ in commits}
    after = _slots_between(resumed_at + 3, stopped - 1)
    assert set(after) <= {slot for slot, _, _ in commits}, "runs did not resume after the engine came back"
    for member in group.members:  # said once per change of state, not once per attempt
        assert len(member.events("coordination.engine_down")) == 1, member.name
        assert len(member.events("coordination.engine_up")) == 1, member.name
    # One alert for the outage, one recovery: not one per skipped run.
    wait_for(lambda: len(alerts.snapshot()) >= 2, message="the engine alert and its recovery")
    titles = [json.loads(entry["body"])["title"] for entry in alerts.snapshot()]
    server.shutdown()
    assert titles == ["pmjobsd: pmjobsd coordination FAIL", "pmjobsd: pmjobsd coordination recovered (OK)"], titles


def test_a_restarted_engine_that_lost_every_key_keeps_tokens_growing(group, redis_server):
    ready = group.start()
    time.sleep(4)
    redis_server.restart()
    restarted_at = time.time()
    time.sleep(8)
    stopped = group.stop()
    commits = group.commits()
    # A slot running at the moment of the restart may run twice (docs/coordination.md); no other.
    duplicates = _duplicates(commits)
    assert sum(n - 1 for n in duplicates.values()) <= 1, duplicates
    for slot in duplicates:
        assert abs(datetime.fromisoformat(slot).timestamp() - restarted_at) < LEASE + 1.5
    by_slot = sorted(commits)
    first_tokens = [token for slot, _, token in by_slot if slot not in duplicates]
    assert first_tokens == sorted(first_tokens)  # the counter was lost, the tokens still grow
    rows = _with_utc(group.rows())
    window = _slots_between(ready + 1, stopped - 2)
    committed = {slot for slot, _, _ in commits}
    assert not [slot for slot in window if slot not in committed and slot not in _recorded(rows)]
    after = _slots_between(restarted_at + 3, stopped - 1)
    assert set(after) <= committed


def test_without_a_reachable_engine_run_local_runs_here_alone(tmp_path):
    member = Member(tmp_path, "laptop")
    member.configure("redis://127.0.0.1:9/0", when_engine_down="run_local")  # port 9: nothing listens
    daemon = DaemonProcess(member).wait_ready(30)
    try:
        wait_for(lambda: len(_lines(member.data_dir / "coord" / "commits")) >= 2, 15, message="two local runs")
        assert daemon.proc.poll() is None
        code, document = member.status()
    finally:
        daemon.stop()
    coordination = document["coordination"]
    assert (coordination["reachable"], coordination["member"], coordination["group"]) == (False, "laptop", "home-vault")
    assert coordination["engine_down_local"] >= 2 and code >= 1
    assert [job["scope"] for job in document["jobs"] if job["name"] == JOB] == ["vault"]
    assert len(member.events("coordination.engine_down")) == 1
    assert member.history_path.exists() and not (member.data_dir / "jobs" / "history.db").exists()
