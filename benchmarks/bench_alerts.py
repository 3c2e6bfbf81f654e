"""How long a failing run's alert holds up the runner when the webhook endpoint hangs.

pmjobsd: ``AlertManager.run_finished`` (queues, returns; delivery on the sink's thread).
Baseline: sending inline from the runner with apprise (``json://`` with 1 s connect/read
timeouts), as a job scheduler without a delivery thread would.
Run: ``python benchmarks/bench_alerts.py [--quick]``.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apprise

from pmjobsd.alerts import AlertManager
from pmjobsd.app.paths import AppPaths
from pmjobsd.core.context import Status
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.settings import Alerts
from pmjobsd.observe.joblog import EventLogger


def _silent_server() -> tuple[socket.socket, list]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list = []

    def accept():
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, held


def _record(index: int) -> RunRecord:
    now = time.time()
    return RunRecord(
        f"run-{index}",
        f"job{index}",
        1,
        "schedule",
        None,
        now,
        Status.FAIL,
        now,
        summary="failed",
        consecutive_failures=1,
    )


def run(quick: bool = False) -> list[dict]:
    rounds = 3 if quick else 10
    sock, held = _silent_server()
    port = sock.getsockname()[1]
    url = f"json://127.0.0.1:{port}/hook"
    with tempfile.TemporaryDirectory() as home:
        paths = AppPaths.resolve(
            data_dir=Path(home) / "data", config_dir=Path(home) / "config", cache_dir=Path(home) / "cache"
        )
        manager = AlertManager(
            Alerts(desktop=False, targets=[url]),
            paths,
            EventLogger("bench"),
            host="bench",
            sink_timeout=1.0,
            attempts=1,
            queue_size=rounds + 1,
        )
        started = time.perf_counter()
        for index in range(rounds):
            manager.run_finished(_record(index))
        ours_ms = (time.perf_counter() - started) * 1000 / rounds
        manager.close(0.1)
    inline = apprise.Apprise()
    inline.add(url + "?cto=1&rto=1")
    baseline_rounds = min(rounds, 3)
    started = time.perf_counter()
    for _ in range(baseline_rounds):
        inline.notify(title="pmjobsd: job FAIL", body="failed")
    baseline_ms = (time.perf_counter() - started) * 1000 / baseline_rounds
    sock.close()
    for conn in held:
        conn.close()
    return [
        {
            "benchmark": "runner delay per failed run, webhook endpoint hanging",
            "pmjobsd": round(ours_ms, 3),
            "baseline": round(baseline_ms, 1),
            "baseline_name": "apprise notify inline (1 s timeouts)",
            "unit": "ms",
            "ratio": round(ours_ms / baseline_ms, 5) if baseline_ms else None,
            "notes": f"{rounds} runs, each a new job (one fsync'd alerts.json write); "
            "delivery runs on the sink's own thread with the same 1 s timeout",
        }
    ]


if __name__ == "__main__":
    import logging

    logging.getLogger("pmjobsd").addHandler(logging.NullHandler())  # no stderr noise from alert.failed
    rows = run(quick="--quick" in sys.argv)
    keys = ["benchmark", "pmjobsd", "baseline", "baseline_name", "unit", "ratio", "notes"]
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[key]) for key in keys))
