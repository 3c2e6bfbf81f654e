"""browser_bridge_health against real local servers standing in for the app's bridge."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from pmjobsd.api import validate
from pmjobsd.core import registry
from pmjobsd.core.context import Status
from pmjobsd.jobs import browser_bridge_health
from pmjobsd.jobs.browser_bridge_health import (
    APP_COMMANDS,
    BridgeHealthOptions,
    app_running,
    is_app_command_line,
    make_job,
)
from pmjobsd.jobs.browser_bridge_health_spec import JOB
from tests.support.alert_fixtures import SilentServer, free_port, make_self_signed, recording_proxy, start_http_server
from tests.support.helpers import app_paths, make_context

CANARY = "canary-vault-site.example"


def status_server(tls=None, status=200, answer=None):
    payload = (
        answer
        if answer is not None
        else {"status": "ok", "host": "127.0.0.1", "running": True, "pairing_active": False}
    )

    def respond(handler, body):
        if handler.path != "/v1/status":
            return 404, b"{}"
        return status, json.dumps(payload).encode() if not isinstance(payload, bytes) else payload

    return start_http_server(respond, tls=tls)


def settings(port, **bridge):
    return {"browser_bridge": {"enabled": True, "port": port, **bridge}, "notes": CANARY}


def run(tmp_path, app_settings, running=False, **options):
    ctx = make_context(
        tmp_path, "browser_bridge_health", validate(BridgeHealthOptions, options), app_settings=app_settings
    )
    result = make_job(lambda opts: running)(ctx)
    assert CANARY not in json.dumps([result.summary, dict(result.details), dict(result.metrics)])
    return result


def test_registered_with_hourly_default():
    assert registry.load_builtin("browser_bridge_health") is JOB
    assert registry.job_function(JOB).load() is browser_bridge_health.run
    assert JOB.defaults["cron"] == "0 * * * *"


def test_disabled_by_default(tmp_path):
    result = run(tmp_path, {})
    assert (result.status, result.summary) == (Status.OK, "bridge disabled")


def test_http_bridge_answering(tmp_path):
    server = status_server()
    try:
        result = run(tmp_path, settings(server.server_port))
    finally:
        server.shutdown()
    assert result.status == Status.OK and result.summary.startswith("bridge answering in")
    assert result.metrics["reachable"] == 1 and result.metrics["latency_ms"] >= 0


def test_tls_trusts_the_apps_own_certificate(tmp_path):
    paths = app_paths(tmp_path)
    make_self_signed(paths.bridge_cert_path, paths.config_dir / "tls" / "localhost.key")
    server = status_server(tls=(paths.bridge_cert_path, paths.config_dir / "tls" / "localhost.key"))
    try:
        assert run(tmp_path, settings(server.server_port, enable_tls=True)).status == Status.OK
        # Another certificate in the app's folder: the bridge is not the one we trust.
        other = tmp_path / "other"
        make_self_signed(other / "c.crt", other / "c.key")
        shutil.copy(other / "c.crt", paths.bridge_cert_path)
        result = run(tmp_path, settings(server.server_port, enable_tls=True), running=True)
        assert (result.status, result.summary) == (Status.FAIL, "bridge unreachable: HTTP: TLS error")
        paths.bridge_cert_path.unlink()
        result = run(tmp_path, settings(server.server_port, enable_tls=True), running=True)
        assert "TLS certificate missing" in result.summary
    finally:
        server.shutdown()


def test_probe_bypasses_the_environment_proxy(tmp_path, monkeypatch):
    proxy, proxied = recording_proxy(monkeypatch)
    paths = app_paths(tmp_path)
    make_self_signed(paths.bridge_cert_path, paths.config_dir / "tls" / "localhost.key")
    plain = status_server()
    tls = status_server(tls=(paths.bridge_cert_path, paths.config_dir / "tls" / "localhost.key"))
    try:
        assert run(tmp_path, settings(plain.server_port)).status == Status.OK
        assert run(tmp_path, settings(tls.server_port, enable_tls=True)).status == Status.OK
    finally:
        plain.shutdown()
        tls.shutdown()
        proxy.shutdown()
    assert proxied.snapshot() == []


def test_unreachable_depends_on_app_and_expect(tmp_path):
    port = free_port()
    not_running = run(tmp_path, settings(port), running=False)
    assert (not_running.status, not_running.summary) == (Status.OK, "app not running")
    running = run(tmp_path, settings(port), running=True)
    assert (running.status, running.summary) == (Status.FAIL, "bridge unreachable: HTTP: refused")
    always = run(tmp_path, settings(port), running=False, expect="always")
    assert always.status == Status.FAIL and "refused" in always.summary


def test_timeout_and_bad_answers(tmp_path):
    silent = SilentServer()
    try:
        result = run(tmp_path, settings(silent.port), running=True, timeout=0.3)
    finally:
        silent.close()
    assert result.summary == "bridge unreachable: HTTP: timeout"
    for kwargs, reason in (
        ({"status": 500}, "bad answer (HTTP 500)"),
        ({"answer": {"status": "starting"}}, "bad answer (status is not ok)"),
        ({"answer": b"<html>"}, "bad answer (not JSON)"),
    ):
        server = status_server(**kwargs)
        try:
            result = run(tmp_path, settings(server.server_port), expect="always")
        finally:
            server.shutdown()
        assert result.summary == f"bridge unreachable: HTTP: {reason}"


def test_bad_settings_name_file_and_key(tmp_path):
    result = run(tmp_path, {"browser_bridge": {"enabled": True, "port": "forty"}})
    assert result.status == Status.FAIL
    assert "settings.json: browser_bridge.port: expected a port number" in result.summary


class FramedSocketServer:
    """Speaks the app's domain-socket framing (4-byte length + JSON); answers 404 like the app for /v1/status."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.requests = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                length = int.from_bytes(conn.recv(4), "big")
                self.requests.append(json.loads(conn.recv(length)))
                reply = json.dumps({"status_code": 404, "body": {"detail": "Not found"}}).encode()
                conn.sendall(len(reply).to_bytes(4, "big") + reply)

    def close(self):
        self.sock.close()


def test_domain_socket_checked_when_enabled(tmp_path, monkeypatch):
    runtime = Path(tempfile.mkdtemp(prefix="pmj", dir="/tmp"))  # AF_UNIX paths must stay short
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    server = status_server()
    try:
        missing = run(tmp_path, settings(server.server_port, enable_domain_socket=True), running=True)
        assert (missing.status, missing.summary) == (Status.FAIL, "bridge unreachable: socket missing")
        framed = FramedSocketServer(runtime / "secure-password-manager" / "bridge.sock")
        try:
            ok = run(tmp_path, settings(server.server_port, enable_domain_socket=True), running=True)
        finally:
            framed.close()
        assert ok.status == Status.OK and ok.details["socket"] == "ok"
        assert framed.requests[0]["path"] == "/v1/status"
    finally:
        server.shutdown()
        shutil.rmtree(runtime)


def test_app_detection_by_command_line(tmp_path):
    assert is_app_command_line(["/usr/bin/python3", "/home/a/.local/bin/password-manager-gui"], APP_COMMANDS)
    assert is_app_command_line(["password-manager", "--help"], APP_COMMANDS)
    assert is_app_command_line(["python", "-m", "secure_password_manager.apps.app"], APP_COMMANDS)
    assert not is_app_command_line(["vim", "password-manager"], APP_COMMANDS)
    script = tmp_path / "bin" / "password-manager"
    script.parent.mkdir()
    script.write_text("import sys\nsys.stdin.read()\n")
    assert not app_running(["password-manager"]) or pytest.skip("an app process already runs here")
    process = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE)
    try:
        assert app_running(["password-manager"])
    finally:
        process.communicate(b"", timeout=10)
    assert not app_running(["password-manager"])
