"""Real local servers for the alerting and bridge tests: HTTP(S), SMTP, a session D-Bus."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- certificates ---------------------------------------------------------------
def make_self_signed(cert_path: Path, key_path: Path, hostname: str = "localhost") -> None:
    """A self-signed certificate like the app's (SAN localhost, 127.0.0.1, ::1), via `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    x509.IPAddress(ipaddress.IPv6Address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


# --- HTTP -------------------------------------------------------------------------
class Recorder:
    """Requests seen by a test HTTP server."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def add(self, entry: dict) -> None:
        with self.lock:
            self.requests.append(entry)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.requests)


def start_http_server(
    respond: Callable[[BaseHTTPRequestHandler, bytes], tuple[int, bytes]], tls: tuple[Path, Path] | None = None
):
    """A threaded http.server on 127.0.0.1; ``respond(handler, body) -> (status, body)``."""

    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, answer = respond(self, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _handle

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def webhook_receiver(status: int = 200):
    recorder = Recorder()

    def respond(handler, body):
        recorder.add({"path": handler.path, "headers": dict(handler.headers), "body": body})
        return status, b"{}"

    return start_http_server(respond), recorder


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def recording_proxy(monkeypatch):
    """A local HTTP proxy set in every proxy variable; returns (server, recorder).

    It answers 502 to everything (CONNECT included) and records what it saw, so
    a test can assert that a request did not go through a proxy.
    """
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            recorder.add({"method": self.command, "path": self.path})
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_CONNECT = _handle

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, f"http://127.0.0.1:{server.server_port}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return server, recorder


class SilentServer:
    """Accepts TCP connections and never answers: a hanging sink endpoint."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.connections:
            conn.close()


# --- session D-Bus with a notification service -----------------------------------------
class SessionBus:
    """A private ``dbus-daemon --session`` for one test."""

    def __init__(self):
        if not shutil.which("dbus-daemon"):
            raise RuntimeError("dbus-daemon not installed (apt-get install -y dbus)")
        self.process = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.address = self.process.stdout.readline().strip()
        if not self.address:
            self.process.kill()
            raise RuntimeError("dbus-daemon printed no address")

    def close(self):
        self.process.terminate()
        self.process.wait(10)


class NotificationService:
    """A tiny org.freedesktop.Notifications service that records Notify calls."""

    def __init__(self, bus_address: str, reply_error: str | None = None):
        from jeepney import HeaderFields, MessageType, message_bus, new_error, new_method_return
        from jeepney.io.blocking import Proxy, open_dbus_connection

        self.calls: list[tuple] = []
        self._stop = threading.Event()
        self._conn = open_dbus_connection(bus=bus_address)
        reply = Proxy(message_bus, self._conn).RequestName("org.freedesktop.Notifications", 4)
        assert reply == (1,), reply  # primary owner
        self._types = (HeaderFields, MessageType, new_error, new_method_return)
        self._reply_error = reply_error
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        HeaderFields, MessageType, new_error, new_method_return = self._types
        while not self._stop.is_set():
            try:
                msg = self._conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            except OSError:
                return
            header = msg.header
            if header.message_type != MessageType.method_call:
                continue
            member = header.fields.get(HeaderFields.member)
            if member == "Notify":
                self.calls.append(msg.body)
                if self._reply_error:
                    self._conn.send(new_error(msg, self._reply_error, "s", ("refused",)))
                else:
                    self._conn.send(new_method_return(msg, "u", (len(self.calls),)))
            else:
                self._conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (str(member),)))

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


def read_log_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
