"""Alerting end to end with real local receivers: HTTP webhook, SMTP (STARTTLS), session D-Bus."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
import sys
import threading
import time

import msgspec
import pytest

from pmjobsd.alerts import AlertManager, DeliveryError, Message, SinkPlan, build_sinks
from pmjobsd.alerts.desktop_linux import FreedesktopSink
from pmjobsd.alerts.desktop_macos import MacNotificationSink
from pmjobsd.alerts.retry import send_with_retries
from pmjobsd.alerts.webhook import SIGNATURE_HEADER, JsonWebhookSink, sign
from pmjobsd.core.context import Notice, Status
from pmjobsd.core.observers import RunRecord
from pmjobsd.core.settings import Alerts
from pmjobsd.observe.joblog import EventLogger, setup_logging
from tests.support.alert_fixtures import (
    NotificationService,
    SessionBus,
    SilentServer,
    free_port,
    make_self_signed,
    read_log_lines,
    recording_proxy,
    webhook_receiver,
)
from tests.support.daemon import wait_for
from tests.support.helpers import app_paths

SECRET = "CANARY-webhook-secret-7f3a"
TOKEN = "CANARYTOKEN9d2e"
SITE = "canary-bank.example"


@pytest.fixture
def jobs_log(tmp_path):
    path = tmp_path / "jobs.log"
    setup_logging(path, console=False)
    yield path
    setup_logging(None, console=False)


@pytest.fixture
def paths(tmp_path):
    return app_paths(tmp_path / "home")


def record(job="backup_integrity_check", status=Status.FAIL, streak=1, final=True, summary="2 of 3 backups unreadable"):
    now = time.time()
    return RunRecord(
        run_id=f"run-{job}-{streak}-{status.value}",
        job=job,
        attempt=1,
        trigger="schedule",
        slot=None,
        started_at=now,
        finished_at=now,
        status=status,
        summary=summary,
        final=final,
        consecutive_failures=streak,
    )


def manager(alerts, paths, **kw):
    kw.setdefault("retry_delay", 0.01)
    return AlertManager(alerts, paths, EventLogger("alerts"), host="testhost", **kw)


def bodies(recorder):
    return [json.loads(entry["body"]) for entry in recorder.snapshot()]


def assert_no_canary(*texts):
    for text in texts:
        for canary in (SECRET, TOKEN, SITE):
            assert canary not in text


def test_webhook_alert_escalation_resolved_signed(paths, jobs_log):
    primary_server, primary = webhook_receiver()
    escalation_server, escalation = webhook_receiver()
    deliveries = []
    alerts = Alerts(
        desktop=False,
        targets=[f"json://127.0.0.1:{primary_server.server_port}/hook/{TOKEN}"],
        escalation_targets=[f"json://127.0.0.1:{escalation_server.server_port}/page/{TOKEN}"],
        escalate_after=2,
        webhook_secret=SECRET,
    )
    alert_manager = manager(alerts, paths, on_delivery=lambda kind, outcome: deliveries.append((kind, outcome)))
    try:
        alert_manager.run_finished(record(streak=1, summary=f"failed posting to https://hooks.example/{TOKEN}"))
        wait_for(lambda: len(primary.snapshot()) == 1)
        alert_manager.run_finished(record(streak=2))  # escalation only, primary already knows
        wait_for(lambda: len(escalation.snapshot()) == 1)
        alert_manager.run_finished(record(streak=3))  # still failing: nothing new
        alert_manager.run_finished(record(status=Status.OK, streak=0, summary="3 backups verified"))
        wait_for(lambda: len(primary.snapshot()) == 2 and len(escalation.snapshot()) == 2)
    finally:
        alert_manager.close(5)
        primary_server.shutdown()
        escalation_server.shutdown()

    for entry in primary.snapshot() + escalation.snapshot():
        expected = "sha256=" + hmac.new(SECRET.encode(), entry["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(entry["headers"][SIGNATURE_HEADER], expected)
    first, resolved = bodies(primary)
    assert first["kind"] == "alert" and first["status"] == "FAIL" and first["job"] == "backup_integrity_check"
    assert {"job", "status", "summary", "run_id", "host", "time"} <= set(first)
    assert first["host"] == "testhost" and "hooks.example/<redacted>" in first["summary"]
    assert resolved["kind"] == "resolved" and resolved["previous_status"] == "FAIL"
    assert [b["kind"] for b in bodies(escalation)] == ["escalation", "resolved"]
    assert bodies(escalation)[0]["consecutive_failures"] == 2
    assert deliveries.count(("webhook", "sent")) == 4
    log_text = jobs_log.read_text()
    assert_no_canary(log_text, *(entry["body"].decode() for entry in primary.snapshot() + escalation.snapshot()))
    sent = [line for line in read_log_lines(jobs_log) if line["event"] == "alert.sent"]
    assert len(sent) == 4 and {line["sink"] for line in sent} == {"webhook"}


def test_loopback_webhook_bypasses_the_environment_proxy(monkeypatch):
    proxy, proxied = recording_proxy(monkeypatch)
    server, recorder = webhook_receiver()
    try:
        JsonWebhookSink(f"json://127.0.0.1:{server.server_port}/{TOKEN}", SECRET).send(
            Message("alert", "t", "b", {"job": "j"})
        )
    finally:
        server.shutdown()
        proxy.shutdown()
    assert proxied.snapshot() == []  # the local target never left through the proxy
    assert [request["path"] for request in recorder.snapshot()] == [f"/{TOKEN}"]


def test_tampered_body_fails_signature_check():
    sink = JsonWebhookSink("json://127.0.0.1:9/x", SECRET)
    body = sink.payload(Message("alert", "t", "b", {"job": "j"}))
    sent = sign(body, SECRET)  # the header value the sink sends with this body
    assert sent == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    tampered = body.replace(b'"j"', b'"k"')
    assert tampered != body and not hmac.compare_digest(sent, sign(tampered, SECRET))


def test_repeat_after_and_state_survives_restart(paths, jobs_log):
    server, recorder = webhook_receiver()
    now = [1_000_000.0]
    alerts = Alerts(desktop=False, targets=[f"json://127.0.0.1:{server.server_port}/h"], repeat_after=86400.0)
    first = manager(alerts, paths, clock=lambda: now[0])
    first.run_finished(record(streak=1))
    first.run_finished(record(streak=1, final=False))  # a retry follows: never alerts
    first.close(5)
    assert len(recorder.snapshot()) == 1
    state_file = paths.state_dir / "alerts.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600

    second = manager(alerts, paths, clock=lambda: now[0])  # a daemon restart
    now[0] += 3600
    second.run_finished(record(streak=2))
    second.run_finished(record(status=Status.TIMEOUT, streak=3))
    now[0] += 86400
    second.run_finished(record(streak=4))
    wait_for(lambda: len(recorder.snapshot()) == 2)
    now[0] += 60
    second.run_finished(record(streak=5))
    second.run_finished(record(status=Status.INTERRUPTED, streak=5))  # says nothing about health
    second.run_finished(record(status=Status.WARN, streak=0, summary="1 backup old"))
    second.close(5)
    server.shutdown()
    assert [b["kind"] for b in bodies(recorder)] == ["alert", "repeat", "resolved"]
    assert bodies(recorder)[2]["status"] == "WARN"
    assert json.loads(state_file.read_text())["jobs"] == {}


def test_corrupt_state_file_is_reported_and_replaced(paths, jobs_log):
    state_file = paths.state_dir / "alerts.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    server, recorder = webhook_receiver()
    alert_manager = manager(Alerts(desktop=False, targets=[f"json://127.0.0.1:{server.server_port}/h"]), paths)
    alert_manager.run_finished(record())
    alert_manager.close(5)
    server.shutdown()
    events = [line for line in read_log_lines(jobs_log) if line["event"] == "alert.state_invalid"]
    assert events and str(state_file) in events[0]["error"]
    assert "backup_integrity_check" in json.loads(state_file.read_text())["jobs"]


def test_remote_targets_off_unless_allowed(paths, jobs_log):
    alerts = Alerts(
        desktop=False,
        targets=[f"slack://T000/B000/{TOKEN}", f"mailtos://user:{SECRET}@smtp.example.org?to=ops@example.org"],
        escalation_targets=[f"jsons://hooks.example.org/{TOKEN}"],
    )
    plan = build_sinks(alerts)
    assert plan.primary == [] and plan.escalation == [] and plan.remote_disabled == 3
    manager(alerts, paths).close(1)
    lines = read_log_lines(jobs_log)
    assert [line["targets"] for line in lines if line["event"] == "alert.remote_disabled"] == [3]
    assert_no_canary(jobs_log.read_text())
    allowed = build_sinks(msgspec.structs.replace(alerts, allow_remote=True))
    assert [sink.kind for sink in allowed.primary] == ["apprise:slack", "apprise:mailtos"]
    assert [sink.kind for sink in allowed.escalation] == ["webhook"]


def test_invalid_target_is_named_by_position_not_url(paths, jobs_log):
    alerts = Alerts(desktop=False, allow_remote=True, targets=[f"nosuchscheme://{TOKEN}@x"])
    manager(alerts, paths).close(1)
    problems = [line for line in read_log_lines(jobs_log) if line["event"] == "alert.target_invalid"]
    assert problems[0]["setting"] == "alerts.targets[0]" and problems[0]["scheme"] == "nosuchscheme"
    assert_no_canary(jobs_log.read_text())


def test_email_over_smtp_starttls(tmp_path, paths, jobs_log, monkeypatch):
    import ssl

    from aiosmtpd.controller import Controller

    cert, key = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    make_self_signed(cert, key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    received, tls_seen = [], []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            tls_seen.append(session.ssl is not None)
            received.append(envelope.content.decode("utf-8", "replace"))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    controller.start()
    # The client verifies the server's certificate against this CA file: no verify=no shortcut.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    alerts = Alerts(
        desktop=False,
        allow_remote=True,
        targets=[f"mailtos://127.0.0.1:{port}?mode=starttls&from=pmjobsd@example.org&to=ops@example.org"],
    )
    alert_manager = manager(alerts, paths)
    try:
        alert_manager.run_finished(record(summary="vault check failed"))
        wait_for(lambda: received)
    finally:
        alert_manager.close(5)
        controller.stop()
    assert tls_seen == [True]
    assert "backup_integrity_check" in received[0] and "vault check failed" in received[0]
    assert any(line["event"] == "alert.sent" and line["sink"] == "apprise:mailtos" for line in read_log_lines(jobs_log))


@pytest.fixture
def session_bus():
    bus = SessionBus()
    yield bus
    bus.close()


def test_desktop_linux_over_real_session_bus(session_bus, paths, jobs_log, monkeypatch):
    service = NotificationService(session_bus.address)
    server, recorder = webhook_receiver()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session_bus.address)
    alerts = Alerts(desktop=True, targets=[f"json://127.0.0.1:{server.server_port}/h"])
    plan = build_sinks(alerts, platform="linux")
    assert [sink.kind for sink in plan.primary] == ["desktop-linux", "webhook"]
    alert_manager = manager(alerts, paths, sinks=plan)
    try:
        alert_manager.notice(
            "expiring_password_digest",
            "run-1",
            Notice(
                "3 passwords expire soon", "3 passwords expire within 14 days", private_body=f"{SITE} expires <soon>"
            ),
        )
        alert_manager.run_finished(record(job="log_rotation"))
        wait_for(lambda: len(service.calls) == 2 and len(recorder.snapshot()) == 2)
    finally:
        alert_manager.close(5)
        service.close()
        server.shutdown()
    app_name, replaces, icon, title, body, actions, hints, expire = service.calls[0]
    assert (app_name, title) == ("pmjobsd", "3 passwords expire soon")
    assert body == f"{SITE} expires &lt;soon&gt;"  # the desktop alone gets the private body
    assert service.calls[1][3] == "pmjobsd: log_rotation FAIL"
    notice_body = recorder.snapshot()[0]["body"].decode()
    assert SITE not in notice_body and "within 14 days" in notice_body
    assert SITE not in jobs_log.read_text()


def test_desktop_linux_errors_are_typed(session_bus):
    sink = FreedesktopSink(session_bus.address, timeout=5)
    with pytest.raises(DeliveryError) as missing:  # no notification service on this bus
        sink.send(Message("alert", "t", "b"))
    assert missing.value.permanent
    service = NotificationService(session_bus.address, reply_error="org.example.Busy")
    try:
        with pytest.raises(DeliveryError) as busy:
            sink.send(Message("alert", "t", "b"))
    finally:
        service.close()
    assert busy.value.reason == "org.example.Busy" and not busy.value.permanent


def test_no_session_bus_means_no_desktop_sink(monkeypatch):
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    plan = build_sinks(Alerts(desktop=True), platform="linux")
    assert plan.primary == [] and "session bus" in plan.desktop_unavailable


def test_macos_sink_passes_text_as_arguments(tmp_path):
    log = tmp_path / "argv.json"
    fake = tmp_path / "osascript"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(log)!r}, 'w'))\n")
    fake.chmod(0o755)
    sink = MacNotificationSink(osascript=str(fake))
    sink.send(Message("notice", 'He said "hi"', "public", private_body='x" & do shell script "id'))
    argv = json.loads(log.read_text())
    assert argv[-2:] == ['He said "hi"', 'x" & do shell script "id']
    assert argv[0] == "-e" and all('"' not in part for part in argv[:-2])
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(DeliveryError):
        MacNotificationSink(osascript=str(failing)).send(Message("alert", "t", "b"))
    assert build_sinks(Alerts(desktop=True), platform="darwin").primary[0].kind == "desktop-macos"


class HangingSink:
    kind = "hanging"
    remote = False

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()

    def send(self, message):
        self.entered.set()
        self.release.wait(30)
        self.returned.set()
        raise DeliveryError("timeout")


def test_hanging_and_refusing_sinks_never_block_the_runner(paths, jobs_log):
    """run_finished/notice return while a sink is stuck; other sinks still deliver; failures are counted."""
    hanging = HangingSink()
    silent = SilentServer()
    server, recorder = webhook_receiver()
    refused_port = free_port()  # nothing listens there
    alerts = Alerts(desktop=False, webhook_secret=SECRET)
    plan = SinkPlan(
        primary=[
            hanging,
            JsonWebhookSink(f"json://127.0.0.1:{silent.port}/{TOKEN}", SECRET, timeout=0.5, remote=False),
            JsonWebhookSink(f"json://127.0.0.1:{refused_port}/{TOKEN}", SECRET, timeout=0.5, remote=False),
            JsonWebhookSink(f"json://127.0.0.1:{server.server_port}/ok", SECRET, remote=False),
        ]
    )
    outcomes = []
    alert_manager = manager(
        alerts,
        paths,
        sinks=plan,
        queue_size=4,
        attempts=2,
        on_delivery=lambda kind, outcome: outcomes.append((kind, outcome)),
    )
    job_done = threading.Event()

    def a_job_run():  # what the runner does around one job
        alert_manager.run_finished(record(job="breach_cache_refresh"))
        alert_manager.notice("breach_cache_refresh", "r", Notice("n", "body"))
        alert_manager.notice("breach_cache_refresh", "r", Notice("n", "body"))
        job_done.set()

    runner = threading.Thread(target=a_job_run)
    runner.start()
    runner.join(20)
    assert job_done.is_set() and hanging.entered.wait(10)
    assert not hanging.returned.is_set()  # the run finished while the sink was still stuck
    wait_for(lambda: len(recorder.snapshot()) == 3)  # the healthy sink got everything
    for index in range(6):  # the stuck sink's bounded queue overflows: dropped, not piled up
        alert_manager.notice("breach_cache_refresh", "r", Notice(f"n{index}", "body"))
    wait_for(lambda: ("hanging", "failed") in outcomes)
    wait_for(lambda: outcomes.count(("webhook", "failed")) >= 4)
    hanging.release.set()
    alert_manager.close(10)
    silent.close()
    server.shutdown()
    failed = [line for line in read_log_lines(jobs_log) if line["event"] == "alert.failed"]
    assert any(line["sink"] == "hanging" and line["error"] == "queue full" for line in failed)
    assert {line["error"] for line in failed if line["sink"] == "webhook"} <= {
        "timeout",
        "connection failed",
        "queue full",
    }
    assert_no_canary(jobs_log.read_text())


def test_retry_helper_retries_transient_not_permanent():
    class Flaky:
        kind, remote = "flaky", False

        def __init__(self, failures, permanent=False):
            self.calls, self.failures, self.permanent = 0, failures, permanent

        def send(self, message):
            self.calls += 1
            if self.calls <= self.failures:
                raise DeliveryError("nope", permanent=self.permanent)

    flaky = Flaky(2)
    assert send_with_retries(flaky, Message("alert", "t", "b"), attempts=3, initial_delay=0.001) == 3
    permanent = Flaky(5, permanent=True)
    with pytest.raises(DeliveryError):
        send_with_retries(permanent, Message("alert", "t", "b"), attempts=3, initial_delay=0.001)
    assert permanent.calls == 1


def test_http_4xx_is_permanent_5xx_transient():
    for status, permanent in ((404, True), (429, False), (503, False)):
        server, _ = webhook_receiver(status)
        try:
            with pytest.raises(DeliveryError) as error:
                JsonWebhookSink(f"json://127.0.0.1:{server.server_port}/h").send(Message("alert", "t", "b"))
        finally:
            server.shutdown()
        assert error.value.permanent is permanent and error.value.reason == f"HTTP {status}"


def test_reconfigure_swaps_sinks_and_keeps_what_was_announced(paths, jobs_log):
    first, first_got = webhook_receiver()
    second, second_got = webhook_receiver()
    try:
        alerts = manager(Alerts(desktop=False, targets=[f"json://127.0.0.1:{first.server_port}/a"]), paths)
        alerts.run_finished(record(status=Status.FAIL))
        wait_for(lambda: len(first_got.snapshot()) == 1)
        alerts.reconfigure(Alerts(desktop=False, targets=[f"json://127.0.0.1:{second.server_port}/b"]))
        alerts.run_finished(record(status=Status.FAIL, streak=1))  # still failing: not announced again
        alerts.run_finished(record(status=Status.OK))
        wait_for(lambda: len(second_got.snapshot()) == 1)
        assert bodies(second_got)[0]["kind"] == "resolved"  # the new sinks know the failure was announced
        assert len(first_got.snapshot()) == 1
        alerts.close()
    finally:
        first.shutdown()
        second.shutdown()


def test_a_worker_closed_with_a_full_queue_still_ends(paths, jobs_log):
    from pmjobsd.alerts.delivery import SinkWorker

    hanging = HangingSink()
    worker = SinkWorker(hanging, lambda *args: None, queue_size=1, attempts=1)
    worker.submit(Message("notice", "t", "b", {}))
    assert hanging.entered.wait(10)
    worker.submit(Message("notice", "t", "b", {}))  # fills the queue behind the stuck message
    assert worker.close(time.monotonic() + 0.2) is False  # no room for the stop marker
    hanging.release.set()
    wait_for(lambda: not worker._thread.is_alive(), timeout=10)


def test_notices_to_remote_sinks_are_scrubbed(paths, jobs_log):
    server, received = webhook_receiver()
    try:
        alerts = manager(Alerts(desktop=False, targets=[f"json://127.0.0.1:{server.server_port}/n"]), paths)
        alerts.notice(
            "my_job",
            "r1",
            Notice(
                f"see https://hooks.example.org/{TOKEN}",
                f"mail ops@{SITE} or https://x.example/{TOKEN}",
                private_body=SITE,
            ),
        )
        wait_for(lambda: received.snapshot())
        text = received.snapshot()[0]["body"].decode()
        assert TOKEN not in text and SITE not in text and "https://hooks.example.org/<redacted>" in text
        alerts.close()
    finally:
        server.shutdown()
