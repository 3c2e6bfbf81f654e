"""The HTTP endpoint: ``/metrics``, ``/healthz``, ``/v1/jobs`` and the status page at ``/``.

A ``ThreadingHTTPServer`` on its own thread, one short-lived thread per
connection, so a slow or stuck client never holds up the scheduler loop.
Off unless ``metrics.enabled``; GET and HEAD only (anything else: 405).
A non-loopback address is refused unless ``metrics.allow_remote``; on a
loopback address the ``Host`` header must name a loopback host too, so a web
page cannot read the endpoint through DNS rebinding.  ``/v1/jobs`` answers
cross-origin reads only for the origins in ``metrics.cors_origins``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pmjobsd.observe.joblog import EventLogger
from pmjobsd.observe.status import JobStatus, StatusSnapshot, document_bytes, jobs_text
from pmjobsd.observe.statuspage import PageTemplate

ALLOWED_METHODS = "GET, HEAD"
# The classic text format: every pmjobsd name is a legacy-valid one, and every Prometheus reads 0.0.4.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT = 15.0  # seconds a connection may sit idle before its thread lets go
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class AddressRefused(Exception):
    """The configured address is not loopback and ``allow_remote`` is off."""


@dataclass(frozen=True)
class Health:
    """The scheduler loop's liveness as ``/healthz`` reports it.

    ``problems`` are what is wrong while the loop itself is fine (runs not being
    recorded): the answer stays 200 — a restart would not help — with status
    ``degraded`` and the problems listed.
    """

    healthy: bool
    heartbeat_age_s: float
    limit_s: float
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        status = "stalled" if not self.healthy else "degraded" if self.problems else "ok"
        answer: dict[str, Any] = {
            "status": status,
            "heartbeat_age_s": round(self.heartbeat_age_s, 3),
            "limit_s": round(self.limit_s, 3),
        }
        if self.problems:
            answer["problems"] = list(self.problems)
        return answer


def heartbeat_health(last_beat: float, now: float, wake_interval: float, grace: float) -> Health:
    """Given the loop's last heartbeat and now (both monotonic), judge it.

    The loop beats at least every ``wake_interval``; it is stalled when the
    last beat is older than two intervals plus ``grace`` (one missed beat is
    tolerated: a loop iteration that reloads settings or dispatches many runs).
    """
    limit = 2 * wake_interval + grace
    age = max(0.0, now - last_beat)
    return Health(age <= limit, age, limit)


def is_loopback_host(host: str) -> bool:
    """True for loopback IP literals and the usual loopback names; other names are resolved, all must be loopback."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _host_header_name(value: str) -> str:
    """The host part of a ``Host`` header (``[::1]:9464`` -> ``::1``, ``localhost:9464`` -> ``localhost``)."""
    value = value.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never delays shutdown
    allow_reuse_address = True
    app: StatusServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pmjobsd"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def __getattr__(self, name: str) -> Any:
        # http.server answers an unknown do_<METHOD> with 501; this endpoint is read-only: 405.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self.close_connection = True  # any request body stays unread: do not parse it as the next request
        self._reply(
            405,
            b"method not allowed: GET and HEAD only\n",
            "text/plain; charset=utf-8",
            {"Allow": ALLOWED_METHODS, "Connection": "close"},
            send_body=True,
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access lines would flood jobs.log at every scrape

    def _serve(self, send_body: bool) -> None:
        app = self.server.app
        if not app.host_allowed(self.headers.get("Host", "")):
            self._reply(403, b"host not allowed\n", "text/plain; charset=utf-8", {}, send_body)
            return
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._reply(200, app.metrics_source(), METRICS_CONTENT_TYPE, {}, send_body)
            elif path == "/healthz":
                health = app.health_source()
                body = json.dumps(health.as_dict()).encode() + b"\n"
                self._reply(200 if health.healthy else 503, body, "application/json", {}, send_body)
            elif path == "/v1/jobs":
                body = app.document(app.status_source())
                self._reply(200, body, "application/json", app.cors_headers(self.headers.get("Origin")), send_body)
            elif path in ("/", "/index.html"):
                page = app.page(app.status_source())
                self._reply(200, page, "text/html; charset=utf-8", {"Content-Security-Policy": _PAGE_POLICY}, send_body)
            else:
                self._reply(
                    404,
                    b"not found: try /, /metrics, /healthz or /v1/jobs\n",
                    "text/plain; charset=utf-8",
                    {},
                    send_body,
                )
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # the daemon's state could not be read: say so, keep serving
            app.log.error("http.failed", path=path, error=f"{type(exc).__name__}: {exc}")
            self._reply(500, b"status unavailable\n", "text/plain; charset=utf-8", {}, send_body)

    def _reply(self, code: int, body: bytes, content_type: str, headers: Mapping[str, str], send_body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class StatusServer:
    """Serves the daemon's metrics, health and status on ``host:port``.

    The sources are callables so the server always shows the daemon's current
    state: ``metrics_source() -> bytes``, ``status_source() -> StatusSnapshot``,
    ``health_source() -> Health``, ``cors_origins() -> list of origins``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        allow_remote: bool,
        metrics_source: Callable[[], bytes],
        status_source: Callable[[], StatusSnapshot],
        health_source: Callable[[], Health],
        cors_origins: Callable[[], Sequence[str]] = lambda: (),
        log: EventLogger | None = None,
    ):
        self.host, self.port, self.allow_remote = host, port, allow_remote
        self.metrics_source = metrics_source
        self.status_source = status_source
        self.health_source = health_source
        self.cors_origins = cors_origins
        self.log = log or EventLogger("http")
        self._loopback_only = False
        # The jobs' part of the document and of the page, kept while the status hands out the
        # same job entries (it builds them once per change of state): (entries, formatted).
        self._jobs_text: tuple[tuple[JobStatus, ...], bytes] | None = None
        self._page: PageTemplate | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when ``port`` was 0)."""
        assert self._server is not None, "not started"
        return self.host, self._server.server_address[1]

    def start(self) -> None:
        """Bind and serve on a thread; raise AddressRefused, or OSError when the port cannot be bound."""
        self._loopback_only = is_loopback_host(self.host)
        if not self._loopback_only and not self.allow_remote:
            raise AddressRefused(
                f"metrics.host {self.host!r} is not a loopback address; "
                "set metrics.allow_remote to serve it beyond this machine"
            )
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        self._server = server_class((self.host, self.port), _Handler)
        self._server.app = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="pmjobsd-http", daemon=True
        )
        self._thread.start()

    def document(self, snapshot: StatusSnapshot) -> bytes:
        """``/v1/jobs``: the status document, the same bytes as ``json.dumps(indent=2)`` and a newline."""
        kept = self._jobs_text
        if kept is None or kept[0] is not snapshot.jobs:
            kept = self._jobs_text = (snapshot.jobs, jobs_text(snapshot.jobs).encode())
        return document_bytes(snapshot, kept[1])

    def page(self, snapshot: StatusSnapshot) -> bytes:
        """``/``: the status page (:func:`render_page`), rendered once per change of what it shows."""
        template = self._page
        if template is None or template.key != PageTemplate.key_of(snapshot):
            template = self._page = PageTemplate(snapshot)
        return template.encoded(snapshot, datetime.now(timezone.utc))

    def host_allowed(self, host_header: str) -> bool:
        """On a loopback address, only loopback ``Host`` names (DNS-rebinding guard)."""
        if not self._loopback_only:
            return True
        name = _host_header_name(host_header)
        return name == self.host or name.lower() in _LOOPBACK_NAMES or _is_loopback_ip(name)

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """``Access-Control-Allow-Origin`` for configured origins only (``"*"`` allows any)."""
        allowed = list(self.cors_origins())
        headers = {"Vary": "Origin"}
        if origin and origin in allowed:
            headers["Access-Control-Allow-Origin"] = origin
        elif origin and "*" in allowed:
            headers["Access-Control-Allow-Origin"] = "*"
        return headers

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None


def _is_loopback_ip(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def monotonic_health(
    beat: Callable[[], float],
    wake_interval: Callable[[], float],
    grace: Callable[[], float],
    problems: Callable[[], Sequence[str]] = tuple,
) -> Callable[[], Health]:
    """A ``health_source`` for :class:`StatusServer` reading the daemon's heartbeat (and problems) at each request."""

    def health() -> Health:
        judged = heartbeat_health(beat(), time.monotonic(), wake_interval(), grace())
        return replace(judged, problems=tuple(problems()))

    return health
