"""What a scrape costs, with 1,000 and with 1,000,000 attempts in the run history.

pmjobsd: ``GET /metrics``, ``/``, ``/v1/jobs`` and ``/healthz`` on
:class:`pmjobsd.observe.web.StatusServer`, whose status source is the daemon's: a
:class:`~pmjobsd.observe.status.StatusCache` over a real run history (12 jobs) and an idle
live state (next runs, nothing running), so the job entries are built once per change of
state and each request formats the rest; ``status --json`` from the daemon (its control
handler in process: the snapshot, the document, the compact JSON the socket sends) and
without a daemon (:func:`pmjobsd.observe.status.offline_status`, in process).  Every row
should cost the same at both sizes.  Baselines, like for like, in the same run:

* ``/metrics``: ``prometheus_client.start_http_server`` serving a registry that yields the
  same families and samples as pmjobsd's exposition, parsed ahead of time (cached gauges);
* ``/`` and ``/v1/jobs``: a plain ``http.server`` serving the pre-rendered page / document
  (same bytes) with the same headers;
* ``/healthz``: the same plain ``http.server`` answering a static 200 with a small JSON body;
* ``status --json``: the same call on the 1,000-attempt history (ratio = growth with the history).

The history is filled with plain INSERTs (the summary's triggers dropped) and the summary
is then rebuilt by the migration path a history from before it takes (SUMMARY_FILL), so that
a million rows take seconds, not minutes.  Run: ``python benchmarks/bench_metrics.py [--quick]``.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import fill_history
from pmjobsd.core.history import RunHistory
from pmjobsd.core.settings import load_settings
from pmjobsd.observe.metrics import MetricsObserver
from pmjobsd.observe.status import DaemonState, StatusCache, offline_status
from pmjobsd.observe.statuspage import render_page
from pmjobsd.observe.web import Health, StatusServer

JOBS = 12
HISTORY_SIZES = (1_000, 1_000_000)  # a month of the built-in jobs; 12 days of a job every second
QUICK_SIZES = (1_000, 100_000)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _time_in_turns(port: int, other: int, path: str, rounds: int) -> tuple[float, float]:
    """Median milliseconds of ``rounds`` GETs of ``path`` on each port, one on each in turn (keep-alive)."""
    conns = [http.client.HTTPConnection("127.0.0.1", each, timeout=30) for each in (port, other)]
    timings: list[list[float]] = [[], []]
    for index in range(2 * rounds + 2):
        side = index % 2
        started = time.perf_counter()
        conns[side].request("GET", path)
        response = conns[side].getresponse()
        response.read()
        if index >= 2:  # the first of each opens its connection
            timings[side].append((time.perf_counter() - started) * 1000)
        assert response.status == 200, (path, response.status)
    for conn in conns:
        conn.close()
    return statistics.median(timings[0]), statistics.median(timings[1])


def _time_calls(call, rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _fill_history(path: Path, names: list[str], attempts: int) -> None:
    """``attempts`` finished attempts, one a second up to now, every outcome; then the summary rebuilt."""
    fill_history(path, names, attempts, time.time() - attempts, 0.5, payload=lambda index: {"items": index})


class _IdleLive:
    """A running daemon's live state with nothing in flight: next runs from the cron, taken once."""

    def __init__(self, loaded):
        now = datetime.now(timezone.utc)
        self.next_runs = {name: job.schedule.next_after(now) for name, job in loaded.jobs.items()}

    def next_run(self, job):
        return self.next_runs.get(job)

    def running(self):
        return []

    def abandoned_count(self, job=None):
        return 0

    def held(self, job):
        return None

    def unwritten(self):
        return {}


class _Cached:
    """A prometheus_client collector yielding families parsed ahead of time (the cached-gauge design)."""

    def __init__(self, exposition: bytes):
        self.families = list(text_string_to_metric_families(exposition.decode()))

    def collect(self):
        return self.families


def _plain_server(routes: dict[str, tuple[bytes, str]]) -> ThreadingHTTPServer:
    """A plain http.server answering ``routes`` (path -> body, content type) with 200, keep-alive."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            body, content_type = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(quick: bool = False) -> list[dict]:
    rounds = 20 if quick else 200
    measured = {attempts: _run_once(attempts, rounds) for attempts in (QUICK_SIZES if quick else HISTORY_SIZES)}
    small = min(measured)
    rows = []
    for attempts, result in measured.items():
        note = f"{JOBS} jobs, {attempts:,} attempts in the history, median of {rounds} keep-alive GETs on 127.0.0.1"
        rows += [
            _row(f"GET /metrics ({attempts:,} attempts)", result["metrics"], result["base_metrics"],
                 "prometheus_client start_http_server, same samples cached", "ms",
                 note + f"; {result['samples']} samples, gauges computed from the status at each scrape"),
            _row(f"GET / ({attempts:,} attempts)", result["page"], result["base_page"],
                 "http.server, the same page pre-rendered", "ms", note + f"; {result['page_bytes']:,} bytes"),
            _row(f"GET /v1/jobs ({attempts:,} attempts)", result["jobs"], result["base_jobs"],
                 "http.server, the same document pre-rendered", "ms", note + f"; {result['jobs_bytes']:,} bytes"),
            _row(f"GET /healthz ({attempts:,} attempts)", result["health"], result["base_health"],
                 "http.server, static 200", "ms", "reads the heartbeat only, no lock"),
            _row(f"status --json, daemon running ({attempts:,} attempts)", result["daemon"],
                 measured[small]["daemon"], f"the same with {small:,} attempts", "ms",
                 f"the daemon's control handler in process: snapshot, document, compact JSON "
                 f"({result['daemon_bytes']:,} bytes); median of {rounds}"),
            _row(f"status --json without daemon ({attempts:,} attempts)", result["offline"],
                 measured[small]["offline"], f"the same with {small:,} attempts", "ms",
                 "offline_status in process: open the history, header check, build, JSON; median of "
                 f"{rounds}; history filled in {result['fill_s']:.0f} s"),
        ]  # fmt: skip
    return rows


def _row(name: str, ours: float, baseline: float, baseline_name: str, unit: str, notes: str) -> dict:
    return {
        "benchmark": name,
        "pmjobsd": round(ours, 2),
        "baseline": round(baseline, 2),
        "baseline_name": baseline_name,
        "unit": unit,
        "ratio": round(ours / baseline, 2),
        "notes": notes,
    }


def _run_once(attempts: int, rounds: int) -> dict:
    result: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        settings_path = Path(folder) / "settings.json"
        names = [f"job_{n:02d}" for n in range(JOBS)]
        definitions = {name: {"cron": "*/5 * * * *", "callable": "tests.support.web_jobs:counted"} for name in names}
        settings_path.write_text(json.dumps({"jobs": {"timezone": "UTC", "definitions": definitions}}))
        loaded = load_settings(settings_path)
        history_path = Path(folder) / "history.db"
        started = time.perf_counter()
        _fill_history(history_path, names, attempts)
        result["fill_s"] = time.perf_counter() - started
        history = RunHistory(history_path)
        daemon = DaemonState(running=True, pid=1, version="bench", started_at=None, abandoned_threads=0)

        cache, live = StatusCache(), _IdleLive(loaded)

        def status():
            return cache.build(
                loaded, history, daemon=daemon, live=live, jobs=loaded.jobs, now=datetime.now(timezone.utc)
            )

        def daemon_status() -> bytes:  # what the control socket sends for {"cmd": "status"}
            return json.dumps({"ok": True, "status": cache.document(status())}, default=str).encode() + b"\n"

        metrics = MetricsObserver(status, history=history)
        metrics.set_jobs(names)
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
        result["offline"] = _time_calls(lambda: json.dumps(offline_status(history_path, loaded, None)), rounds)
        result["daemon"] = _time_calls(daemon_status, rounds)
        result["daemon_bytes"] = len(daemon_status())

        # The baselines: the same bytes, computed ahead of time.
        exposition = metrics.exposition()
        page = render_page(status()).encode()
        document = json.dumps(status().to_json(), indent=2).encode() + b"\n"
        result["page_bytes"], result["jobs_bytes"] = len(page), len(document)
        registry = CollectorRegistry()
        cached = _Cached(exposition)
        result["samples"] = sum(len(family.samples) for family in cached.families)
        registry.register(cached)
        baseline_port = _free_port()
        baseline_server, _ = start_http_server(baseline_port, addr="127.0.0.1", registry=registry)
        plain = _plain_server(
            {
                "/": (page, "text/html; charset=utf-8"),
                "/v1/jobs": (document, "application/json"),
                "/healthz": (b'{"status": "ok", "heartbeat_age_s": 0.0, "limit_s": 1.0}\n', "application/json"),
            }
        )
        plain_port = plain.server_address[1]
        # Each GET of pmjobsd right after one of its baseline, in turns: the machine's load falls on both.
        for key, path, other in (
            ("metrics", "/metrics", baseline_port),
            ("page", "/", plain_port),
            ("jobs", "/v1/jobs", plain_port),
            ("health", "/healthz", plain_port),
        ):
            result[key], result[f"base_{key}"] = _time_in_turns(port, other, path, rounds)
        server.close()
        baseline_server.shutdown()
        plain.shutdown()
        history.close()
    return result


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    keys = ["benchmark", "pmjobsd", "baseline", "baseline_name", "unit", "ratio", "notes"]
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[key]) for key in keys))
