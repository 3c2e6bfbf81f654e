"""Metrics observer, textfile, health logic and the HTTP endpoint, in process on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import shutil
import stat
import subprocess
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pmjobsd.core.history import RunHistory
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.outcomes import JobState, Status, Trigger
from pmjobsd.core.registry import JobMetric, MetricKind, builtin_names, load_builtin
from pmjobsd.observe import metrics as metrics_module
from pmjobsd.observe.metrics import MetricsObserver, job_status_code
from pmjobsd.observe.status import DaemonState, JobStatus, LastRun, RecentAttempt, SettingsState, StatusSnapshot
from pmjobsd.observe.statuspage import render_page
from pmjobsd.observe.web import AddressRefused, Health, StatusServer, heartbeat_health, is_loopback_host
from tests.support.daemon import wait_for

PROMTOOL = shutil.which("promtool")
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
BUILTIN_METRICS = {name: load_builtin(name).metrics for name in builtin_names()}


def at(hour: int, minute: int = 0, second: float = 0.0) -> float:
    """Epoch seconds of a time on 2026-11-28 (UTC)."""
    return datetime(2026, 11, 28, hour, minute, tzinfo=timezone.utc).timestamp() + second


JOB = JobStatus(
    name="backup_integrity_check",
    enabled=True,
    cron="0 3 * * 0",
    status=JobState.OK,
    next_run=datetime(2026, 11, 29, 3, tzinfo=timezone(timedelta(hours=1))),
    last_run=LastRun("r1", Status.OK, Trigger.SCHEDULE, at(8), at(8, 0, 2.5), 2500, 1, "3 of 3 backups OK", True),
    consecutive_failures=0,
    description="Check the backups",
    last_success_at=at(8, 0, 2.5),
    recent=(RecentAttempt(Status.OK, at(8), 2500, True),),
)


def snapshot(**job_overrides) -> StatusSnapshot:
    return StatusSnapshot(
        generated_at=NOW.timestamp(),
        daemon=DaemonState(
            running=True, pid=42, version="0.1.0", started_at=at(7), abandoned_threads=1, heartbeat_age_s=0.5
        ),
        settings=SettingsState("/x", True, ()),
        jobs=(replace(JOB, **job_overrides),),
    )


def record(
    job="backup_integrity_check", status=Status.OK, attempt=1, seconds=2.5, metrics=None, final=True
) -> RunRecord:
    started = time.time() - seconds
    return RunRecord(
        run_id="r",
        job=job,
        attempt=attempt,
        trigger="schedule",
        slot=None,
        started_at=started,
        status=status,
        finished_at=started + seconds,
        metrics=metrics or {},
        final=final,
    )


def samples(exposition: bytes) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} of a text exposition."""
    found = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def promtool_check(text: bytes) -> None:
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def observer():
    state = {"status": snapshot()}
    metrics = MetricsObserver(lambda: state["status"])
    metrics.declare_metrics(BUILTIN_METRICS)
    metrics.state = state
    yield metrics
    metrics.close()


def test_counters_histogram_and_results(observer):
    observer.set_jobs(["backup_integrity_check"])
    observer.run_finished(
        record(
            metrics={
                "backups_verified": 3,
                "backups_failed": 0,
                "bytes_hashed": 1.5e9,
                "bad name!": 1,
                "label": "text",
                "nan": float("nan"),
            }
        )
    )
    observer.run_started(record(attempt=2))
    observer.run_finished(record(status=Status.TIMEOUT, attempt=2, seconds=400))
    observer.alert_delivered("webhook", "sent")
    observer.alert_delivered("desktop", "failed")
    found = samples(observer.exposition())
    job = (("job_name", "backup_integrity_check"),)
    assert found[("pmjobsd_job_runs_total", job + (("status", "OK"),))] == 1
    assert found[("pmjobsd_job_runs_total", job + (("status", "TIMEOUT"),))] == 1
    assert found[("pmjobsd_job_runs_total", job + (("status", "FAIL"),))] == 0  # created at 0 by set_jobs
    assert found[("pmjobsd_job_retries_total", job)] == 1
    assert found[("pmjobsd_job_duration_seconds_count", job)] == 2
    assert found[("pmjobsd_job_duration_seconds_bucket", job + (("le", "300.0"),))] == 1
    assert found[("pmjobsd_job_duration_seconds_bucket", job + (("le", "600.0"),))] == 2
    assert found[("pmjobsd_alerts_total", (("result", "sent"), ("sink", "webhook")))] == 1
    assert found[("pmjobsd_alerts_total", (("result", "failed"), ("sink", "desktop")))] == 1
    assert found[("pmjobsd_build_info", (("version", "0.1.0"),))] == 1
    # The jobs' own numbers: generic gauge, named gauge; text, NaN and odd names dropped.
    assert found[("pmjobsd_job_result_value", job + (("name", "bytes_hashed"),))] == 1.5e9
    assert found[("pmjobsd_backups_verified", job)] == 3
    assert not [
        key
        for key in found
        if ("name", "bad name!") in key[1] or ("name", "label") in key[1] or ("name", "nan") in key[1]
    ]
    # The scrape-time gauges from the status.
    assert found[("pmjobsd_job_status", job)] == 0
    assert found[("pmjobsd_job_running", job)] == 0
    assert (
        found[("pmjobsd_job_next_run_timestamp_seconds", job)]
        == datetime(2026, 11, 29, 2, tzinfo=timezone.utc).timestamp()
    )
    assert (
        found[("pmjobsd_job_last_run_timestamp_seconds", job)]
        == datetime(2026, 11, 28, 8, tzinfo=timezone.utc).timestamp()
    )
    assert found[("pmjobsd_job_last_success_timestamp_seconds", job)] == pytest.approx(
        datetime(2026, 11, 28, 8, 0, 2, 500000, tzinfo=timezone.utc).timestamp()
    )
    assert found[("pmjobsd_threads_abandoned", ())] == 1
    assert not any(name.endswith("_created") for name, _ in found)
    assert all(("job",) != key[1][:1] and "job" not in dict(key[1]) for key in found)  # never the reserved label


@pytest.mark.skipif(not PROMTOOL, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_exposition(observer):
    observer.set_jobs(["backup_integrity_check", "other"])
    # Every number a built-in job reports with a named metric, so each name and unit is checked.
    observer.run_finished(record(metrics={"backups_verified": 2, "backups_failed": 0, "newest_backup_age_days": 1.5}))
    observer.alert_delivered("webhook", "failed")
    exposition = observer.exposition()
    promtool_check(exposition)
    assert (
        samples(exposition)[("pmjobsd_backup_newest_age_seconds", (("job_name", "backup_integrity_check"),))]
        == 1.5 * 86400
    )


def test_a_given_up_attempt_is_not_counted_twice(observer):
    observer.set_jobs(["backup_integrity_check"])
    failed = record(status=Status.FAIL, final=False)
    observer.run_finished(failed)
    failed.final = failed.given_up = True  # Runner.give_up tells the observers again
    observer.run_finished(failed)
    found = samples(observer.exposition())
    job = (("job_name", "backup_integrity_check"),)
    assert found[("pmjobsd_job_runs_total", job + (("status", "FAIL"),))] == 1
    assert found[("pmjobsd_job_duration_seconds_count", job)] == 1


def test_status_gauge_follows_the_status_at_each_scrape(observer):
    job = (("job_name", "backup_integrity_check"),)
    observer.state["status"] = snapshot(status=JobState.FAIL, consecutive_failures=2)
    assert samples(observer.exposition())[("pmjobsd_job_status", job)] == 2
    # Running: 1, and the status shows the previous outcome (a failed attempt with a retry coming: WARN).
    observer.state["status"] = snapshot(
        status=JobState.RUNNING,
        recent=(RecentAttempt(Status.RUNNING, at(9), None, True), RecentAttempt(Status.FAIL, at(8), 100, False)),
    )
    found = samples(observer.exposition())
    assert found[("pmjobsd_job_running", job)] == 1 and found[("pmjobsd_job_status", job)] == 1
    observer.state["status"] = snapshot(status=JobState.NEVER_RUN, last_run=None, recent=(), last_success_at=None)
    found = samples(observer.exposition())
    assert ("pmjobsd_job_status", job) not in found and ("pmjobsd_job_last_run_timestamp_seconds", job) not in found


def test_the_exposition_from_kept_parts_is_what_the_registry_gives_after_every_change(observer):
    from dataclasses import replace as copy

    from prometheus_client import generate_latest

    def same() -> bytes:
        text = observer.exposition()
        assert text == generate_latest(observer.registry)
        return text

    first = same()
    assert observer.exposition() == first  # nothing changed
    changes = [
        lambda: observer.set_jobs(["backup_integrity_check", "log_purge"]),
        lambda: observer.run_finished(record(metrics={"backups_verified": 4})),
        lambda: observer.run_started(record(attempt=2)),
        lambda: observer.alert_delivered("webhook", "failed"),
        lambda: observer.declare_metrics({}),
        lambda: observer.state.update(status=snapshot(consecutive_failures=5)),  # new job entries
        lambda: observer.state.update(  # the same job entries, the daemon's gauges new
            status=copy(observer.state["status"], daemon=copy(observer.state["status"].daemon, heartbeat_age_s=3.0))
        ),
    ]
    for change in changes:
        before = same()
        change()
        assert same() != before, change


def test_status_code_mapping():
    states = (JobState.OK, JobState.WARN, JobState.FAIL, JobState.DISABLED, JobState.NEVER_RUN)
    assert [job_status_code(replace(JOB, status=state)) for state in states] == [0, 1, 2, None, None]
    timed_out = (RecentAttempt(Status.TIMEOUT, at(8), 100, True),)
    assert job_status_code(replace(JOB, status=JobState.RUNNING, recent=timed_out)) == 2
    interrupted = (RecentAttempt(Status.INTERRUPTED, at(8), 100, True),)
    assert job_status_code(replace(JOB, status=JobState.RUNNING, recent=interrupted)) == 1
    assert job_status_code(replace(JOB, status=JobState.RUNNING, recent=())) is None


def test_a_failing_status_source_still_exposes_the_counters():
    def broken():
        raise RuntimeError("daemon is starting")

    metrics = MetricsObserver(broken)
    metrics.run_finished(record())
    found = samples(metrics.exposition())
    assert found[("pmjobsd_job_runs_total", (("job_name", "backup_integrity_check"), ("status", "OK")))] == 1
    assert not any(name == "pmjobsd_job_status" for name, _ in found)


def test_job_results_are_seeded_from_the_history(tmp_path):
    with RunHistory(tmp_path / "history.db") as history:
        for number, metrics in enumerate(({"expiring": 4, "expired": 1}, {})):  # the newest run reported nothing
            run = record(job="expiring_password_digest", metrics=metrics)
            run.run_id, run.started_at = f"r{number}", time.time() + number
            history.record_start(run)
            history.record_finish(run)
        metrics = MetricsObserver(snapshot, history=history)
        metrics.declare_metrics(BUILTIN_METRICS)
    found = samples(metrics.exposition())
    assert found[("pmjobsd_passwords_expiring", (("job_name", "expiring_password_digest"),))] == 4
    assert found[("pmjobsd_passwords_expired", (("job_name", "expiring_password_digest"),))] == 1


def test_textfile_written_atomically_after_each_run_with_private_mode(tmp_path, observer):
    target = tmp_path / "pmjobsd.prom"
    observer.set_textfile(target)
    observer.run_finished(record(metrics={"backups_verified": 5}))
    wait_for(lambda: target.exists() and b"pmjobsd_backups_verified" in target.read_bytes(), message="textfile")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    if PROMTOOL:
        promtool_check(target.read_bytes())
    target.chmod(0o644)  # the admin lets node_exporter read it: the mode is kept from now on
    observer.run_finished(record(metrics={"backups_verified": 6}))
    wait_for(
        lambda: b'pmjobsd_backups_verified{job_name="backup_integrity_check"} 6.0' in target.read_bytes(),
        message="second write",
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pmjobsd.prom"]  # no temp files left behind


def test_heartbeat_health():
    assert heartbeat_health(last_beat=100.0, now=100.5, wake_interval=60, grace=10).healthy
    assert heartbeat_health(last_beat=100.0, now=230.0, wake_interval=60, grace=10).healthy  # one missed beat
    stalled = heartbeat_health(last_beat=100.0, now=230.5, wake_interval=60, grace=10)
    assert not stalled.healthy and stalled.as_dict() == {
        "status": "stalled",
        "heartbeat_age_s": 130.5,
        "limit_s": 130.0,
    }


def test_loopback_detection():
    assert all(is_loopback_host(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "::", "192.0.2.7", "no-such-host.invalid"))


# --- the HTTP endpoint ---------------------------------------------------------------------------------


class Endpoint:
    def __init__(self, **options):
        self.status = snapshot()
        self.health = Health(True, 0.1, 12.0)
        self.metrics = MetricsObserver(lambda: self.status)
        self.server = StatusServer(
            "127.0.0.1",
            0,
            allow_remote=False,
            metrics_source=self.metrics.exposition,
            status_source=lambda: self.status,
            health_source=lambda: self.health,
            **options,
        )
        self.server.start()
        self.port = self.server.address[1]

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


@pytest.fixture
def endpoint():
    served = Endpoint(cors_origins=lambda: ["chrome-extension://abcdefghijklmnop"])
    yield served
    served.server.close()
    served.metrics.close()


def test_endpoint_serves_the_four_paths(endpoint):
    code, headers, body = endpoint.request("GET", "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"pmjobsd_build_info" in body
    code, headers, body = endpoint.request("GET", "/v1/jobs")
    assert code == 200 and json.loads(body) == endpoint.status.to_json()
    assert headers["Content-Type"] == "application/json"
    assert "Access-Control-Allow-Origin" not in headers  # no Origin, nothing to allow
    code, headers, body = endpoint.request("GET", "/")
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8" and b"backup_integrity_check" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    code, _, body = endpoint.request("GET", "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    endpoint.health = Health(False, 300.0, 130.0)
    code, _, body = endpoint.request("GET", "/healthz")
    assert code == 503 and json.loads(body) == {"status": "stalled", "heartbeat_age_s": 300.0, "limit_s": 130.0}
    assert endpoint.request("GET", "/nothing")[0] == 404


def test_only_get_and_head(endpoint):
    code, headers, body = endpoint.request("HEAD", "/metrics")
    assert code == 200 and body == b"" and int(headers["Content-Length"]) > 100
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"):
        code, headers, _ = endpoint.request(method, "/v1/jobs", body=b"{}")
        assert code == 405 and headers["Allow"] == "GET, HEAD", method


def test_cors_only_for_configured_origins(endpoint):
    _, headers, _ = endpoint.request("GET", "/v1/jobs", {"Origin": "chrome-extension://abcdefghijklmnop"})
    assert headers["Access-Control-Allow-Origin"] == "chrome-extension://abcdefghijklmnop"
    _, headers, _ = endpoint.request("GET", "/v1/jobs", {"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in headers and headers["Vary"] == "Origin"
    _, headers, _ = endpoint.request("GET", "/", {"Origin": "chrome-extension://abcdefghijklmnop"})
    assert "Access-Control-Allow-Origin" not in headers  # the JSON document only


def test_dns_rebinding_host_is_refused(endpoint):
    assert endpoint.request("GET", "/v1/jobs", {"Host": "attacker.example:9464"})[0] == 403
    for host in (f"localhost:{endpoint.port}", f"127.0.0.1:{endpoint.port}", "[::1]:9464"):
        assert endpoint.request("GET", "/v1/jobs", {"Host": host})[0] == 200, host


def test_status_errors_are_500_and_the_server_keeps_serving(endpoint):
    endpoint.status = None  # neither the document nor the page can be made from it
    for path in ("/", "/v1/jobs"):
        code, _, body = endpoint.request("GET", path)
        assert code == 500 and body == b"status unavailable\n"
    endpoint.status = snapshot()
    assert endpoint.request("GET", "/")[0] == 200


def test_non_loopback_address_needs_allow_remote():
    server = StatusServer(
        "0.0.0.0",
        0,
        allow_remote=False,
        metrics_source=bytes,
        status_source=dict,
        health_source=lambda: Health(True, 0, 1),
    )
    with pytest.raises(AddressRefused, match="allow_remote"):
        server.start()
    allowed = StatusServer(
        "0.0.0.0",
        0,
        allow_remote=True,
        metrics_source=bytes,
        status_source=dict,
        health_source=lambda: Health(True, 0, 1),
    )
    allowed.start()
    try:
        assert allowed.host_allowed("pmjobsd.example.org:9464")  # served beyond loopback: any Host name
    finally:
        allowed.close()


def test_page_escapes_what_the_status_holds():
    hostile = snapshot(name="<b>job</b>", last_run=replace(JOB.last_run, summary="<script>alert(1)</script>"))
    page = render_page(hostile, now=NOW)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>job</b>" not in page


# --- the jobs' own metrics, as their JobSpecs declare them ---------------------------------------------


def test_a_declared_counter_sums_what_every_run_reported(observer):
    observer.declare_metrics(
        {
            "counted": (
                JobMetric("things", "pmjobsd_test_things", "Things counted", MetricKind.COUNTER),
                JobMetric("bytes_kib", "pmjobsd_test_bytes", "Bytes seen", MetricKind.COUNTER, scale=1024.0),
                JobMetric("backlog", "pmjobsd_test_backlog", "Things left over"),
            )
        }
    )
    job = (("job_name", "counted"),)
    found = samples(observer.exposition())
    assert found[("pmjobsd_test_things_total", job)] == 0  # before a first run: rate() works
    assert ("pmjobsd_test_backlog", job) not in found
    observer.run_finished(record(job="counted", metrics={"things": 3, "bytes_kib": 2, "backlog": 7}))
    observer.run_finished(record(job="counted", metrics={"things": 4, "backlog": 1}))
    found = samples(observer.exposition())
    assert found[("pmjobsd_test_things_total", job)] == 7 and found[("pmjobsd_test_bytes_total", job)] == 2048
    assert found[("pmjobsd_test_backlog", job)] == 1  # a gauge: the newest run's
    assert ("pmjobsd_backups_verified", job) not in found  # another job's declaration
    if PROMTOOL:
        promtool_check(observer.exposition())


@pytest.mark.parametrize(
    "arguments",
    [
        ("bad key!", "pmjobsd_x", "help"),
        ("key", "node_x", "help"),  # not in pmjobsd's namespace
        ("key", "pmjobsd_x_total", "help", MetricKind.COUNTER),  # the exposition adds _total
    ],
)
def test_a_job_metric_must_be_well_named(arguments):
    with pytest.raises(ValueError):
        JobMetric(*arguments)


def test_the_built_in_jobs_declare_their_metrics_and_metrics_py_names_none():
    declared = [metric for metrics in BUILTIN_METRICS.values() for metric in metrics]
    assert len({metric.name for metric in declared}) == len(declared) >= 9
    source = Path(metrics_module.__file__).read_text()
    for name, metrics in BUILTIN_METRICS.items():
        assert name not in source
        for metric in metrics:
            assert metric.name not in source and f'"{metric.key}"' not in source


def test_coordination_series_follow_the_state_and_only_when_coordination_is_on(observer):
    from pmjobsd.coord.state import CoordinationState

    assert not any(name.startswith("pmjobsd_coordination") for name, _ in samples(observer.exposition()))
    state = CoordinationState("home-vault", "laptop", "redis://127.0.0.1:6379/0")
    observer.set_coordination(state.snapshot)
    state.update(reachable=True, leases_held=2, last_heartbeat=time.time() - 4, duplicate_member="another daemon")
    state.count("claims_won", 5)
    state.count("claims_lost", 3)
    state.count("leases_lost")
    exposition = observer.exposition()
    found = samples(exposition)
    assert found[("pmjobsd_coordination_info", (("group", "home-vault"), ("member", "laptop")))] == 1
    assert found[("pmjobsd_coordination_engine_reachable", ())] == 1
    assert found[("pmjobsd_coordination_leases_held", ())] == 2
    assert found[("pmjobsd_coordination_claims_won_total", ())] == 5
    assert found[("pmjobsd_coordination_claims_lost_total", ())] == 3
    assert found[("pmjobsd_coordination_leases_lost_total", ())] == 1
    assert found[("pmjobsd_coordination_engine_down_skips_total", ())] == 0
    assert 4 <= found[("pmjobsd_coordination_heartbeat_age_seconds", ())] < 10
    assert found[("pmjobsd_coordination_duplicate_member", ())] == 1
    if PROMTOOL:
        promtool_check(exposition)
    state.update(reachable=False, duplicate_member=None)
    found = samples(observer.exposition())
    assert found[("pmjobsd_coordination_engine_reachable", ())] == 0
    assert found[("pmjobsd_coordination_duplicate_member", ())] == 0
    observer.set_coordination(None)
    assert not any(name.startswith("pmjobsd_coordination") for name, _ in samples(observer.exposition()))
