"""The daemon's side of coordination: the claim before a vault run, its lease, the slots it watches.

One :class:`Coordinator` per daemon (created only with ``jobs.coordination``):

* :meth:`begin` (a worker thread, before the job is called) claims the run's
  slot.  Won: the run goes ahead with a fencing token and a lease that one
  background thread renews every third of the lease.  Held or done by another
  member: the run is recorded SKIPPED naming the holder, and the slot is
  watched until the holder finishes or its claim expires; then it is run here
  (``on_holder_lost: retry``) or recorded skipped (``skip``).  Engine
  unreachable: ``when_engine_down`` says skip (a WARN record and an alert) or
  run here alone.
* A lease that cannot be renewed before it runs out, or that another member
  took, is lost: the run's cancel flag is set and the runner records it.
* Every Redis call is bounded by a short timeout; after a failure no call is
  made until the reconnect time (backoff 0.5 s doubling to 5 s), so neither the
  scheduler loop nor a worker ever waits on a dead engine for long.  State
  changes are logged once (``coordination.engine_down`` / ``engine_up``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pmjobsd.coord import engine
from pmjobsd.coord.claims import DONE, RETRY, Claim, Claims, ClaimValue
from pmjobsd.coord.state import CoordinationState
from pmjobsd.core.outcomes import Status
from pmjobsd.core.privacy import scrub_text
from pmjobsd.core.timestamps import utc_iso

if TYPE_CHECKING:
    from pmjobsd.core.observers import RunRecord
    from pmjobsd.core.runner import RunRequest
    from pmjobsd.core.settings import Coordination, ResolvedJob
    from pmjobsd.observe.joblog import EventLogger

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 5.0
DONE_KEEP_MAX = 40 * 86400.0  # a done mark outlives the job's next slot, but never more than this


class EngineDown(Exception):
    """The engine did not answer (or is in its reconnect backoff); ``str()`` says why, without the URL."""


def slot_name(slot: datetime | None) -> str | None:
    """A cron slot as every member names it: UTC ISO 8601 (never the jittered start)."""
    return utc_iso(slot.timestamp()) if slot is not None else None


@dataclass
class Lease:
    """A won claim while its run lasts; ``lost`` says why it was lost (None while held)."""

    claim: Claim
    job: ResolvedJob
    cancel: threading.Event
    expires: float  # monotonic: when the lease runs out unless renewed
    lost: str | None = None


@dataclass(frozen=True)
class Decision:
    """What :meth:`Coordinator.begin` decided: run (``lease`` None: no claim, run here alone) or record.

    The runner asks it, during the run, :meth:`fence` (the job's ``ctx.check_fence``) and
    :attr:`lost`, and tells it :meth:`end`.
    """

    run: bool
    slot: str
    member: str | None = None  # who runs (or ran) the slot
    token: int | None = None
    lease: Lease | None = None
    status: Status | None = None  # when not run: what to record
    summary: str = ""
    coordinator: Coordinator | None = field(default=None, repr=False, compare=False)

    @property
    def lost(self) -> str | None:
        """Why the lease was lost (the run was told to stop), or None."""
        return self.lease.lost if self.lease is not None else None

    def fence(self) -> bool:
        """Is this run's token still the newest of its slot (nobody took the slot over)?"""
        if self.lease is None or self.coordinator is None:
            return True  # run here alone (when_engine_down=run_local): nothing to fence against
        return self.coordinator.fence(self.lease)

    def end(self, record: RunRecord) -> None:
        if self.lease is not None and self.coordinator is not None:
            self.coordinator.end(self.lease, record)


@dataclass
class _Watch:
    job: ResolvedJob
    slot: datetime
    last: ClaimValue
    until: float  # monotonic: stop watching then


@dataclass
class _Connection:
    down_since: float | None = None
    backoff: float = BACKOFF_INITIAL
    retry_at: float = 0.0  # monotonic: no call before this while down
    error: str | None = None
    alerted: bool = False  # a skip of this outage raised the engine alert
    lock: threading.Lock = field(default_factory=threading.Lock)


class Coordinator:
    """Claims, leases and watches for one daemon (see the module docstring)."""

    def __init__(
        self,
        settings: Coordination,
        *,
        log: EventLogger,
        state: CoordinationState | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float | None = None,
        on_takeover: Callable[[ResolvedJob, datetime], bool] = lambda job, slot: True,
        on_lost_skip: Callable[[ResolvedJob, datetime, ClaimValue], None] = lambda job, slot, value: None,
        on_engine_alert: Callable[[bool, str], None] = lambda down, summary: None,
    ):
        self.settings = settings
        self.member = settings.member_name()
        self.log = log
        self.url = engine.display_url(settings.url)
        self.state = state or CoordinationState(settings.group, self.member, self.url)
        # A call waits at most this long: a third of the lease, at most 1 s.
        self.timeout = timeout if timeout is not None else min(1.0, settings.lease / 3)
        self.client = engine.connect(settings.url, member=self.member, timeout=self.timeout)
        self.claims = Claims(self.client, group=settings.group, member=self.member, lease=settings.lease, clock=clock)
        self.on_takeover, self.on_lost_skip, self.on_engine_alert = on_takeover, on_lost_skip, on_engine_alert
        self._conn = _Connection()
        self._lock = threading.Lock()
        self._leases: dict[int, Lease] = {}  # id(lease) -> lease
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tick = max(0.1, min(1.0, settings.lease / 3))

    # --- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Say whether the engine answers, then start the lease and watch thread."""
        try:
            self._call(lambda claims: claims.client.ping())
            self.state.update(reachable=True, reconnect_at=None, last_error=None)
            self.log.info("coordination.connected", engine=self.url, group=self.settings.group, member=self.member)
        except EngineDown:
            pass  # said by _down
        self._thread = threading.Thread(target=self._run, name="pmjobsd-coordination", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.client.close()
        except Exception:  # closing a connection to a dead server: nothing to do
            pass

    # --- the engine -----------------------------------------------------------------------
    def _call(self, step: Callable[[Claims], Any]) -> Any:
        """``step(claims)``, or EngineDown at once while the engine is in its backoff."""
        import redis

        conn = self._conn
        if conn.down_since is not None and time.monotonic() < conn.retry_at:
            raise EngineDown(conn.error or "unreachable")
        try:
            result = step(self.claims)
        except (redis.RedisError, OSError, ValueError) as exc:
            self._down(exc)
            raise EngineDown(conn.error or "unreachable") from None
        if conn.down_since is not None:
            self._up()
        return result

    def _down(self, exc: BaseException) -> None:
        conn = self._conn
        error = scrub_text(f"{type(exc).__name__}: {exc}")[:200].replace(self.settings.url, self.url)
        with conn.lock:
            first = conn.down_since is None
            if first:
                conn.down_since, conn.backoff = time.time(), BACKOFF_INITIAL
            else:
                conn.backoff = min(BACKOFF_MAX, conn.backoff * 2)
            conn.retry_at = time.monotonic() + conn.backoff
            conn.error = error
        changes: dict[str, Any] = {"reachable": False, "reconnect_at": time.time() + conn.backoff, "last_error": error}
        if first:
            changes["reachable_since"] = conn.down_since  # also when it never answered since the start
        self.state.update(**changes)
        if first:
            self.log.warning("coordination.engine_down", engine=self.url, error=error, retry_in_s=conn.backoff)

    def _up(self) -> None:
        conn = self._conn
        with conn.lock:
            if conn.down_since is None:
                return
            down_for = time.time() - conn.down_since
            conn.down_since, conn.error, conn.backoff = None, None, BACKOFF_INITIAL
            alerted, conn.alerted = conn.alerted, False
        self.state.update(reachable=True, reconnect_at=None, last_error=None)
        self.log.info("coordination.engine_up", engine=self.url, down_s=round(down_for, 3))
        if alerted:
            self.on_engine_alert(False, "the coordination engine answers again")

    # --- before a run -------------------------------------------------------------------------
    def begin(self, request: RunRequest, cancel: threading.Event) -> Decision | None:
        """Claim the slot of ``request`` (None: not a vault job, nothing to coordinate)."""
        job = request.job
        if job.definition.scope != "vault":
            return None
        slot = slot_name(request.slot) or f"manual-{request.run_id}"  # a manual run competes with nobody
        asked = time.monotonic()  # the lease runs from before the claim reached Redis, never later
        try:
            claim: Claim = self._call(lambda claims: claims.claim(job.name, slot))
        except EngineDown as exc:
            return self._engine_down(job, slot, str(exc))
        if claim.won:
            lease = Lease(claim, job, cancel, asked + self.settings.lease)
            with self._lock:
                self._leases[id(lease)] = lease
            self.state.count("claims_won")
            self._count_leases()
            return Decision(True, slot, self.member, claim.token, lease, coordinator=self)
        self.state.count("claims_lost")
        value = claim.value
        if value.state != DONE and request.slot is not None:
            self._watch(job, request.slot, value)
        verb = "ran" if value.state == DONE else "holds"
        summary = f"{value.member} {verb} this slot (token {value.token})"
        return Decision(False, slot, value.member, value.token, status=Status.SKIPPED, summary=summary)

    def _engine_down(self, job: ResolvedJob, slot: str, error: str) -> Decision:
        policy = job.definition.when_engine_down or self.settings.when_engine_down
        if policy == "run_local":
            self.state.count("engine_down_local")
            self.log.info("coordination.run_local", job=job.name, slot=slot, error=error)
            return Decision(True, slot, self.member)
        self.state.count("engine_down_skips")
        summary = f"not run: the coordination engine is unreachable ({error}); when_engine_down=skip"
        with self._conn.lock:
            alert, self._conn.alerted = not self._conn.alerted, True
        if alert:
            self.on_engine_alert(True, f"vault jobs are skipped: the coordination engine {self.url} is unreachable")
        return Decision(False, slot, self.member, status=Status.WARN, summary=summary)

    # --- during and after a run -------------------------------------------------------------
    def fence(self, lease: Lease) -> bool:
        """The fencing check of ``lease``'s run: False when its slot was taken over, or the engine cannot say."""
        if lease.lost is not None:
            return False
        try:
            return bool(self._call(functools.partial(Claims.holds, claim=lease.claim)))
        except EngineDown:
            return False

    def end(self, lease: Lease, record: RunRecord) -> None:
        """The run of ``lease`` ended as ``record`` says: mark its slot done (or waiting for a retry), or give it up."""
        with self._lock:
            self._leases.pop(id(lease), None)
        self._count_leases()
        if lease.lost is not None:
            return
        claim, definition = lease.claim, lease.job.definition
        try:
            if claim.slot.startswith("manual-") or record.status in (Status.INTERRUPTED, Status.RUNNING):
                # Stopped, not finished: another member may run the slot now, not after the lease.
                self._call(lambda claims: claims.release(claim))
            elif not record.final:
                # Held through the backoff (the daemon waits up to 1.2 x the delay), so that nobody
                # else takes the slot while its retry is pending here.
                wait = definition.backoff.delay(record.attempt) * 1.2 + 2 * self.settings.lease + 5
                self._call(lambda claims: claims.finish(claim, RETRY, wait))
            else:
                self._call(lambda claims: claims.finish(claim, DONE, self._keep_done(lease)))
        except EngineDown as exc:
            self.log.warning("coordination.end_unrecorded", job=claim.job, slot=claim.slot, error=str(exc))

    def _keep_done(self, lease: Lease) -> float:
        """How long a done mark lives: past the job's next slot (a late member catches up on that one)."""
        slot = datetime.fromisoformat(lease.claim.slot)
        following = lease.job.schedule.next_after(slot + timedelta(seconds=1))
        keep = following.timestamp() - time.time() + 2 * self.settings.lease + 60
        return max(2 * self.settings.lease, min(keep, DONE_KEEP_MAX))

    def _count_leases(self) -> None:
        with self._lock:
            held = len(self._leases)
        self.state.update(leases_held=held)

    def _watch(self, job: ResolvedJob, slot: datetime, value: ClaimValue) -> None:
        until = time.monotonic() + job.definition.timeout + 4 * self.settings.lease + 60
        with self._lock:
            self._watches[(job.name, slot_name(slot) or "")] = _Watch(job, slot, value, until)

    # --- the background thread ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                if self._conn.down_since is not None and time.monotonic() >= self._conn.retry_at:
                    self._call(lambda claims: claims.client.ping())
            except EngineDown:
                pass
            try:
                self._renew_all()
                self._check_watches()
            except EngineDown:
                pass
            except Exception as exc:  # never let the thread die: leases would silently stop renewing
                self.log.error("coordination.error", error=scrub_text(f"{type(exc).__name__}: {exc}")[:300])

    def _renew_all(self) -> None:
        with self._lock:
            leases = list(self._leases.values())
        for lease in leases:
            asked = time.monotonic()
            try:
                ours = self._call(functools.partial(Claims.renew, claim=lease.claim))
            except EngineDown as exc:
                # Given up a tick and a call early: the holder must stop before Redis frees the slot.
                if time.monotonic() >= lease.expires - self.tick - self.timeout:
                    self._lose(lease, f"the lease ran out while the coordination engine was unreachable ({exc})")
                continue
            if ours:
                lease.expires = asked + self.settings.lease
            else:
                self._lose(lease, "another member took the slot")

    def _lose(self, lease: Lease, reason: str) -> None:
        with self._lock:
            if self._leases.pop(id(lease), None) is None:
                return
        lease.lost = reason
        lease.cancel.set()
        self.state.count("leases_lost")
        self._count_leases()
        self.log.warning("coordination.lease_lost", job=lease.claim.job, slot=lease.claim.slot, reason=reason)

    def _check_watches(self) -> None:
        with self._lock:
            watches = list(self._watches.items())
        for key, watch in watches:
            if time.monotonic() > watch.until:
                self._unwatch(key)
                continue
            value = self._call(functools.partial(Claims.peek, job=key[0], slot=key[1]))
            if value is not None:
                if value.state == DONE:
                    self._unwatch(key)
                else:
                    watch.last = value
                continue
            self._unwatch(key)  # its claim expired or was given up: the holder is gone
            if watch.job.definition.on_holder_lost == "retry" and watch.last.state == "taking_over":
                self._retake(watch)
                continue
            self.log.warning(
                "coordination.holder_lost",
                job=watch.job.name,
                slot=key[1],
                holder=watch.last.member,
                token=watch.last.token,
                action=watch.job.definition.on_holder_lost,
            )
            if watch.job.definition.on_holder_lost == "retry":
                self._retake(watch)
            else:
                self.on_lost_skip(watch.job, watch.slot, watch.last)

    def _retake(self, watch: _Watch) -> None:
        """Offer the slot to this daemon's runner (its claim decides); while the job is busy here, ask again later."""
        if not self.on_takeover(watch.job, watch.slot):
            waiting = ClaimValue(watch.last.member, watch.last.token, "taking_over")
            with self._lock:
                self._watches.setdefault((watch.job.name, slot_name(watch.slot) or ""), replace(watch, last=waiting))

    def _unwatch(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._watches.pop(key, None)
