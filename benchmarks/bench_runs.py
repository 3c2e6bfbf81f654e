"""Run overhead: no-op runs per second through pmjobsd's Runner, next to a bare thread pool.

    python benchmarks/bench_runs.py [--quick]

pmjobsd: ``Runner`` with 4 workers, the real run history as the daemon writes
it (``HistoryWriter``: its own thread, group commit into the SQLite WAL file; a
start in the start journal, then its row, updated at the end), the real jobs.log handler (JSON
lines, two per run: ``job.started`` and ``job.succeeded``) and the alert
observer (no sinks), driving a job that does nothing; all runs offered at
once, timed until the last is done.  Baseline: the same no-op submitted to
``concurrent.futures.ThreadPoolExecutor(4)`` (what APScheduler 3's default
executor wraps; no record of the run).  The notes split pmjobsd's cost per
run into its history writes and its log lines, each timed alone.

What the figure keeps, and costs: every start is on disk before the job is
called (one ``pwrite`` into the start journal; a run that started is in the
history after ``kill -9``), its row committed by the writer's next group
commit (one multi-row statement for the starts and ends of a burst; WAL
checkpoints on their own thread); both jobs.log lines are written by
``os.write`` before the run goes on (no line is lost in a crash).  Handing
the lines to a thread without waiting would be faster and would give up
exactly that promise.  The notes add the process CPU time
per run, steadier than the rate on a shared machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, row
from benchmarks.probe_jobs import noop
from pmjobsd.alerts.manager import AlertManager
from pmjobsd.app.paths import AppPaths
from pmjobsd.core.cron import CronSchedule
from pmjobsd.core.history import RunHistory
from pmjobsd.core.history_writer import HistoryWriter
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import Overlap, Status
from pmjobsd.core.privacy import EntryIdHasher
from pmjobsd.core.runner import Runner, RunRequest, new_run_id
from pmjobsd.core.settings import Alerts, JobDefinition, ResolvedJob
from pmjobsd.observe.joblog import LOGGER_NAME, EventLogger, setup_logging

WORKERS = 4
_cpu_us = 0.0  # process CPU time per run of the last pmjobsd_runs_per_second() (all threads, SQLite's too)


def pmjobsd_runs_per_second(paths: AppPaths, runs: int) -> float:
    history = RunHistory(paths.history_path)
    writer = HistoryWriter(paths.history_path, reader=history)
    alerts = AlertManager(Alerts(desktop=False), paths, EventLogger("alerts"), host="bench")
    runner = Runner(
        max_workers=WORKERS,
        history=writer,
        paths=paths,
        hash_entry_id=EntryIdHasher.from_file(paths.id_key_path),
        observers=[alerts],
    )
    job = ResolvedJob(
        "noop",
        JobDefinition(cron="* * * * *", overlap=Overlap.ALLOW),
        noop,
        {},
        False,
        CronSchedule("* * * * *", timezone.utc),
    )
    requests = [RunRequest(job, "schedule") for _ in range(runs)]
    started, cpu = time.perf_counter(), time.process_time()
    for request in requests:
        runner.offer(request, "allow")
    for request in requests:
        request.done.wait()
    writer.flush(10.0)  # the last ends are on disk too
    elapsed = time.perf_counter() - started
    global _cpu_us  # a note beside the figure
    _cpu_us = (time.process_time() - cpu) / runs * 1e6
    runner.shutdown(1.0)
    alerts.close(0.1)
    writer.close()
    history.close()
    return runs / elapsed


def pool_runs_per_second(runs: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        started = time.perf_counter()
        futures = [pool.submit(noop, None) for _ in range(runs)]
        for future in futures:
            future.result()
        return runs / (time.perf_counter() - started)


def history_us(paths: AppPaths, runs: int) -> float:
    """Microseconds for one run's two history writes, alone (one transaction each, no group commit)."""
    with RunHistory(paths.state_dir / "history-alone.db") as history:
        started = time.perf_counter()
        for _ in range(runs):
            record = RunRecord(new_run_id(), "noop", 1, "schedule", None, time.time())
            history.write(record)
            record.finished_at, record.status = time.time(), Status.OK
            history.write(record)
        return (time.perf_counter() - started) / runs * 1e6


def log_line_us(lines: int) -> float:
    """Microseconds for one jobs.log line like the runner's, alone."""
    log = EventLogger("runner")
    started = time.perf_counter()
    for _ in range(lines):
        log.info("job.succeeded", job="noop", run_id="0" * 32, attempt=1, status="OK", duration_ms=0)
    return (time.perf_counter() - started) / lines * 1e6


def run(quick: bool = False) -> list[dict]:
    runs = 2000 if quick else 10000
    with tempfile.TemporaryDirectory(prefix="bench_runs_") as folder:
        root = Path(folder)
        paths = AppPaths.resolve(data_dir=root / "data", config_dir=root / "config", cache_dir=root / "cache")
        setup_logging(paths.jobs_log_path, console=False)
        try:
            ours = pmjobsd_runs_per_second(paths, runs)
            history_cost, log_cost = history_us(paths, runs), log_line_us(runs)
        finally:
            for handler in list(logging.getLogger(LOGGER_NAME).handlers):
                logging.getLogger(LOGGER_NAME).removeHandler(handler)
                handler.close()
    baseline = pool_runs_per_second(runs)
    notes = (
        f"{runs} runs; {1e6 / ours:.0f} us per run, CPU {_cpu_us:.0f} us per run; timed alone: history 2 writes {history_cost:.0f} us "
        f"(one transaction each; the runner's writer shares them by group commit), 2 jobs.log lines {2 * log_cost:.0f} us"
    )
    return [
        row(
            "no-op runs per second (history + jobs.log)", ours, baseline, "ThreadPoolExecutor(4), bare", "runs/s", notes
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 runs instead of 10,000")
    print_table(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
