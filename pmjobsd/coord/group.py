"""This daemon's side of the group view: its heartbeat and the runs it publishes (docs/coordination.md).

:class:`Heartbeat` keeps ``pmjobsd:<group>:member:<member>`` alive on its own
thread and its own Redis client: a hash (host, version, pid, instance id,
started, the server's time of the beat) that expires after a few beats, so a
member that stops beating shows as lost.  It also notices a second daemon
beating under the same member name (the key's instance id is not ours) and
reports it through :class:`~pmjobsd.coord.state.CoordinationState`, once in
jobs.log and through ``on_duplicate`` (the daemon's alert).

:class:`RunPublisher` is a run observer: each finished attempt of a vault job
goes to the group's stream (``XADD ... MAXLEN ~``) from a thread of its own,
so a slow or unreachable Redis never holds up the runner.  An entry holds the
job's name, slot, member, host, status, start, duration, attempt, trigger, run
id and fencing token -- never a summary, an error or anything read from the vault.

:class:`GroupMember` bundles both as the one observer the daemon adds.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pmjobsd import __version__
from pmjobsd.coord import engine, keys
from pmjobsd.coord.state import CoordinationState
from pmjobsd.core.observers import NullObserver, RunRecord
from pmjobsd.core.privacy import scrub_text
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.observe.joblog import EventLogger

if TYPE_CHECKING:
    import redis

    from pmjobsd.core.settings import Coordination

STREAM_LENGTH = 10_000  # entries kept in the run stream (approximately: MAXLEN ~)
MEMBER_MEMORY_S = 7 * 86400  # a member not seen for this long leaves the group view
BEATS_PER_TTL = 3  # the member key outlives this many missed beats
HOST_LIMIT = 100  # characters of a host name read back from Redis

# One atomic step per beat: read who held the member key, write ours, stamp it with the server's
# clock (one clock for the whole group, whatever the machines' clocks say) and remember the member.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local prev = redis.call('HMGET', KEYS[1], 'instance', 'host', 'pid', 'stopped')
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'host', ARGV[2], 'version', ARGV[3], 'pid', ARGV[4],
           'started', ARGV[5], 'beat', string.format('%.3f', now), 'duplicate', ARGV[6], 'stopped', '')
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], now, ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[9]))
return {prev[1] or '', prev[2] or '', prev[3] or '', prev[4] or '', string.format('%.3f', now)}
"""

# A clean stop marks the key stopped (kept as long as the member is remembered), if it is still ours.
_STOP = """
if redis.call('HGET', KEYS[1], 'instance') ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'stopped', t[1], 'duplicate', '')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def beat_interval(lease: float) -> float:
    """Seconds between beats for a claim lease of ``lease`` seconds: a third of it, 1 to 10 s."""
    return max(1.0, min(10.0, lease / 3))


def error_text(exc: BaseException) -> str:
    """An engine error for logs and status: its type and message, scrubbed, one short line."""
    return scrub_text(f"{type(exc).__name__}: {exc}")[:200]


def pid_alive(pid: int) -> bool:
    """Is there a process ``pid`` on this machine (one of another user's counts)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Sighting:
    """Another daemon's beat found under our member name."""

    host: str
    pid: str

    def describe(self) -> str:
        return f"another daemon on {self.host or '?'} (pid {self.pid or '?'}) uses this member name"


class Heartbeat:
    """Beats every :func:`beat_interval` seconds on its own thread; :meth:`beat` once for tests.

    Never raises out of the thread: an unreachable engine is logged once (and
    again once it answers), and ``last_heartbeat`` in the state stops moving.
    """

    def __init__(
        self,
        url: str,
        group: str,
        member: str,
        lease: float,
        state: CoordinationState,
        *,
        log: EventLogger | None = None,
        on_duplicate: Callable[[str | None], None] | None = None,
        host: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        pid_alive: Callable[[int], bool] = pid_alive,
    ):
        self.group, self.member, self.state = group, member, state
        self.interval = beat_interval(lease)
        self.ttl = self.interval * BEATS_PER_TTL
        self.log = log or EventLogger("coordination")
        self.on_duplicate = on_duplicate
        self.host = (host or socket.gethostname())[:HOST_LIMIT]
        self.instance = uuid.uuid4().hex
        self.pid = os.getpid()
        self.started = time.time()
        self.clock, self.pid_alive = clock, pid_alive
        self.client: redis.Redis = engine.connect(url, member=member, timeout=min(2.0, self.interval))
        self._script = self.client.register_script(_BEAT)
        self._failing = False
        self._sighted_at: float | None = None
        self._duplicate: Sighting | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="pmjobsd-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self.interval):
                return

    def beat(self) -> bool:
        """One beat; True when the engine took it."""
        duplicate = self._duplicate.host if self._duplicate else ""
        args: list[str | int] = [self.instance, self.host, __version__, self.pid, f"{self.started:.3f}", duplicate]
        args += [int(self.ttl * 1000), self.member, MEMBER_MEMORY_S]
        try:
            reply = self._script(keys=[keys.member(self.group, self.member), keys.members(self.group)], args=args)
        except Exception as exc:  # redis-py's errors, and whatever a broken connection raises
            if not self._failing:
                self.log.warning("coordination.heartbeat_failed", member=self.member, error=error_text(exc))
            self._failing = True
            return False  # nothing can be seen now: a duplicate stays reported (no false recovery)
        if self._failing:
            self.log.info("coordination.heartbeat_restored", member=self.member)
            if self._duplicate is not None:
                self._sighted_at = self.clock()  # a whole key's lifetime to see the other again
        self._failing = False
        self.state.update(last_heartbeat=time.time())
        instance, host, pid, stopped, _now = (str(part) for part in reply)
        known = self._duplicate
        self._judge(self._sighting(instance, host[:HOST_LIMIT], pid, stopped))
        if known is None and self._duplicate is not None:
            return self.beat()  # the key says so now, not a beat later (the group view reads it)
        return True

    def _sighting(self, instance: str, host: str, pid: str, stopped: str) -> Sighting | None:
        """The other daemon behind the key we just replaced, if it is one (not us, not our dead predecessor)."""
        if not instance or instance == self.instance or stopped:
            return None
        if host == self.host and pid.isdigit() and not self.pid_alive(int(pid)):
            return None  # our own previous daemon on this machine, killed before its key expired
        return Sighting(host, pid)

    def _judge(self, sighting: Sighting | None) -> None:
        """A duplicate starts with a sighting and ends after a key's lifetime without one.

        Two daemons beating alike overwrite each other's key at every beat, so each
        sees the other at least every other beat; one sighting a lifetime is enough.
        """
        now = self.clock()
        if sighting is not None:
            self._sighted_at = now
            if self._duplicate is None:
                self._duplicate = sighting
                message = sighting.describe()
                self.state.update(duplicate_member=message)
                self.log.error(
                    "coordination.duplicate_member",
                    member=self.member,
                    other_host=sighting.host,
                    other_pid=sighting.pid,
                )
                self._tell(message)
            return
        if self._duplicate is not None and self._sighted_at is not None and now - self._sighted_at > self.ttl:
            self._duplicate = None
            self.state.update(duplicate_member=None)
            self.log.info("coordination.duplicate_member_gone", member=self.member)
            self._tell(None)

    def _tell(self, message: str | None) -> None:
        if self.on_duplicate is None:
            return
        try:
            self.on_duplicate(message)
        except Exception as exc:  # an alert that cannot be raised must not stop the beats
            self.log.error("coordination.duplicate_alert_failed", error=error_text(exc))

    def stop(self, timeout: float = 2.0) -> None:
        """Stop beating and mark the member stopped (if the key is still ours); never raises."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.client.eval(_STOP, 1, keys.member(self.group, self.member), self.instance, MEMBER_MEMORY_S)
        except Exception:  # the engine is down: the key expires by itself and the member shows lost
            pass
        finally:
            self.client.close()


def run_entry(record: RunRecord, member: str, host: str, token: int | None = None) -> dict[str, str]:
    """The stream entry of a finished attempt: names, times, status and counts only."""
    return {
        "job": record.job,
        "slot": utc_iso(record.slot.timestamp()) if record.slot is not None else "",
        "member": member,
        "host": host,
        "status": record.status.value,
        "trigger": record.trigger.value,
        "attempt": str(record.attempt),
        "final": "1" if record.final else "0",
        "started": utc_iso(record.started_at),
        "duration_ms": "" if record.duration_ms is None else str(record.duration_ms),
        "run_id": record.run_id,
        "token": "" if token is None else str(token),
    }


def _token_of(record: RunRecord) -> int | None:
    """The fencing token the run held, when the claim side recorded one on the record."""
    token = getattr(record, "token", None)
    return token if isinstance(token, int) and not isinstance(token, bool) else None


class RunPublisher(NullObserver):
    """Publishes each finished attempt of a vault job to the group's stream, from its own thread.

    Only the runs this member ran are published: a slot another member held
    is that member's to publish.  ``run_finished`` only queues (bounded: the oldest entry is dropped when the
    engine has been down long enough to fill it, and the drop is counted in the log).
    """

    def __init__(
        self,
        url: str,
        group: str,
        member: str,
        *,
        is_vault: Callable[[str], bool],
        log: EventLogger | None = None,
        host: str | None = None,
        maxlen: int = STREAM_LENGTH,
        queue_size: int = 1000,
        timeout: float = 2.0,
        retry_s: float = 1.0,
    ):
        self.group, self.member, self.is_vault = group, member, is_vault
        self.host = (host or socket.gethostname())[:HOST_LIMIT]
        self.log = log or EventLogger("coordination")
        self.maxlen, self.retry_s = maxlen, retry_s
        self.client: redis.Redis = engine.connect(url, member=member, timeout=timeout)
        self._queue: queue.Queue[dict[str, str] | None] = queue.Queue(queue_size)
        self._dropped = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pmjobsd-group-stream", daemon=True)
        self._thread.start()

    def run_finished(self, record: RunRecord) -> None:
        if record.given_up or not self.is_vault(record.job):
            return  # a given-up retry was published when its attempt ended
        if getattr(record, "member", None) not in (None, self.member):
            return  # a slot another member held (SKIPPED here): its holder publishes how it ended
        entry = run_entry(record, self.member, self.host, _token_of(record))
        while True:
            try:
                self._queue.put_nowait(entry)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        failing = False
        pending: dict[str, str] | None = None
        while True:
            if pending is None:
                pending = self._queue.get()
                if pending is None:
                    return
            try:
                self.client.xadd(keys.runs(self.group), pending, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            except Exception as exc:
                if not failing:
                    self.log.warning("coordination.publish_failed", member=self.member, error=error_text(exc))
                failing = True
                if self._closing.wait(self.retry_s):
                    return  # stopping while the engine is down: the local history keeps the runs
                continue
            pending = None
            if failing or self._dropped:
                self.log.info("coordination.publish_restored", member=self.member, dropped=self._dropped)
                self._dropped = 0
            failing = False

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued (for up to ``timeout`` seconds), then stop."""
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        self._closing.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()) + 0.1)
        self.client.close()


class GroupMember(NullObserver):
    """The heartbeat and the run publisher of one daemon, as the one observer the daemon adds."""

    def __init__(
        self,
        settings: Coordination,
        state: CoordinationState,
        *,
        is_vault: Callable[[str], bool],
        on_duplicate: Callable[[str | None], None] | None = None,
        log: EventLogger | None = None,
    ):
        log = log or EventLogger("coordination")
        member = settings.member_name()
        self.heartbeat = Heartbeat(
            settings.url, settings.group, member, settings.lease, state, log=log, on_duplicate=on_duplicate
        )
        self.publisher = RunPublisher(settings.url, settings.group, member, is_vault=is_vault, log=log)
        self.heartbeat.start()

    def run_finished(self, record: RunRecord) -> None:
        self.publisher.run_finished(record)

    def close(self) -> None:
        self.publisher.close()
        self.heartbeat.stop()
