"""The daemon: one main loop that sleeps until there is work.

The loop waits in ``select()`` on a wake-up pipe until the next fire time,
the next run deadline or ``wake_interval`` (whichever is first).  Signals
(through ``signal.set_wakeup_fd``), finished runs and control requests write
to that pipe.  Signal handlers only record the signal; stopping, reloading
and logging happen here in the loop (as gunicorn's arbiter does).
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import random
import select
import signal
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmjobsd import __version__
from pmjobsd.alerts.manager import AlertManager
from pmjobsd.app.paths import AppPaths, check_local_state_folder
from pmjobsd.coord import daemon_hooks as coordination
from pmjobsd.core import control
from pmjobsd.core.held import HeldJobs, Hold
from pmjobsd.core.history import RunHistory, open_history
from pmjobsd.core.history_writer import HistoryHealth, HistoryWriter
from pmjobsd.core.observers import RunObserver, RunRecord
from pmjobsd.core.outcomes import Overlap, Status, Trigger
from pmjobsd.core.privacy import EntryIdHasher
from pmjobsd.core.runner import ActiveRun, Runner, RunRequest, new_run_id
from pmjobsd.core.scheduler import Clock, DueItem, Scheduler
from pmjobsd.core.settings import ConfigIssue, LoadedSettings, ResolvedJob, app_folders, keep_definitions, load_settings
from pmjobsd.core.settings_file import FileState, fingerprint
from pmjobsd.core.settings_watch import SettingsWatch, open_watch
from pmjobsd.core.timestamps import utc_iso
from pmjobsd.observe.joblog import LOGGER_NAME, EventLogger, setup_logging
from pmjobsd.observe.metrics import MetricsObserver
from pmjobsd.system.files import check_not_root_on_user_home, describe_error, ensure_private_dir
from pmjobsd.system.lock import AlreadyRunning, InstanceLock
from pmjobsd.system.sdnotify import Notifier

if TYPE_CHECKING:
    from pmjobsd.coord.coordinator import Coordinator
    from pmjobsd.coord.state import CoordinationState
    from pmjobsd.observe.status import StatusCache, StatusDocument, StatusSnapshot
    from pmjobsd.observe.web import StatusServer

EXIT_OK = 0
EXIT_RESTART = 75  # EX_TEMPFAIL: too many stuck threads; the service manager should restart us
SETTINGS_DEBOUNCE_S = 0.05  # after a change event, before the file is read
SETTINGS_SETTLE_S = 0.25  # an empty/missing/undecodable file is read again after this
SETTINGS_TRANSIENT_S = 1.0  # ...and reported (config.invalid) once it has stayed so this long


def _drop_all(record: logging.LogRecord) -> bool:
    return False


class StartupError(Exception):
    """The daemon could not start; ``str()`` is one line for stderr (no traceback)."""


HISTORY_ALERT = "pmjobsd history"  # the alert (and its recovery) for runs that cannot be recorded
DUPLICATE_ALERT = "pmjobsd member name"  # another daemon in the group uses this daemon's member name


def held_alert(job: str) -> str:
    """The alert key of a job held back after a restart (its own failures keep theirs)."""
    return f"{job} (held back)"


def resolve_paths(base: AppPaths, loaded: LoadedSettings, cli_overrides: dict[str, str | None]) -> AppPaths:
    """Folders from settings ``jobs.paths``, then the command line on top (it wins)."""
    return app_folders(base, loaded.settings, cli_overrides)


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size): changes while the app keeps saving the file."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


class Daemon:
    """Owns the scheduler, the runner, the history and the control socket for one state folder."""

    def __init__(
        self,
        paths: AppPaths,
        *,
        cli_overrides: dict[str, str | None] | None = None,
        console: bool | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        extra_log_handlers: list | None = None,
    ):
        self.base_paths = paths
        self.cli_overrides = cli_overrides or {}
        self.console = console
        self.clock = clock or Clock()
        self.notifier = notifier or Notifier()
        self.extra_log_handlers = extra_log_handlers or []
        self.log = EventLogger("daemon")
        self.started_at: float | None = None
        self.heartbeat = time.monotonic()
        self._signals: deque[int] = deque()
        self._sched_lock = threading.RLock()
        self.web: StatusServer | None = None
        self.coordinator: Coordinator | None = None  # with jobs.coordination (started in _start)
        self.coordination: CoordinationState | None = None  # shared by the claim side and the group side
        self._status_cache: StatusCache | None = None  # status_snapshot(): job entries once per change of state
        self.exit_code = EXIT_OK
        self.on_ready: Callable[[], None] | None = None  # called once after daemon.ready (the --detach starter)
        self._last_watchdog = self._last_status = float("-inf")
        self._watch: SettingsWatch | None = None
        self._check_settings_at: float | None = None  # look at the file then (after an event, or to settle)
        self._settings_poll_at = float("-inf")  # with a watch: look at the file then anyway
        self._upgrade_logged = False  # history.upgrading said (once per start)
        self._read_error: str | None = None  # the last settings read that failed for an OS reason, said once
        self._bad_since: float | None = None  # the file has been empty/missing/undecodable, unchanged, since
        self._bad_stamp: tuple[int, int, int] | None = None
        self._reported: tuple[str, ...] | None = None  # the problems config.invalid last said

    # --- wake-ups -----------------------------------------------------------------
    def wake(self) -> None:
        """Make the main loop look at its work now (safe from any thread)."""
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:
            pass  # the pipe is full: the loop will wake anyway

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    def _wait(self, timeout: float) -> None:
        watched = [self._watch.fileno()] if self._watch is not None else []
        readable, _, _ = select.select([self._wake_r, *watched], [], [], max(0.0, timeout))
        if self._watch is not None and watched[0] in readable:
            if self._watch.drain() and self._check_settings_at is None:
                # Coalesce the burst of one save (truncate, writes, close) into one look.
                self._check_settings_at = time.monotonic() + SETTINGS_DEBOUNCE_S
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    # --- start ------------------------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the process exit code.

        Raises AlreadyRunning when another daemon holds the lock, and :class:`StartupError`
        (one line, no traceback) when anything before ``daemon.ready`` fails.
        """
        os.umask(0o077)
        # Made here, not in __init__: detaching closes every descriptor opened before it.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.loaded = self._load_settings()
        self.paths = resolve_paths(self.base_paths, self.loaded, self.cli_overrides)
        try:
            check_not_root_on_user_home()
            if self.loaded.settings.coordination is not None:
                check_local_state_folder(self.paths.state_dir)
            ensure_private_dir(self.paths.state_dir)
            self.lock = InstanceLock(self.paths.lock_path)
            self.lock.acquire()  # raises AlreadyRunning
        except AlreadyRunning:
            raise
        except Exception as exc:
            raise StartupError(describe_error(exc)) from exc
        try:
            try:
                self._start()
            except Exception as exc:
                message = describe_error(exc)
                self._log_start_failure(message)
                self._abort_start()
                raise StartupError(message) from exc
            return self._serve()
        except StartupError:
            raise
        except Exception as exc:
            # Detached or under a service manager nobody reads our stderr: say it in jobs.log.
            self.log.error("daemon.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            raise
        finally:
            self.lock.release()
            if self._watch is not None:
                self._watch.close()

    def _start(self) -> None:
        """Everything before the loop: logging, history, observers, runner, scheduler, sockets."""
        settings = self.loaded.settings
        setup_logging(
            self.paths.jobs_log_path,
            console=self.console,
            level=getattr(logging, settings.log_level),
            extra_handlers=self.extra_log_handlers,
        )
        self.started_at = time.time()
        self.log.info("daemon.started", pid=os.getpid(), version=__version__, settings=str(self.paths.settings_path))
        self._log_config("config.loaded", self.loaded)
        try:
            self._open_history()
        except sqlite3.Error as exc:  # e.g. "database or disk is full": name the file
            raise OSError(errno.EIO, str(exc), str(self.paths.history_path)) from exc
        self.held = HeldJobs(self.paths.state_dir / "held.json")
        self.hasher = EntryIdHasher.from_file(self.paths.id_key_path)
        self.observers = self._build_observers()
        self._announce_holds()
        self.coordinator = coordination.start(self) if self.loaded.settings.coordination else None
        self.runner = Runner(
            max_workers=settings.max_workers,
            history=self.recorder,
            paths=self.paths,
            hash_entry_id=self.hasher,
            observers=self.observers,
            wake=self.wake,
            app_settings=lambda: dict(self.loaded.app_settings),
            coordinator=self.coordinator,
        )
        self.scheduler = Scheduler(self.clock)
        self.jobs = dict(self.loaded.jobs)
        with self._sched_lock:
            caught_up = self.scheduler.load(self.jobs, self.history.last_slots(self.jobs))
        for item in caught_up:
            self.log.info(
                "job.caught_up",
                job=item.job,
                missed_slot=item.missed_slot.isoformat() if item.missed_slot else None,
                last_slot=item.last_slot.isoformat() if item.last_slot else None,
                reason="missed" if item.last_slot else "never_run",
            )
        self.control = control.ControlServer(self.paths.control_socket_candidates, self._handle_request)
        self._start_web()
        self.metrics.update_textfile()

    def _log_start_failure(self, message: str) -> None:
        """``daemon.start_failed`` to jobs.log and journald, if they are open; stderr gets the CLI's one line."""
        logger = logging.getLogger(LOGGER_NAME)
        if not logger.handlers:
            return  # nothing set up yet: logging's last-resort handler would print a second line
        consoles = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        for handler in consoles:
            handler.addFilter(_drop_all)
        try:
            self.log.error("daemon.start_failed", error=message)
        finally:
            for handler in consoles:
                handler.removeFilter(_drop_all)

    def _abort_start(self) -> None:
        """Undo a half-done :meth:`_start` so that no thread keeps the process alive."""
        steps = [
            lambda: self._stop_web() if self.web else None,
            lambda: self.control.close() if hasattr(self, "control") else None,
            lambda: self.runner.shutdown(0) if hasattr(self, "runner") else None,
            lambda: self.coordinator.close() if self.coordinator else None,
            *(observer.close for observer in getattr(self, "observers", [])),
            lambda: self.history.close() if hasattr(self, "history") else None,
        ]
        for step in steps:
            try:
                step()
            except Exception:  # already failing: the first error is the one to report
                pass

    def _serve(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            enabled = sum(1 for job in self.jobs.values() if job.definition.enabled)
            self.log.info("daemon.ready", jobs=enabled, control_socket=str(self.control.path))
            self.notifier.ready(status=f"{enabled} jobs scheduled")
            # What start-up made lives as long as the daemon: out of the collector's sight, so that
            # the collections that every few thousand runs' allocations set off do not walk it again.
            gc.freeze()
            if self.on_ready is not None:
                self.on_ready()
            # After READY (inotify_simple and ctypes cost ~10 ms); the loop's first look at the file's
            # fingerprint catches a change made since it was read.
            self._watch = open_watch(self.base_paths.settings_path)
            self._loop()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._shutdown()
        return self.exit_code

    # --- the run history ---------------------------------------------------------------------
    def _open_history(self) -> None:
        """The reader (status, catch-up) and the writer thread; a damaged file is moved aside (WARN)."""
        self.history, moved, damage = open_history(self.paths.history_path, on_long_step=self._upgrading_history)
        if moved is not None:
            self.log.warning("history.moved_aside", path=str(moved), error=damage)
        # Marking the previous daemon's RUNNING rows INTERRUPTED is a write: the writer thread does it.
        self.recorder = HistoryWriter(
            self.paths.history_path,
            log=EventLogger("history"),
            reader=self.history,
            on_change=self._history_changed,
            mark_interrupted=True,
        )
        self.recorder.moved_aside = str(moved) if moved else None
        self.recorder.damage = damage

    def _health_problems(self) -> list[str]:
        """What ``/healthz`` reports as degraded while the loop itself is fine."""
        health = self.recorder.health()
        if health.recording:
            return []
        return [f"runs are not being recorded: {health.error or 'backlog full'} ({health.backlog} waiting in memory)"]

    def _upgrading_history(self) -> None:
        """A migration reads every row of a big history (once after an upgrade): keep systemd waiting."""
        if not self._upgrade_logged:
            self._upgrade_logged = True
            self.log.info("history.upgrading", path=str(self.paths.history_path))
        self.notifier.notify(EXTEND_TIMEOUT_USEC=30_000_000, STATUS="upgrading the run history")

    def _history_changed(self, health: HistoryHealth) -> None:
        """Runs stopped (or started again) reaching the history: alert, like a failing job (writer thread)."""
        if not hasattr(self, "alerts"):
            return
        if health.writable:
            record = self._daemon_record(HISTORY_ALERT, Status.OK, "runs are recorded again")
        else:
            record = self._daemon_record(
                HISTORY_ALERT, Status.FAIL, f"runs are not being recorded: {health.error}; kept in memory"
            )
        self.alerts.run_finished(record)

    @staticmethod
    def _daemon_record(name: str, status: Status, summary: str) -> RunRecord:
        """A record of the daemon's own health, for the alert rules (one alert, one recovery)."""
        now = time.time()
        return RunRecord(new_run_id(), name, 1, Trigger.SCHEDULE, None, now, status, now, summary)

    # --- jobs held back after a restart they caused --------------------------------------------
    def _announce_holds(self) -> None:
        for name, hold in self.held.all().items():
            self.log.error("job.held", job=name, hangs=hold.hangs, until=utc_iso(hold.until), reason=hold.reason)
            summary = f"{hold.reason}; no run before {utc_iso(hold.until)}"
            self.alerts.run_finished(self._daemon_record(held_alert(name), Status.FAIL, summary))

    def _hold_hung_jobs(self) -> None:
        """Before exit 75: remember the jobs whose threads hang, so the restart holds them back."""
        hung = [name for name in self.jobs if self.runner.abandoned_count(name)]
        try:
            holds = self.held.hold(hung)
        except OSError as exc:
            self.log.error("job.hold_failed", jobs=hung, error=f"{type(exc).__name__}: {exc}")
            return
        for name in hung:
            self.log.error("job.held", job=name, hangs=holds[name].hangs, until=utc_iso(holds[name].until))

    def _release_holds(self, completed: Sequence[RunRecord]) -> None:
        """An attempt of a held job that ended without a timeout ends its hold (and its alert)."""
        for record in completed:
            if record.status in (Status.TIMEOUT, Status.INTERRUPTED) or self.held.get(record.job) is None:
                continue
            try:
                self.held.release(record.job)
            except OSError as exc:
                self.log.error("job.hold_failed", job=record.job, error=f"{type(exc).__name__}: {exc}")
                continue
            self.log.info("job.released", job=record.job, status=record.status.value)
            self.alerts.run_finished(self._daemon_record(held_alert(record.job), Status.OK, "no longer held back"))

    def _build_observers(self) -> list[RunObserver]:
        """The run observers: metrics (built once: counters survive reloads), alerts (rebuilt when changed)."""
        self.metrics, self.alerts = build_observers(self.loaded, self.paths, self.history, self.status_snapshot)
        self._configure_metrics(self.loaded.jobs)
        observers: list[RunObserver] = [self.metrics, self.alerts]
        coordination = self.loaded.settings.coordination
        if coordination is not None:  # the heartbeat and the run stream (redis-py is imported only here)
            from pmjobsd.coord.engine import display_url
            from pmjobsd.coord.group import GroupMember
            from pmjobsd.coord.state import CoordinationState

            if self.coordination is None:
                self.coordination = CoordinationState(
                    coordination.group, coordination.member_name(), display_url(coordination.url)
                )
            self.metrics.set_coordination(self.coordination.snapshot)
            observers.append(
                GroupMember(coordination, self.coordination, is_vault=self._is_vault, on_duplicate=self._duplicate)
            )
        return observers

    def _is_vault(self, name: str) -> bool:
        job = self.jobs.get(name) if hasattr(self, "jobs") else None
        return job is not None and job.definition.scope == "vault"

    def _duplicate(self, message: str | None) -> None:
        """Another daemon beats under our member name (or no longer does): alert once, recover once."""
        status, summary = (Status.FAIL, message) if message else (Status.OK, "no other daemon uses the member name")
        self.alerts.run_finished(self._daemon_record(DUPLICATE_ALERT, status, summary))

    def _reconfigure_observers(self, old: LoadedSettings, new: LoadedSettings) -> None:
        self._configure_metrics(self.jobs)
        self.metrics.set_textfile(new.settings.metrics.textfile)
        if new.settings.alerts != old.settings.alerts:
            self.alerts.reconfigure(new.settings.alerts)
        endpoint = ("enabled", "host", "port", "allow_remote")
        if any(getattr(new.settings.metrics, key) != getattr(old.settings.metrics, key) for key in endpoint):
            self._stop_web()
            self._start_web()

    def _configure_metrics(self, jobs: Mapping[str, ResolvedJob]) -> None:
        self.metrics.set_jobs(name for name, job in jobs.items() if job.definition.enabled)
        self.metrics.declare_metrics({name: job.metrics for name, job in jobs.items()})

    # --- the HTTP endpoint (metrics, health, status page) ----------------------------------
    def _start_web(self) -> None:
        """Serve /metrics, /healthz, /v1/jobs and / when ``metrics.enabled``; a bad address is logged, not fatal."""
        self.web = None
        config = self.loaded.settings.metrics
        if not config.enabled:
            return
        from pmjobsd.observe.web import AddressRefused, StatusServer, monotonic_health  # http.server: only for this

        server = StatusServer(
            config.host,
            config.port,
            allow_remote=config.allow_remote,
            metrics_source=self.metrics.exposition,
            status_source=self.status_snapshot,
            health_source=monotonic_health(
                lambda: self.heartbeat,
                lambda: self.loaded.settings.wake_interval,
                lambda: self.loaded.settings.metrics.health_grace,
                self._health_problems,
            ),
            cors_origins=lambda: self.loaded.settings.metrics.cors_origins,
            log=EventLogger("http"),
        )
        try:
            server.start()
        except (AddressRefused, OSError) as exc:
            self.log.error("metrics.not_started", host=config.host, port=config.port, error=str(exc))
            return
        self.web = server
        self.log.info("metrics.listening", host=config.host, port=server.address[1])

    def _stop_web(self) -> None:
        if self.web is not None:
            self.web.close()
            self.web = None

    def _log_config(self, event: str, loaded: LoadedSettings) -> None:
        if loaded.fatal:
            self.log.error(
                "config.invalid",
                path=str(loaded.source),
                using="defaults",
                errors=[str(issue) for issue in loaded.issues],
            )
            return
        for name, issues in loaded.job_errors.items():
            self.log.error(
                "config.invalid",
                path=str(loaded.source),
                job=name,
                using="job disabled",
                errors=[str(issue) for issue in issues],
            )
        self.log.info(event, path=str(loaded.source), jobs=sorted(loaded.jobs))

    # --- the loop ---------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            if self._take_signals():
                return
            if self._settings_changed():
                self.reload()
            self.runner.expire_overdue()
            self._schedule_retries()
            self._dispatch_due()
            if self.runner.abandoned_count() > self.loaded.settings.max_abandoned_threads:
                self._hold_hung_jobs()
                self.log.error(
                    "daemon.restart_required",
                    abandoned_threads=self.runner.abandoned_count(),
                    limit=self.loaded.settings.max_abandoned_threads,
                    exit_code=EXIT_RESTART,
                )
                self.exit_code = EXIT_RESTART
                return
            self._ping_watchdog()
            self._wait(self._sleep_seconds())

    def _ping_watchdog(self) -> None:
        """WATCHDOG=1 after a healthy iteration, at most every quarter interval (a busy loop iterates often)."""
        interval = self.notifier.watchdog_interval()
        now = time.monotonic()
        if interval and now - self._last_watchdog >= interval / 4:
            self.notifier.watchdog()
            self._last_watchdog = now

    def _sleep_seconds(self) -> float:
        cap = self.loaded.settings.wake_interval
        interval = self.notifier.watchdog_interval()
        if interval:
            cap = min(cap, interval / 2)
        with self._sched_lock:
            next_wake = self.scheduler.next_wake()
        candidates = [cap]
        if next_wake is not None:
            candidates.append(next_wake - self.clock.now().timestamp())
        with self._sched_lock:
            reschedule_by = self.scheduler.reschedule_by()
        if reschedule_by is not None:  # next slots still to compute: the runner wakes us when idle, or then
            candidates.append(reschedule_by - self.clock.now().timestamp())
        deadline = self.runner.next_deadline()
        if deadline is not None:
            candidates.append(deadline - time.monotonic() + 0.01)
        if self._check_settings_at is not None:
            candidates.append(self._check_settings_at - time.monotonic())
        return max(0.0, min(candidates))

    def _take_signals(self) -> bool:
        """Act on queued signals; return True when the daemon must stop."""
        stop = False
        while self._signals:
            signum = self._signals.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.log.info("daemon.stopping", signal=signal.Signals(signum).name)
                stop = True
            elif signum == signal.SIGHUP:
                self.reload(reason="SIGHUP")
        return stop

    def _load_settings(self) -> LoadedSettings:
        return load_settings(self.base_paths.settings_path, base=self.base_paths, cli_overrides=self.cli_overrides)

    def _settings_changed(self) -> bool:
        """True when the file's content, owner or mode changed, or a doubtful read is due again.

        With an inotify watch the file is read after its events, and otherwise once per
        ``wake_interval`` (a change the watch cannot see: the folder's mode); reading and
        parsing it at every wake-up cost a burst of due runs milliseconds each time.
        """
        now = time.monotonic()
        if self._check_settings_at is not None:
            if now < self._check_settings_at:
                return False
            self._check_settings_at = None
            if self._bad_since is not None:
                return True  # the settle delay is over: read again
        elif self._watch is not None and now < self._settings_poll_at:
            return False
        self._settings_poll_at = now + self.loaded.settings.wake_interval
        return fingerprint(self.base_paths.settings_path) != self.loaded.fingerprint

    def _report_invalid(self, new: LoadedSettings, reason: str, issues: tuple[ConfigIssue, ...]) -> None:
        """config.invalid, once for one set of problems (a lasting one is not repeated at every wake-up)."""
        said = tuple(str(issue) for issue in issues)
        if said == self._reported:
            return
        self._reported = said
        self.log.error(
            "config.invalid", path=str(new.source), using="last good settings", reason=reason, errors=list(said)
        )

    def reload(self, reason: str = "settings file changed") -> None:
        """Re-read the settings; keep the last good ones where the new ones are invalid.

        An empty, missing or undecodable file after a good one is what the app's
        own save (truncate, then write) looks like for a moment: the last good
        settings stay, the file is read again after a settle delay, and only a
        state that lasts is reported.
        """
        try:
            new = self._load_settings()
        except OSError as exc:
            # Not a verdict on the file: the process could not read it now (EMFILE, EIO). Keep the last
            # good settings, say so once, and read again after the settle delay.
            if self._read_error != str(exc):
                self._read_error = str(exc)
                self.log.warning("config.read_failed", path=str(self.base_paths.settings_path), error=str(exc))
            self._check_settings_at = time.monotonic() + SETTINGS_SETTLE_S
            return
        self._read_error = None
        now = time.monotonic()
        if new.state.transient and self.loaded.state is FileState.OK:
            issues = new.issues or (ConfigIssue(str(new.source), f"the file is {new.state.value}"),)
            self.loaded = replace(self.loaded, fingerprint=new.fingerprint)
            stamp = _file_stamp(new.source)
            if self._bad_since is None or stamp != self._bad_stamp:  # still being written: not lasting yet
                self._bad_since, self._bad_stamp = now, stamp
            if now - self._bad_since < SETTINGS_TRANSIENT_S:
                self._check_settings_at = now + SETTINGS_SETTLE_S
            else:  # it lasts: status shows it too
                self.loaded = replace(self.loaded, issues=issues)
                self._report_invalid(new, reason, issues)
            return
        self._bad_since = None
        if new.fatal:
            # Keep running the last good settings, but show the new file's problems in status.
            self.loaded = replace(self.loaded, fingerprint=new.fingerprint, issues=new.issues)
            self._report_invalid(new, reason, new.issues)
            return
        self._reported = None
        if (
            reason != "SIGHUP"
            and not self.loaded.issues
            and new.app_settings.get("jobs") == self.loaded.app_settings.get("jobs")
        ):
            # The app saved its own keys: nothing of ours changed, nothing to re-plan or announce.
            self.loaded = replace(self.loaded, app_settings=new.app_settings, fingerprint=new.fingerprint)
            return
        self.notifier.reloading()
        jobs = dict(new.jobs)
        kept = [name for name in new.job_errors if name in self.jobs]
        for name in kept:  # a job broken by the edit keeps its last good definition
            jobs[name] = self.jobs[name]
        new = keep_definitions(new, self.loaded, kept)
        old, self.loaded, self.jobs = self.loaded, new, jobs
        self.runner.resize(new.settings.max_workers)
        with self._sched_lock:
            self.scheduler.load(jobs, catch_up=False)
        # Only retries of jobs that are gone or disabled; a run that failed just now may not have
        # its retry scheduled yet (_schedule_retries runs after this in the loop).
        dropped = [
            record
            for record in self.runner.awaiting_retry()
            if record.job not in jobs or not jobs[record.job].definition.enabled
        ]
        for record in dropped:
            self.runner.give_up(record.run_id, "the job was disabled or removed before its retry")
        self._reconfigure_observers(old, new)
        if new.settings.coordination != old.settings.coordination:  # its engine, group and state folder
            self.log.warning("coordination.restart_required", reason="jobs.coordination changed; restart to apply it")
        self._log_config("config.reloaded", new)
        self.notifier.ready()

    def _schedule_retries(self) -> None:
        completed = self.runner.take_completed()
        self._release_holds(completed)
        if completed and time.monotonic() - self._last_status >= 1.0:  # one STATUS= a second at most
            last = completed[-1]
            self.notifier.status(f"{len(self.jobs)} jobs; last run: {last.job} {last.status.value}")
            self._last_status = time.monotonic()
        for record in completed:
            if record.final:
                continue
            job = self.jobs.get(record.job)
            if job is None or not job.definition.enabled:
                self.runner.give_up(record.run_id, "the job was disabled or removed before its retry")
                continue
            delay = job.definition.backoff.delay(record.attempt) * random.uniform(1.0, 1.2)
            with self._sched_lock:
                when = self.scheduler.add_retry(record.job, record.run_id, record.attempt + 1, record.slot, delay)
            self.log.info(
                "job.retry_scheduled",
                job=record.job,
                run_id=record.run_id,
                attempt=record.attempt + 1,
                delay_s=round(delay, 3),
                at=utc_iso(when),
            )

    def _dispatch_due(self) -> None:
        # The runs due now go to the workers first; the jobs' next slots (a cron step each) are
        # computed once the workers have taken them, or by the scheduler's deadline (a second
        # after the slot at the soonest), so a burst of due runs does not wait for them.
        with self._sched_lock:
            due = self.scheduler.pop_due(reschedule=False)
        self._offer_due(due)
        with self._sched_lock:
            deadline = self.scheduler.reschedule_by()
            if deadline is not None and (self.runner.idle() or self.clock.now().timestamp() >= deadline):
                self.scheduler.reschedule()

    def _offer_due(self, due: list[DueItem]) -> None:
        """Offer the due runs to the runner in one step (its lock once, the workers woken together)."""
        offers: list[tuple[RunRequest, Overlap]] = []
        offered: list[DueItem] = []
        skipped: list[tuple[DueItem, str]] = []
        for item in due:
            job = self.jobs.get(item.job)
            if job is None or not job.definition.enabled:
                continue
            hold = self.held.holding(item.job)
            if hold is not None:
                skipped.append((item, f"{hold.reason}; not before {utc_iso(hold.until)}"))
            elif (
                item.trigger is not Trigger.RETRY
                and job.definition.overlap is Overlap.SKIP
                and self.scheduler.pending_retries(item.job)
            ):
                skipped.append((item, f"a retry of the previous run is pending (overlap={Overlap.SKIP})"))
            else:
                request = RunRequest(job, item.trigger, item.slot, item.attempt)
                if item.run_id:
                    request.run_id = item.run_id
                offers.append((request, job.definition.overlap))
                offered.append(item)
        if offers:
            for item, reason in zip(offered, self.runner.offer_many(offers), strict=True):
                if reason:
                    skipped.append((item, reason))
        for item, reason in skipped:
            self.log.info(
                "job.skipped",
                job=item.job,
                trigger=item.trigger,
                reason=reason,
                slot=item.slot.isoformat() if item.slot else None,
            )
            if item.trigger is Trigger.RETRY and item.run_id is not None:
                self.runner.give_up(item.run_id, f"retry not started: {reason}")

    # --- control requests (from the control socket's threads) ----------------------------
    def status_snapshot(self) -> StatusSnapshot:
        """The status now (what the metrics and the status page read)."""
        # Imported at the first status request, scrape or textfile write, not before daemon.ready.
        from pmjobsd.observe.status import DaemonState

        daemon = DaemonState(
            running=True,
            pid=os.getpid(),
            version=__version__,
            started_at=self.started_at,
            abandoned_threads=self.runner.abandoned_count(),
            heartbeat_age_s=round(time.monotonic() - self.heartbeat, 3),
            host=socket.gethostname(),
            history=self.recorder.health(),
        )
        loaded, jobs = self.loaded, self.jobs
        # Only the next-run times need the scheduler lock; the history queries run outside it,
        # so a scrape or a status request never holds up the main loop.
        with self._sched_lock:
            next_runs = {name: self.scheduler.next_run(name) for name in jobs}
        live = _LiveState(next_runs, self.runner, self.held.all(), self.recorder.unwritten())
        coordinated = self.coordinator.state.snapshot() if self.coordinator else None
        # The job entries are built again only when something in them changed (StatusCache).
        return self._statuses().build(
            loaded, self.history, daemon=daemon, live=live, jobs=jobs, now=self.clock.now(), coordination=coordinated
        )

    def status_document(self) -> StatusDocument:
        """The status document (``status --json``)."""
        return self._statuses().document(self.status_snapshot())

    def _statuses(self) -> StatusCache:
        """The status cache, made at the first status request (observe.status is imported only then)."""
        if self._status_cache is None:
            from pmjobsd.observe.status import StatusCache

            self._status_cache = StatusCache()
        return self._status_cache

    def run_now(self, name: str, wait: bool = False, timeout: float | None = None) -> dict[str, Any]:
        job: ResolvedJob | None = self.jobs.get(name)
        if job is None:
            known = ", ".join(sorted(self.jobs))
            return {"ok": False, "error": f"unknown job {name!r}; known jobs: {known}"}
        request = RunRequest(job, Trigger.MANUAL)
        reason = self.runner.offer(request, job.definition.overlap)
        if reason:
            return {"ok": False, "error": f"{name} not started: {reason}"}
        response: dict[str, Any] = {"ok": True, "job": name, "run_id": request.run_id, "started": True}
        if wait:
            # The limit counts from the attempt's start: time spent queued behind other runs is not the run's.
            while not request.started.wait(1.0) and not request.done.is_set():
                pass
            limit = timeout if timeout is not None else job.definition.timeout + 5
            if request.done.wait(limit) and request.record is not None:
                response["run"] = run_summary(request.record)
            else:
                response["ok"], response["error"] = False, "gave up waiting for the run to finish"
        return response

    def _handle_request(self, message: dict[str, Any]) -> dict[str, Any]:
        command = message.get("cmd")
        if command == "status":
            return {"ok": True, "status": self.status_document()}
        if command == "run-now":
            return self.run_now(str(message.get("job")), bool(message.get("wait")), message.get("timeout"))
        if command == "reload":
            self._signals.append(signal.SIGHUP)
            self.wake()
            return {"ok": True}
        if command == "ping":
            return {"ok": True, "pid": os.getpid()}
        return {"ok": False, "error": f"unknown command {command!r}"}

    # --- stop --------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self.notifier.stopping()
        self._stop_web()
        self.control.close()
        cut_off = self.runner.shutdown(self.loaded.settings.shutdown_grace)
        for record in self.runner.awaiting_retry():
            self.runner.give_up(record.run_id, "pmjobsd stopped before the retry")
        if self.coordinator is not None:
            self.coordinator.close()
        for observer in self.observers:
            try:
                observer.close()
            except Exception as exc:
                self.log.error("observer.failed", observer=type(observer).__name__, error=str(exc))
        self.recorder.close()
        self.history.close()
        self.log.info("daemon.stopped", interrupted_runs=cut_off, exit_code=self.exit_code)


def build_observers(
    loaded: LoadedSettings, paths: AppPaths, history: RunHistory, status_source: Callable[[], StatusSnapshot]
) -> tuple[MetricsObserver, AlertManager]:
    """Metrics and alerts as every run gets them: the daemon's, and ``run-now`` without a daemon (same alert state)."""
    metrics = MetricsObserver(
        status_source,
        history=history,
        textfile=loaded.settings.metrics.textfile,
        log=EventLogger("metrics"),
    )
    alerts = AlertManager(
        loaded.settings.alerts,
        paths,
        EventLogger("alerts"),
        host=socket.gethostname(),
        on_delivery=metrics.alert_delivered,
    )
    return metrics, alerts


@dataclass(frozen=True)
class _LiveState:
    """The scheduler's next-run times, taken under its lock, and the runner (safe from any thread)."""

    next_runs: Mapping[str, datetime | None]
    runner: Runner
    holds: Mapping[str, Hold]
    pending: Mapping[str, RunRecord]

    def held(self, job: str) -> Hold | None:
        return self.holds.get(job)

    def unwritten(self) -> Mapping[str, RunRecord]:
        return self.pending

    def next_run(self, job: str) -> datetime | None:
        return self.next_runs.get(job)

    def running(self) -> Sequence[ActiveRun]:
        return self.runner.running()

    def abandoned_count(self, job: str | None = None) -> int:
        return self.runner.abandoned_count(job)


def run_summary(record: RunRecord) -> dict[str, Any]:
    """A finished attempt as ``run-now --wait`` reports it."""
    return {
        "run_id": record.run_id,
        "job": record.job,
        "status": record.status.value,
        "attempt": record.attempt,
        "started_at": utc_iso(record.started_at),
        "finished_at": utc_iso(record.finished_at),
        "duration_ms": record.duration_ms,
        "summary": record.summary,
        "error": record.error,
    }
