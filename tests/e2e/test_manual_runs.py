"""End to end: a burst of manual runs neither gives up on its own runs nor starves the schedule."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from pmjobsd.core import control
from tests.support.alert_fixtures import webhook_receiver
from tests.support.daemon import wait_for

TICK = {"cron": "* * * * * *", "callable": "tests.support.sample_jobs:ok"}
QUICK = {
    "cron": "@yearly",
    "catch_up": False,
    "callable": "tests.support.sample_jobs:sleepy",
    "options": {"seconds": 0.1},
    "timeout": 2,
    "overlap": "allow",
}


def test_200_concurrent_run_now_wait_all_finish_and_the_schedule_keeps_its_slots(home, daemon_factory):
    home.write_settings({"max_workers": 2, "definitions": {"tick": TICK, "quick": QUICK}})
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="tick"), message="a first tick")
    sockets = [Path(home.events("daemon.ready")[-1]["control_socket"])]  # where the daemon says it bound
    answers: list[dict] = []
    lock = threading.Lock()

    def run_now() -> None:
        try:
            answer = control.ask_daemon(sockets, {"cmd": "run-now", "job": "quick", "wait": True}, timeout=None)
        except control.ControlError as exc:
            answer = {"ok": False, "error": str(exc)}
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=run_now) for _ in range(200)]
    began = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    ended = time.time()
    gave_up = [answer for answer in answers if not answer.get("ok")]
    assert len(answers) == 200 and not gave_up, gave_up[:3]
    assert {answer["run"]["status"] for answer in answers} == {"OK"}
    assert ended - began > 10  # the manual runs really queued (200 x 0.1 s on the one seat they may take)
    # Meanwhile the 1-second job got a worker at (nearly) every slot.
    ticks = [line for line in home.events("job.succeeded", job="tick") if began + 1 <= _epoch(line["ts"]) <= ended - 1]
    assert len(ticks) >= 0.7 * (ended - began - 2), (len(ticks), ended - began)
    assert daemon.stop() == 0


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts).timestamp()


def test_run_now_without_a_daemon_alerts_and_writes_the_textfile_like_the_daemon(home, tmp_path):
    server, alerts = webhook_receiver()
    textfile = tmp_path / "pmjobsd.prom"
    try:
        home.write_settings(
            {
                "alerts": {"desktop": False, "targets": [f"json://127.0.0.1:{server.server_port}/hook"]},
                "metrics": {"textfile": str(textfile)},
                "definitions": {
                    "broken": {"cron": "@yearly", "callable": "tests.support.sample_jobs:fail", "retries": 0}
                },
            }
        )
        result = home.cli("run-now", "broken")
        assert result.returncode == 2, result.stderr
        assert "FAIL" in result.stdout
        (entry,) = alerts.snapshot()  # delivered before the command returned
        body = json.loads(entry["body"])
        assert body["title"] == "pmjobsd: broken FAIL"
        assert 'pmjobsd_job_runs_total{job_name="broken",status="FAIL"} 1.0' in textfile.read_text()
        # The same alert state as the daemon's: a second failure is not announced again.
        assert home.cli("run-now", "broken").returncode == 2
        assert len(alerts.snapshot()) == 1
    finally:
        server.shutdown()
