"""End to end: the real daemon's HTTP endpoint, scraped by a real Prometheus, rendered by real Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO
from tests.support.appfixtures import (
    CANARY,
    assert_no_canary,
    canary_entry,
    create_backup,
    create_vault,
    write_key_files,
)
from tests.support.daemon import wait_for

COUNTED = {"cron": "* * * * * *", "callable": "tests.support.web_jobs:counted"}
ALTERNATING = {"cron": "* * * * * *", "callable": "tests.support.web_jobs:alternating", "retries": 0}
# Jobs that run once at start (catch-up of a never-run job) and then sit: one per outcome.
SETTLED = {
    "yearly": {"cron": "@yearly", "callable": "tests.support.web_jobs:counted", "catch_up": False},
    "switched_off": {"cron": "@daily", "callable": "tests.support.web_jobs:counted", "enabled": False},
    "failing": {"cron": "@yearly", "callable": "tests.support.sample_jobs:fail", "retries": 0},
    "warning": {"cron": "@yearly", "callable": "tests.support.sample_jobs:warn"},
}
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROMETHEUS = shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str, timeout: float = 10) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def metric_value(port: int, name: str, **labels) -> float | None:
    _, _, body = get(port, "/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def web_settings(port: int, **metrics) -> dict:
    return {"alerts": {"desktop": False}, "metrics": {"enabled": True, "port": port, **metrics}}


def test_prometheus_scrapes_the_daemon(home, daemon_factory, tmp_path):
    if not PROMETHEUS:
        pytest.skip("prometheus (Debian package prometheus) not installed")
    port, prometheus_port = free_port(), free_port()
    home.write_settings({**web_settings(port), "definitions": {"counted": COUNTED}})
    daemon = daemon_factory()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1m}\n"
        "scrape_configs:\n"
        "  - job_name: pmjobsd\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    log = open(tmp_path / "prometheus.log", "w")
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )

    def query(expression: str) -> list:
        url = f"http://127.0.0.1:{prometheus_port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)["data"]["result"]
        except (urllib.error.URLError, ConnectionError):
            return []

    try:
        up = wait_for(
            lambda: [r for r in query('up{job="pmjobsd"}') if r["value"][1] == "1"],
            timeout=60,
            interval=0.5,
            message="Prometheus sees up == 1",
        )
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"
        runs = wait_for(
            lambda: [
                r for r in query('pmjobsd_job_runs_total{job_name="counted",status="OK"}') if float(r["value"][1]) >= 1
            ],
            timeout=30,
            interval=0.5,
            message="runs scraped",
        )
        # job_name arrives as is, and Prometheus's own job label is untouched (no exported_job).
        assert runs[0]["metric"]["job"] == "pmjobsd" and "exported_job" not in runs[0]["metric"]
        assert query('pmjobsd_build_info{version="0.1.0"}')
        assert wait_for(
            lambda: query('pmjobsd_job_result_value{job_name="counted",name="things_counted"} == 3'),
            timeout=30,
            interval=0.5,
            message="the job's own number",
        )
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    assert daemon.stop() == 0


def test_status_page_in_headless_chromium(home, daemon_factory, tmp_path):
    if not CHROMIUM:
        pytest.skip("chromium (Debian package chromium) not installed")
    port = free_port()
    home.write_settings(
        {**web_settings(port), "definitions": {"alternating": ALTERNATING, "counted": COUNTED, **SETTLED}}
    )
    daemon = daemon_factory()
    wait_for(
        lambda: len(home.events("job.started", job="alternating")) >= 4 and home.events("job.failed", job="failing"),
        timeout=30,
        message="four runs",
    )
    # Stop the runs (the page then shows a settled history), then render it.
    home.write_settings(
        {
            **web_settings(port),
            "definitions": {
                "alternating": {**ALTERNATING, "cron": "@yearly"},
                "counted": {**COUNTED, "cron": "@yearly"},
                **SETTLED,
            },
        }
    )
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: home.events("config.reloaded"), message="reloaded")
    wait_for(lambda: all(job["status"] != "RUNNING" for job in home.status()[1]["jobs"]), message="idle")

    url = f"http://127.0.0.1:{port}/"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = PageRows()
    page.feed(dom.stdout)
    rows = page.rows
    assert set(rows) >= {"alternating", "counted", *SETTLED}  # and the built-ins, disabled
    assert rows["counted"]["badge"] == ("ok", "OK") and "3 things counted" in rows["counted"]["text"]
    assert rows["alternating"]["badge"][1] in ("OK", "WARN", "FAIL")
    assert rows["alternating"]["badge"][0] == rows["alternating"]["badge"][1].lower()
    marks = rows["alternating"]["marks"]
    assert len(marks) >= 4 and {"ok", "warn", "fail"} <= set(marks)
    assert marks[:3] == ["ok", "warn", "fail"]  # oldest on the left, in the order they ran
    assert rows["yearly"]["badge"] == ("idle", "NEVER RUN") and "in " in rows["yearly"]["text"]
    assert rows["switched_off"]["badge"] == ("off", "DISABLED")
    assert rows["failing"]["badge"] == ("fail", "FAIL") and rows["failing"]["marks"] == ["fail"]
    assert "RuntimeError: disk on fire" in rows["failing"]["text"] and "T0KEN" not in rows["failing"]["text"]
    assert rows["warning"]["badge"] == ("warn", "WARN") and "something to look at" in rows["warning"]["text"]
    assert page.overall == "FAIL"
    assert list(rows).index("switched_off") > list(rows).index("warning")  # enabled jobs first
    assert page.refresh

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    screenshot.unlink(missing_ok=True)
    shot = subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={screenshot}", "--window-size=1280,760", "--hide-scrollbars", url],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert daemon.stop() == 0


class PageRows(HTMLParser):
    """Reads the rendered DOM: per job row its badge (class, text), its text and its marks' classes."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}
        self.current: dict | None = None
        self.in_badge: str | None = None
        self.overall: str | None = None
        self.refresh = False
        self._overall_open = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "meta" and attrs.get("http-equiv") == "refresh":
            self.refresh = True
        if tag == "tr" and "data-job" in attrs:
            self.current = self.rows[attrs["data-job"]] = {"badge": None, "text": "", "marks": []}
        if tag == "span" and "badge" in classes:
            self.in_badge = classes[1]
            self._overall_open = attrs.get("id") == "overall"
        if tag == "span" and "mark" in classes and self.current is not None:
            self.current["marks"].append(classes[1])

    def handle_endtag(self, tag):
        if tag == "tr":
            self.current = None

    def handle_data(self, data):
        if self.in_badge:
            if self._overall_open:
                self.overall = data
            elif self.current is not None:
                self.current["badge"] = (self.in_badge, data)
            self.in_badge, self._overall_open = None, False
        if self.current is not None:
            self.current["text"] += data


def test_counters_survive_a_reload_and_the_server_moves_with_its_port(home, daemon_factory):
    first, second = free_port(), free_port()
    home.write_settings({**web_settings(first), "definitions": {"counted": COUNTED}})
    daemon = daemon_factory()
    before = wait_for(
        lambda: (
            (metric_value(first, "pmjobsd_job_runs_total", job_name="counted", status="OK") or 0) >= 3
            and metric_value(first, "pmjobsd_job_runs_total", job_name="counted", status="OK")
        ),
        message="three counted runs",
    )
    home.write_settings(
        {
            **web_settings(second, cors_origins=["https://app.example"]),
            "alerts": {"desktop": False},
            "definitions": {"counted": COUNTED},
        }
    )
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: home.events("metrics.listening", port=second), message="listening on the new port")
    after = metric_value(second, "pmjobsd_job_runs_total", job_name="counted", status="OK")
    assert after >= before  # not reset by the reload
    with pytest.raises(urllib.error.URLError):
        get(first, "/metrics")  # the old port is closed
    _, headers, _ = get_with_origin(second, "https://app.example")
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert daemon.stop() == 0


def get_with_origin(port: int, origin: str):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/jobs", headers={"Origin": origin})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def test_v1_jobs_is_the_status_document(home, daemon_factory):
    port = free_port()
    home.write_settings({**web_settings(port), "definitions": {"counted": COUNTED}})
    daemon = daemon_factory()
    wait_for(lambda: home.events("job.succeeded", job="counted"), message="a run")
    code, headers, body = get(port, "/v1/jobs")
    served = json.loads(body)
    _, cli = home.status()
    assert code == 200 and "Access-Control-Allow-Origin" not in headers  # no CORS by default
    assert served.keys() == cli.keys() and served["daemon"]["pid"] == cli["daemon"]["pid"] == daemon.pid
    assert [job["name"] for job in served["jobs"]] == [job["name"] for job in cli["jobs"]]
    (counted,) = [job for job in served["jobs"] if job["name"] == "counted"]
    assert counted["recent"] and counted["recent"][0]["status"] in ("OK", "RUNNING") and counted["last_success_at"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/jobs", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    assert daemon.stop() == 0


def test_healthz_fails_while_the_scheduler_loop_is_wedged(home, daemon_factory):
    """Wedge the real loop honestly: its settings file becomes a FIFO, so the reload blocks in open().

    (A settings file on a hung network mount blocks the same way.)  The HTTP
    threads keep answering, and /healthz turns 503 once the heartbeat is
    older than 2 x wake_interval + grace; it recovers when the read returns.
    """
    port = free_port()
    settings = {**web_settings(port, health_grace="0.5s"), "definitions": {}}
    home.write_settings(dict(settings))
    daemon = daemon_factory()
    assert get(port, "/healthz")[0] == 200
    fifo = home.settings_path.with_name("settings.fifo")
    os.mkfifo(fifo, 0o600)
    os.replace(fifo, home.settings_path)
    code_body = wait_for(
        lambda: (lambda r: r if r[0] == 503 else None)(get(port, "/healthz")), timeout=30, message="healthz 503"
    )
    health = json.loads(code_body[2])
    assert health["status"] == "stalled" and health["heartbeat_age_s"] > health["limit_s"] == 2.5
    assert get(port, "/metrics")[0] == 200  # the endpoint itself still answers
    assert metric_value(port, "pmjobsd_heartbeat_age_seconds") > 2.5

    # Unblock: open the FIFO (the loop waits in open() as its reader), put a regular file back, feed it.
    writer = os.open(home.settings_path, os.O_WRONLY)
    home.write_settings(dict(settings))
    os.write(writer, home.settings_path.read_bytes())
    os.close(writer)
    wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=30, message="healthz recovers")
    assert daemon.stop() == 0


def test_no_canary_in_any_response(home, daemon_factory, tmp_path):
    """A vault and backups full of canary strings; the jobs read them; nothing served contains one."""
    port = free_port()
    vault = create_vault(
        home.data_dir / "passwords.db",
        [canary_entry(1, expires_in_days=3), canary_entry(2, expires_in_days=-1), canary_entry(3)],
    )
    write_key_files(home.data_dir)
    backup = create_backup(home.data_dir / "backups", vault, timestamp=int(time.time()) - 3600)
    os.utime(backup, (time.time() - 3600, time.time() - 3600))  # settled: the job does not skip it
    textfile = tmp_path / "pmjobsd.prom"
    every_second = {"cron": "* * * * * *", "retries": 0}
    home.write_settings(
        {
            **web_settings(port, textfile=str(textfile)),
            "definitions": {
                "expiring_password_digest": every_second,
                "backup_integrity_check": every_second,
                "leaky": {"cron": "* * * * * *", "callable": "tests.support.web_jobs:counted"},
            },
        }
    )
    daemon = daemon_factory()
    wait_for(
        lambda: (
            home.events("job.succeeded", job="expiring_password_digest")
            and home.events("job.succeeded", job="backup_integrity_check")
            or home.events("job.failed")
        ),
        timeout=30,
        message="both vault jobs ran",
    )
    assert not home.events("job.failed"), home.events("job.failed")
    wait_for(
        lambda: metric_value(port, "pmjobsd_passwords_expiring", job_name="expiring_password_digest") == 1,
        message="expiring count",
    )
    assert metric_value(port, "pmjobsd_passwords_expired", job_name="expiring_password_digest") == 1
    verified = metric_value(port, "pmjobsd_backups_verified", job_name="backup_integrity_check")
    assert verified >= 1, get(port, "/v1/jobs")[2].decode()
    wait_for(lambda: textfile.exists() and b"pmjobsd_passwords_expiring" in textfile.read_bytes(), message="textfile")
    responses = [get(port, path)[2].decode() for path in ("/", "/index.html", "/metrics", "/v1/jobs", "/healthz", "/x")]
    responses.append(textfile.read_text())
    assert_no_canary(*responses)
    assert all(CANARY not in text for text in responses)
    assert daemon.stop() == 0


def test_off_unless_enabled_and_remote_address_refused(home, daemon_factory):
    port = free_port()
    home.write_settings({"definitions": {}, "metrics": {"port": port}})
    daemon = daemon_factory()
    with pytest.raises(urllib.error.URLError):
        get(port, "/healthz")
    home.write_settings({"definitions": {}, "metrics": {"enabled": True, "host": "0.0.0.0", "port": port}})
    daemon.signal(signal.SIGHUP)
    refused = wait_for(lambda: home.events("metrics.not_started"), message="refused")
    assert "allow_remote" in refused[-1]["error"]
    with pytest.raises(urllib.error.URLError):
        get(port, "/healthz")
    assert daemon.stop() == 0


def test_alert_deliveries_are_counted(home, daemon_factory):
    """A failing job, a real JSON webhook receiver on 127.0.0.1: pmjobsd_alerts_total{sink="webhook"} counts it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port = free_port()
    secret_url = f"json://127.0.0.1:{hook.server_address[1]}/hook/{CANARY}-token"
    try:
        home.write_settings(
            {
                **web_settings(port),
                "alerts": {"desktop": False, "targets": [secret_url]},
                "definitions": {"failing": SETTLED["failing"]},
            }
        )
        daemon = daemon_factory()
        wait_for(
            lambda: metric_value(port, "pmjobsd_alerts_total", sink="webhook", result="sent") == 1,
            message="one delivery counted",
        )
        assert received
        assert_no_canary(
            get(port, "/metrics")[2].decode(), get(port, "/v1/jobs")[2].decode(), get(port, "/")[2].decode()
        )
        assert daemon.stop() == 0
    finally:
        hook.shutdown()
        hook.server_close()
