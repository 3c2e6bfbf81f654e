"""How long a failing run's alert holds up the runner, pmjobsd vs sending it inline.

pmjobsd: ``AlertManager.run_finished`` with its defaults (queues the message,
returns; delivery on the sink's own thread: 10 s timeout, 3 attempts).
Baselines, both sending inline from the runner as a job scheduler without a
delivery thread would, with the settings users get by default:

* apprise ``notify()`` to ``json://`` (apprise's own default timeouts);
* a plain ``requests.post(url, json=...)``, no timeout, as a hand-written hook.

The endpoint is a real local webhook in its own process that answers 200, at
once or after 0.5 s (a slow but working service), so every baseline figure is
a delivery's real cost, not a timeout someone chose.  Every side's messages
are checked as delivered.  Run: ``python benchmarks/bench_alerts.py [--quick]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apprise
import requests

from benchmarks.common import print_table, row
from pmjobsd.alerts import AlertManager
from pmjobsd.alerts.state import AlertState
from pmjobsd.app.paths import AppPaths
from pmjobsd.core.context import Status
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.settings import Alerts
from pmjobsd.observe.joblog import EventLogger

DELAYS = (0.0, 0.5)  # seconds the endpoint takes to answer


def serve(delay: float) -> None:
    """The webhook (run in a child process): POST -> 200 after ``delay`` s; GET /count -> POSTs so far."""
    posts = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            posts[0] += 1
            self._answer(b"{}")

        def do_GET(self) -> None:
            self._answer(str(posts[0]).encode())

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Webhook:
    """The webhook process; ``posts()`` is how many messages it has received."""

    def __init__(self, delay: float):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(delay)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def posts(self) -> int:
        return int(requests.get(f"http://127.0.0.1:{self.port}/count", timeout=5).text)

    def __enter__(self) -> Webhook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


def _record(index: int) -> RunRecord:
    now = time.time()
    return RunRecord(
        f"run-{index}", f"job{index}", 1, "schedule", None, now, Status.FAIL, now,
        summary="failed", consecutive_failures=1,
    )  # fmt: skip


def _per_call_ms(call, rounds: int) -> float:
    started = time.perf_counter()
    for index in range(rounds):
        call(index)
    return (time.perf_counter() - started) * 1000 / rounds


def _delivered(hook: Webhook, expected: int, what: str) -> None:
    deadline = time.monotonic() + 10
    while hook.posts() < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hook.posts() == expected, f"{what}: {hook.posts()} of {expected} messages delivered"


def measure_one(delay: float, rounds: int) -> dict[str, float]:
    """ms per failed run for pmjobsd and each baseline against a webhook answering after ``delay`` s."""
    with Webhook(delay) as hook, tempfile.TemporaryDirectory() as home:
        url = f"json://127.0.0.1:{hook.port}/hook"
        paths = AppPaths.resolve(
            data_dir=Path(home) / "data", config_dir=Path(home) / "config", cache_dir=Path(home) / "cache"
        )
        manager = AlertManager(
            Alerts(desktop=False, targets=[url]), paths, EventLogger("bench"), host="bench", queue_size=rounds + 1
        )
        ours = _per_call_ms(lambda i: manager.run_finished(_record(i)), rounds)
        _delivered(hook, rounds, "pmjobsd")  # delivered before the baselines are timed
        manager.close(1.0)

        inline = apprise.Apprise()
        inline.add(url)
        with_apprise = _per_call_ms(lambda i: inline.notify(title="pmjobsd: job FAIL", body="failed"), rounds)
        _delivered(hook, 2 * rounds, "apprise")

        post_url = f"http://127.0.0.1:{hook.port}/hook"
        body = {"title": "pmjobsd: job FAIL", "body": "failed"}
        with_requests = _per_call_ms(lambda i: requests.post(post_url, json=body), rounds)
        _delivered(hook, 3 * rounds, "requests.post")
    return {"pmjobsd": ours, "apprise": with_apprise, "requests": with_requests, "state": _state_write_ms(rounds)}


def _state_write_ms(rounds: int) -> float:
    """ms per alerts.json write alone (atomic, fsync'd): the part of pmjobsd's delay that keeps its promise
    that a restart neither repeats nor forgets an alert."""
    with tempfile.TemporaryDirectory() as folder:
        state = AlertState(Path(folder) / "alerts.json")
        return _per_call_ms(lambda i: state.put(f"job{i}", {"status": "FAIL", "run_id": f"run-{i}"}), rounds)


def measure(quick: bool = False) -> dict:
    """{"rounds": n, delay: {"pmjobsd": ms, "apprise": ms, "requests": ms}, ...}, each delivery checked."""
    rounds = 3 if quick else 10
    return {"rounds": rounds, **{delay: measure_one(delay, rounds) for delay in DELAYS}}


def example_measurements() -> dict:
    """Figures of the shape of a real run (for the tests of ``rows_from``)."""
    return {"rounds": 10, 0.0: {"pmjobsd": 1.7, "apprise": 9.0, "requests": 3.0, "state": 1.2}}


def rows_from(measured: dict) -> list[dict]:
    """The result rows; ratio = pmjobsd / baseline (``common.row``)."""
    rounds = measured["rounds"]
    rows = []
    for delay in (key for key in measured if key != "rounds"):
        answers = "at once" if delay == 0 else f"after {delay:g} s"
        figures = measured[delay]
        notes = (
            f"{rounds} failed runs, each a new job (one fsync'd alerts.json write, {figures['state']:.1f} ms "
            "timed alone); 127.0.0.1 webhook in its own "
            f"process answering 200 {answers}; every message checked as delivered"
        )
        rows += [
            row(
                f"runner delay per failed run, webhook answers {answers}",
                figures["pmjobsd"],
                figures["apprise"],
                "apprise notify() inline, default timeouts",
                "ms",
                notes + "; pmjobsd delivers on the sink's own thread",
            ),
            row(
                f"runner delay per failed run, webhook answers {answers}",
                figures["pmjobsd"],
                figures["requests"],
                "requests.post inline, no timeout",
                "ms",
                notes,
            ),
        ]
    return rows


def run(quick: bool = False) -> list[dict]:
    return rows_from(measure(quick))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs per figure instead of 10")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
    else:
        import logging

        logging.getLogger("pmjobsd").addHandler(logging.NullHandler())  # no stderr noise
        print_table(run(args.quick))
