"""Prometheus metrics: counters kept by a run observer, gauges read from the status.

:class:`MetricsObserver` owns a registry of its own (never the process-wide
default one).  What happens over time — attempts, durations, retries, alert
deliveries — is counted as runs finish; the daemon builds the observer once,
so the counters survive settings reloads.  What *is* — next run, status,
running, abandoned threads — is computed at scrape time from the daemon's
status snapshot by :class:`StatusCollector`, so it can never drift from what
``pmjobsd status`` says.  The jobs' own numbers (``JobResult.metrics``) are
kept by :class:`JobResults` from the newest run that reported them, seeded
from the run history on start, and exported under the names each job
declares (``JobSpec.metrics``): this module names no job and no job's metric.
Every series is labelled ``job_name``: ``job`` belongs to Prometheus.

Optionally the same exposition is written to a node_exporter textfile
(``metrics.textfile``) after each run, atomically, by a writer thread.

Counting is plain numbers (:class:`RunCounts`); prometheus_client is imported at the first
exposition only (a scrape of ``/metrics`` or a textfile write), so a daemon with the endpoint
off (the default) and no textfile never loads it (issue 16).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmjobsd import __version__
from pmjobsd.core.history import RunHistory
from pmjobsd.core.observers import NullObserver, RunRecord
from pmjobsd.core.outcomes import JobState, Severity, Status
from pmjobsd.core.registry import RESULT_KEY, JobMetric, MetricKind
from pmjobsd.observe.joblog import EventLogger
from pmjobsd.system.files import existing_mode, write_atomic

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import CollectorRegistry

    from pmjobsd.coord.state import CoordinationSnapshot
    from pmjobsd.observe.status import JobStatus, StatusSnapshot

# Jobs take seconds to tens of minutes (a breach cache refresh under its rate
# limit, hashing many backups); the default buckets stop at 10 s.
DURATION_BUCKETS = (0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, math.inf)


def numeric_results(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``JobResult.metrics`` under identifier-like names; the rest is dropped.

    The names become label values: identifiers only, so a job cannot leak text through them.
    """
    results = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not RESULT_KEY.match(name) or isinstance(value, str):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            results[name] = number
    return results


def job_status_code(job: JobStatus) -> Severity | None:
    """The ``pmjobsd_job_status`` value of a job; None when it has no outcome yet.

    A running job shows the outcome of its previous finished attempt.
    """
    if job.status is not JobState.RUNNING:
        return job.status.metric_code
    for attempt in job.recent:
        code = JobState.of_attempt(attempt.status, attempt.final).metric_code
        if code is not None:
            return code
    return None


class _Group:
    """Collectors (or metric families) as one thing ``generate_latest`` can format."""

    def __init__(self, parts: Sequence[Any]):
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import Metric

        for part in self.parts:
            if isinstance(part, Metric):
                yield part
            else:
                yield from part.collect()


class StatusCollector:
    """Gauges computed from the status at each scrape (always true).

    :meth:`text` formats the per-job families again only when the status hands out new job
    entries (a live daemon builds them once per change of state).
    """

    def __init__(self, status_source: Callable[[], StatusSnapshot], log: EventLogger):
        self.status_source = status_source
        self.log = log
        self._failing = False
        self._job_families: tuple[tuple[JobStatus, ...], bytes] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # describing must not call the daemon before it is up

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.status_source()
        except Exception as exc:  # the daemon is starting or stopping: expose the counters only
            if not self._failing:
                self.log.warning("metrics.status_unavailable", error=f"{type(exc).__name__}: {exc}")
            self._failing = True
            return
        self._failing = False
        yield from self._job_gauges(status)
        yield from self._daemon_gauges(status)

    def text(self) -> bytes:
        """What ``generate_latest`` writes for :meth:`collect`; the jobs' part once per set of entries."""
        from prometheus_client import generate_latest

        try:
            status = self.status_source()
        except Exception:
            return generate_latest(self)  # logs it once, exposes nothing of the status
        self._failing = False
        kept = self._job_families
        if kept is None or kept[0] is not status.jobs:
            kept = self._job_families = (status.jobs, generate_latest(_Group(tuple(self._job_gauges(status)))))
        return kept[1] + generate_latest(_Group(tuple(self._daemon_gauges(status))))

    @staticmethod
    def _job_gauges(status: StatusSnapshot) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        def family(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=["job_name"])

        last_run = family("pmjobsd_job_last_run_timestamp_seconds", "Start of the newest attempt of the job")
        last_success = family(
            "pmjobsd_job_last_success_timestamp_seconds", "End of the newest attempt that finished OK or WARN"
        )
        next_run = family("pmjobsd_job_next_run_timestamp_seconds", "When the job runs next")
        outcome = family("pmjobsd_job_status", "Outcome of the job: 0 OK, 1 WARN, 2 FAIL (absent before a first run)")
        running = family("pmjobsd_job_running", "1 while an attempt of the job runs")
        enabled = family("pmjobsd_job_enabled", "1 when the job is enabled in the settings")
        failures = family("pmjobsd_job_consecutive_failures", "Final FAIL/TIMEOUT outcomes in a row")
        for job in status.jobs:
            labels = [job.name]
            enabled.add_metric(labels, 1.0 if job.enabled else 0.0)
            running.add_metric(labels, 1.0 if job.status is JobState.RUNNING else 0.0)
            failures.add_metric(labels, float(job.consecutive_failures))
            if job.last_run is not None:
                last_run.add_metric(labels, job.last_run.started_at)
            if job.last_success_at is not None:
                last_success.add_metric(labels, job.last_success_at)
            if job.next_run is not None:
                next_run.add_metric(labels, job.next_run.timestamp())
            code = job_status_code(job)
            if code is not None:
                outcome.add_metric(labels, float(code))
        yield from (last_run, last_success, next_run, outcome, running, enabled, failures)

    @staticmethod
    def _daemon_gauges(status: StatusSnapshot) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        daemon = status.daemon
        yield GaugeMetricFamily(
            "pmjobsd_threads_abandoned",
            "Timed-out job threads still running",
            value=float(daemon.abandoned_threads or 0),
        )
        if daemon.heartbeat_age_s is not None:
            yield GaugeMetricFamily(
                "pmjobsd_heartbeat_age_seconds",
                "Seconds since the scheduler loop last went round",
                value=daemon.heartbeat_age_s,
            )
        if daemon.started_at is not None:
            yield GaugeMetricFamily("pmjobsd_start_time_seconds", "When the daemon started", value=daemon.started_at)
        if daemon.history is not None:
            yield GaugeMetricFamily(
                "pmjobsd_history_backlog",
                "Run records waiting in memory because the history cannot be written",
                value=float(daemon.history.backlog),
            )
            yield GaugeMetricFamily(
                "pmjobsd_history_recording",
                "0 while runs are not reaching the run history (disk full, locked), or some were lost",
                value=1.0 if daemon.history.recording else 0.0,
            )
        yield GaugeMetricFamily(
            "pmjobsd_settings_valid",
            "0 when the settings file on disk is invalid (last good ones run)",
            value=1.0 if status.settings.valid else 0.0,
        )


class JobResults:
    """The jobs' own numbers (``JobResult.metrics``) and the metrics each job declares for them.

    Every number is ``pmjobsd_job_result_value{job_name, name}`` from the
    newest run that reported any; a job's :class:`JobMetric` declarations
    add a series of their own: a gauge from that same newest run, or a counter
    summing what every run reported.
    """

    def __init__(self, newest: Mapping[str, Mapping[str, float]] | None = None):
        self._lock = threading.Lock()
        self._newest = {job: dict(values) for job, values in (newest or {}).items()}
        self._sums: dict[tuple[str, str], float] = {}  # (job, key) -> sum, for declared counters
        self._declared: dict[str, tuple[JobMetric, ...]] = {}

    def declare(self, declared: Mapping[str, Sequence[JobMetric]]) -> None:
        """The jobs' declarations (each job's ``JobSpec.metrics``), replacing the previous ones."""
        with self._lock:
            self._declared = {job: tuple(metrics) for job, metrics in declared.items() if metrics}

    def add(self, job: str, results: Mapping[str, float]) -> None:
        """A run of ``job`` reported ``results`` (already :func:`numeric_results`)."""
        if not results:
            return
        with self._lock:
            self._newest[job] = dict(results)
            for metric in self._declared.get(job, ()):
                if metric.kind is MetricKind.COUNTER and metric.key in results:
                    key = (job, metric.key)
                    self._sums[key] = self._sums.get(key, 0.0) + results[metric.key] * metric.scale

    def describe(self) -> Iterable[Metric]:
        return []  # the names depend on the declarations, which change on reload

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            newest = {job: dict(values) for job, values in self._newest.items()}
            sums = dict(self._sums)
            declared = dict(self._declared)
        generic = GaugeMetricFamily(
            "pmjobsd_job_result_value",
            "Numbers the job reported in its newest run that reported any",
            labels=["job_name", "name"],
        )
        for job in sorted(newest):
            for name, value in sorted(newest[job].items()):
                generic.add_metric([job, name], value)
        yield generic
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for job in sorted(declared):
            for metric in declared[job]:
                if metric.kind is MetricKind.COUNTER:
                    family = families.setdefault(
                        metric.name, CounterMetricFamily(metric.name, metric.help, labels=["job_name"])
                    )
                    family.add_metric([job], sums.get((job, metric.key), 0.0))  # 0 before a first run: rate() works
                elif metric.key in newest.get(job, {}):
                    family = families.setdefault(
                        metric.name, GaugeMetricFamily(metric.name, metric.help, labels=["job_name"])
                    )
                    family.add_metric([job], newest[job][metric.key] * metric.scale)
        yield from families.values()


class CoordinationCollector:
    """The ``pmjobsd_coordination_*`` series, read from the daemon's coordination state at each scrape.

    Registered only when ``jobs.coordination`` is set; a scrape copies one frozen
    snapshot under a lock and never talks to the engine.
    """

    def __init__(self, source: Callable[[], CoordinationSnapshot], clock: Callable[[], float] = time.time):
        self.source, self.clock = source, clock

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = self.source()
        info = GaugeMetricFamily(
            "pmjobsd_coordination_info", "The group and member name of this daemon", labels=["group", "member"]
        )
        info.add_metric([state.group, state.member], 1.0)
        yield info
        yield GaugeMetricFamily(
            "pmjobsd_coordination_engine_reachable",
            "1 while the coordination engine (Redis) answers",
            value=1.0 if state.reachable else 0.0,
        )
        yield GaugeMetricFamily(
            "pmjobsd_coordination_leases_held", "Slot claims this daemon holds now", value=float(state.leases_held)
        )
        counters = (
            ("claims_won", "Slot claims this daemon won", state.claims_won),
            ("claims_lost", "Slots of vault jobs another member held", state.claims_lost),
            ("leases_lost", "Runs told to stop because their lease was lost", state.leases_lost),
            ("engine_down_skips", "Vault runs skipped because the engine was unreachable", state.engine_down_skips),
            (
                "engine_down_local",
                "Vault runs run here alone because the engine was unreachable",
                state.engine_down_local,
            ),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(f"pmjobsd_coordination_{name}", documentation, value=float(value))
        if state.last_heartbeat is not None:
            yield GaugeMetricFamily(
                "pmjobsd_coordination_heartbeat_age_seconds",
                "Seconds since the engine last took this daemon's heartbeat",
                value=round(max(0.0, self.clock() - state.last_heartbeat), 3),
            )
        yield GaugeMetricFamily(
            "pmjobsd_coordination_duplicate_member",
            "1 while another daemon beats under this daemon's member name",
            value=1.0 if state.duplicate_member else 0.0,
        )


class RunCounts:
    """What happened, as plain numbers: attempts by outcome, retries, durations, alert deliveries.

    Rendered as the series prometheus_client's Counter, Histogram and Info made of the same
    calls (``pmjobsd_job_runs_total``, ``pmjobsd_job_duration_seconds_bucket``, ...), in the
    order their labels first appeared.
    """

    def __init__(self, version: str):
        self.version = version
        self._lock = threading.Lock()
        self.runs: dict[tuple[str, str], float] = {}
        self.retries: dict[str, float] = {}
        self.durations: dict[str, tuple[list[float], list[float]]] = {}  # job -> (bucket counts, [sum])
        self.alerts: dict[tuple[str, str], float] = {}

    def declare(self, job: str, statuses: Iterable[str]) -> None:
        """The series of ``job`` at 0 (those that exist stay as they are)."""
        with self._lock:
            for status in statuses:
                self.runs.setdefault((job, status), 0.0)
            self.retries.setdefault(job, 0.0)
            self.durations.setdefault(job, ([0.0] * len(DURATION_BUCKETS), [0.0]))

    def retry(self, job: str) -> None:
        with self._lock:
            self.retries[job] = self.retries.get(job, 0.0) + 1

    def finished(self, job: str, status: str, seconds: float | None) -> None:
        with self._lock:
            self.runs[(job, status)] = self.runs.get((job, status), 0.0) + 1
            if seconds is not None:
                buckets, total = self.durations.setdefault(job, ([0.0] * len(DURATION_BUCKETS), [0.0]))
                total[0] += seconds
                for index, bound in enumerate(DURATION_BUCKETS):
                    if seconds <= bound:
                        buckets[index] += 1
                        break

    def delivered(self, sink: str, result: str) -> None:
        with self._lock:
            self.alerts[(sink, result)] = self.alerts.get((sink, result), 0.0) + 1

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, InfoMetricFamily
        from prometheus_client.utils import floatToGoString

        with self._lock:
            runs, retries, alerts = dict(self.runs), dict(self.retries), dict(self.alerts)
            durations = {job: (list(buckets), total[0]) for job, (buckets, total) in self.durations.items()}
        family = CounterMetricFamily(
            "pmjobsd_job_runs", "Finished attempts of each job, by outcome", labels=["job_name", "status"]
        )
        for labels, value in runs.items():
            family.add_metric(list(labels), value)
        yield family
        family = CounterMetricFamily("pmjobsd_job_retries", "Retry attempts started", labels=["job_name"])
        for job, value in retries.items():
            family.add_metric([job], value)
        yield family
        histogram = HistogramMetricFamily(
            "pmjobsd_job_duration_seconds", "Duration of finished attempts", labels=["job_name"]
        )
        for job, (buckets, total) in durations.items():
            cumulative, running = [], 0.0
            for bound, count in zip(DURATION_BUCKETS, buckets, strict=True):
                running += count
                cumulative.append((floatToGoString(bound), running))
            histogram.add_metric([job], cumulative, total)
        yield histogram
        family = CounterMetricFamily(
            "pmjobsd_alerts", "Alert deliveries, by sink kind and result", labels=["sink", "result"]
        )
        for labels, value in alerts.items():
            family.add_metric(list(labels), value)
        yield family
        yield InfoMetricFamily("pmjobsd_build", "pmjobsd version", value={"version": self.version})


class MetricsObserver(NullObserver):
    """The run observer that counts runs, and the registry ``/metrics`` serves.

    ``status_source`` returns the status (the daemon's ``status_snapshot``);
    ``history`` seeds the jobs' own numbers; ``textfile`` is the node_exporter
    ``.prom`` path, or None.
    """

    def __init__(
        self,
        status_source: Callable[[], StatusSnapshot],
        *,
        history: RunHistory | None = None,
        textfile: str | os.PathLike | None = None,
        log: EventLogger | None = None,
        version: str = __version__,
    ):
        self.log = log or EventLogger("metrics")
        self.counts = RunCounts(version)
        self.status_collector = StatusCollector(status_source, self.log)
        self.results = JobResults(self._seed(history) if history is not None else None)
        self._registry: CollectorRegistry | None = None
        self._registry_lock = threading.Lock()
        # What changes only through this observer (counters, the jobs' numbers) is formatted once
        # per change: every method below that changes it bumps the generation, after the change.
        self._generation = 0
        self._formatted: tuple[int, bytes, bytes] | None = None
        self._coordination: CoordinationCollector | None = None
        self._textfile: TextfileWriter | None = None
        self.set_textfile(textfile)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry ``/metrics`` renders (own, never the process-wide one), made at first use."""
        with self._registry_lock:
            if self._registry is None:
                from prometheus_client import CollectorRegistry

                registry = CollectorRegistry(auto_describe=False)
                for collector in (self.counts, self.status_collector, self.results):
                    registry.register(collector)  # a collector is what has collect() and describe()
                self._registry = registry
            return self._registry

    # --- configuration (daemon start and reload) -------------------------------------------
    def set_jobs(self, names: Iterable[str]) -> None:
        """Create the per-job series at 0, so ``rate()`` and ``increase()`` work from the first run.

        The runs series are made for the outcomes a job reports itself; the runner's own
        (TIMEOUT, INTERRUPTED) appear when they first happen.
        """
        for name in names:
            self.counts.declare(name, [status.value for status in Status if status.returnable])
        self._changed()

    def declare_metrics(self, declared: Mapping[str, Sequence[JobMetric]]) -> None:
        """The named metrics each job exports (job name -> its ``JobSpec.metrics``)."""
        self.results.declare(declared)
        self._changed()

    def set_coordination(self, source: Callable[[], CoordinationSnapshot] | None) -> None:
        """Export the coordination state (``source`` returns its snapshot), or stop exporting it (None)."""
        self._coordination = CoordinationCollector(source) if source is not None else None

    def set_textfile(self, path: str | os.PathLike | None) -> None:
        """Start, move or stop the textfile output (``metrics.textfile``)."""
        target = Path(path).expanduser() if path else None
        if self._textfile is not None and self._textfile.path == target:
            return
        if self._textfile is not None:
            self._textfile.close()
            self._textfile = None
        if target is not None:
            self._textfile = TextfileWriter(target, self.exposition, self.log)

    def update_textfile(self) -> None:
        """Ask the textfile writer (if any) to write the current state soon."""
        if self._textfile is not None:
            self._textfile.request()

    def exposition(self) -> bytes:
        """The Prometheus text format of everything (what ``generate_latest`` of the registry gives).

        The counters and the jobs' numbers are formatted again only after they changed, the
        per-job gauges only when the status has new job entries; the daemon's and the
        coordination's gauges each time.
        """
        from prometheus_client import generate_latest

        generation = self._generation
        formatted = self._formatted
        if formatted is None or formatted[0] != generation:
            formatted = (generation, generate_latest(self.counts), generate_latest(self.results))
            self._formatted = formatted
        text = formatted[1] + self.status_collector.text() + formatted[2]
        if self._coordination is not None:  # read from the coordination state at each scrape (cheap)
            text += generate_latest(self._coordination)
        return text

    def _changed(self) -> None:
        self._generation += 1

    # --- fed by the runner and the alert manager -------------------------------------------
    def run_started(self, record: RunRecord) -> None:
        if record.attempt > 1:
            self.counts.retry(record.job)
            self._changed()

    def run_finished(self, record: RunRecord) -> None:
        if record.given_up:
            return  # the attempt was counted when it ended; it only became final now
        seconds = None if record.finished_at is None else max(0.0, record.finished_at - record.started_at)
        self.counts.finished(record.job, record.status.value, seconds)
        self.results.add(record.job, numeric_results(record.metrics))
        self._changed()
        self.update_textfile()

    def alert_delivered(self, sink: str, result: str) -> None:
        """AlertManager's ``on_delivery`` hook: ``result`` is "sent" or "failed"."""
        self.counts.delivered(sink, result)
        self._changed()

    def close(self) -> None:
        if self._textfile is not None:
            self._textfile.close()

    # --- internals ---------------------------------------------------------------------------
    @staticmethod
    def _seed(history: RunHistory) -> dict[str, dict[str, float]]:
        """The newest reported numbers of each job, from the history (so a restart keeps them)."""
        seeded: dict[str, dict[str, float]] = {}
        for row in history.recent(limit=1000):
            if row["job"] not in seeded and row["metrics"]:
                results = numeric_results(row["metrics"])
                if results:
                    seeded[row["job"]] = results
        return seeded


class TextfileWriter:
    """Writes the exposition to ``path`` on its own thread whenever asked (requests coalesce)."""

    def __init__(self, path: Path, render: Callable[[], bytes], log: EventLogger):
        self.path = path
        self.render = render
        self.log = log
        self._wanted = threading.Event()
        self._stopping = False
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="pmjobsd-textfile", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def write_now(self) -> bool:
        """Render and write once, on the caller's thread; return False (and log once) on failure."""
        try:
            write_atomic(self.path, self.render(), existing_mode(self.path))
        except OSError as exc:
            if not self._failed:
                self.log.error("metrics.textfile_failed", path=str(self.path), error=f"{type(exc).__name__}: {exc}")
            self._failed = True
            return False
        if self._failed:
            self.log.info("metrics.textfile_written", path=str(self.path))
        self._failed = False
        return True

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            self.write_now()  # on close too: the file keeps the last runs of a stopping daemon
            if self._stopping:
                return

    def close(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join(timeout)
