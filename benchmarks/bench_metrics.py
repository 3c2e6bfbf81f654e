"""What a scrape costs: pmjobsd computes its gauges from the status at every scrape.

pmjobsd: ``GET /metrics`` on :class:`pmjobsd.observe.web.StatusServer`, whose collector
builds the status (settings + a real run history of 1 000 and of
20 000 attempts, 12 jobs) at each request.  Baseline: ``prometheus_client.start_http_server``
serving a registry whose gauges were set beforehand (the cached-gauge design
this module avoids, as it can drift from ``pmjobsd status``).  Same machine,
same client, side by side.  Also the status page (``GET /``) for scale.
Run: ``python benchmarks/bench_metrics.py [--quick]``.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from pmjobsd.core.context import Status
from pmjobsd.core.history import RunHistory
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.settings import load_settings
from pmjobsd.observe.metrics import MetricsObserver
from pmjobsd.observe.status import DaemonState, build_status
from pmjobsd.observe.web import Health, StatusServer

JOBS = 12
HISTORY_SIZES = (1_000, 20_000)  # a month of the built-in jobs; a month of a job every two minutes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _time_gets(port: int, path: str, rounds: int) -> float:
    """Median milliseconds of ``rounds`` GETs on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, response.status
    conn.close()
    return statistics.median(timings)


def _fill_history(history: RunHistory, names: list[str], attempts: int) -> None:
    now = time.time() - attempts
    statuses = [Status.OK, Status.OK, Status.WARN, Status.FAIL]
    for index in range(attempts):
        record = RunRecord(
            f"run-{index}",
            names[index % len(names)],
            1,
            "schedule",
            None,
            now + index,
            statuses[index % 4],
            now + index + 0.5,
            summary="bench",
            metrics={"items": index},
        )
        history.record_start(record)
        history.record_finish(record)


def run(quick: bool = False) -> list[dict]:
    rows = []
    for attempts in HISTORY_SIZES:
        rows += _run_once(attempts, 20 if quick else 200)
    return rows


def _run_once(attempts: int, rounds: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        settings_path = Path(folder) / "settings.json"
        names = [f"job_{n:02d}" for n in range(JOBS)]
        settings_path.write_text(
            json.dumps(
                {
                    "jobs": {
                        "timezone": "UTC",
                        "definitions": {
                            name: {"cron": "*/5 * * * *", "callable": "tests.support.web_jobs:counted"}
                            for name in names
                        },
                    }
                }
            )
        )
        loaded = load_settings(settings_path)
        history = RunHistory(Path(folder) / "history.db")
        _fill_history(history, names, attempts)
        daemon = DaemonState(running=True, pid=1, version="bench", started_at=None, abandoned_threads=0)

        def status():
            return build_status(loaded, history, daemon=daemon)

        metrics = MetricsObserver(status, history=history)
        server = StatusServer(
            "127.0.0.1",
            0,
            allow_remote=False,
            metrics_source=metrics.exposition,
            status_source=status,
            health_source=lambda: Health(True, 0, 1),
        )
        server.start()
        port = server.address[1]
        ours_metrics = _time_gets(port, "/metrics", rounds)
        ours_page = _time_gets(port, "/", rounds)
        ours_health = _time_gets(port, "/healthz", rounds)
        server.close()

        # Baseline: the same families, values set ahead of time, served by prometheus_client itself.
        registry = CollectorRegistry()
        families = [
            "pmjobsd_job_last_run_timestamp_seconds",
            "pmjobsd_job_next_run_timestamp_seconds",
            "pmjobsd_job_status",
            "pmjobsd_job_running",
            "pmjobsd_job_enabled",
            "pmjobsd_job_consecutive_failures",
            "pmjobsd_job_last_success_timestamp_seconds",
        ]
        for name in families:
            gauge = Gauge(name, "cached", ["job_name"], registry=registry)
            for job in names:
                gauge.labels(job).set(time.time())
        result = Gauge("pmjobsd_job_result_value", "cached", ["job_name", "name"], registry=registry)
        for job in names:
            result.labels(job, "items").set(1)
        baseline_port = _free_port()
        baseline_server, baseline_thread = start_http_server(baseline_port, addr="127.0.0.1", registry=registry)
        baseline_metrics = _time_gets(baseline_port, "/metrics", rounds)
        baseline_server.shutdown()
        history.close()
    note = f"{JOBS} jobs, {attempts} attempts in the history, median of {rounds} keep-alive GETs on 127.0.0.1"
    return [
        {
            "benchmark": f"GET /metrics ({attempts} attempts)",
            "pmjobsd": round(ours_metrics, 2),
            "baseline": round(baseline_metrics, 2),
            "baseline_name": "prometheus_client start_http_server, gauges cached",
            "unit": "ms",
            "ratio": round(ours_metrics / baseline_metrics, 2),
            "notes": note + "; gauges computed from the status document",
        },
        {
            "benchmark": f"GET / ({attempts} attempts)",
            "pmjobsd": round(ours_page, 2),
            "baseline": round(baseline_metrics, 2),
            "baseline_name": "same baseline (cached /metrics)",
            "unit": "ms",
            "ratio": round(ours_page / baseline_metrics, 2),
            "notes": note,
        },
        {
            "benchmark": f"GET /healthz ({attempts} attempts)",
            "pmjobsd": round(ours_health, 2),
            "baseline": round(baseline_metrics, 2),
            "baseline_name": "same baseline (cached /metrics)",
            "unit": "ms",
            "ratio": round(ours_health / baseline_metrics, 2),
            "notes": "reads the heartbeat only, no lock",
        },
    ]


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    keys = ["benchmark", "pmjobsd", "baseline", "baseline_name", "unit", "ratio", "notes"]
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[key]) for key in keys))
