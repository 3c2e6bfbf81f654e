"""A local stand-in for the Pwned Passwords range API and HIBP's latestbreach, on 127.0.0.1.

Answers in the real format: ``SUFFIX:COUNT`` lines joined by CRLF, upper-case
hex, an ETag per range version, ``Add-Padding: true`` adds count-0 lines,
gzip when asked.  Faults are scripted per prefix in ``server.faults[prefix]``,
a list consumed one request at a time: ``"500"``, ``"429:<seconds>"``,
``"slow:<seconds>"``, ``"html"``, ``"json"``, ``"binary"``, ``"cut"`` (a body
shorter than its Content-Length), ``"partial_line"`` (last line cut mid-way).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@functools.lru_cache(maxsize=8192)
def _range_cached(prefix: str, version: int, size: int) -> tuple[tuple[str, int], ...]:
    return tuple(range_for(prefix, version, size))


@functools.lru_cache(maxsize=8192)
def _padding_lines(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{hashlib.sha1(f'pad:{prefix}:{i}'.encode()).hexdigest().upper()[:35]}:0" for i in range(count))


def range_for(prefix: str, version: int, size: int) -> list[tuple[str, int]]:
    """A deterministic range: ``size`` suffixes whose counts depend on ``version``."""
    pairs = []
    for index in range(size):
        digest = hashlib.sha1(f"{prefix}:{index}".encode()).hexdigest().upper()
        pairs.append((digest[:35], 1 + (index * 7 + version) % 5000))
    pairs.sort()
    return pairs


class FakeHIBP:
    """The server and its script; use as a context manager."""

    def __init__(self, range_size: int = 120, padding: int = 40, delay: float = 0.0):
        self.range_size = range_size
        self.padding = padding
        self.delay = delay
        self.version = 1
        self.extra: dict[str, list[tuple[str, int]]] = {}  # prefix -> pairs added (e.g. a canary's suffix)
        self.faults: dict[str, list[str]] = {}
        self.latest = {"Name": "ExampleBreach", "AddedDate": "2026-01-10T00:00:00Z", "PwnCount": 1000}
        self.requests: list[dict] = []
        self.on_request: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeHIBP:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def pairs(self, prefix: str) -> list[tuple[str, int]]:
        # Cached: the server must not be the bottleneck of the benchmark.
        return sorted(list(_range_cached(prefix, self.version, self.range_size)) + self.extra.get(prefix, []))

    def etag(self, prefix: str) -> str:
        return '"' + hashlib.sha1(repr(self.pairs(prefix)).encode()).hexdigest()[:16] + '"'

    def range_requests(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"].startswith("/range/")]

    def _next_fault(self, prefix: str) -> str | None:
        with self._lock:
            script = self.faults.get(prefix)
            return script.pop(0) if script else None

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so the client's pool is exercised

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes; without NODELAY, Nagle plus the
                # client's delayed ACK adds ~40 ms to every keep-alive answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                headers = dict(headers or {})
                if body and "gzip" in self.headers.get("Accept-Encoding", "") and status == 200:
                    body = gzip.compress(body, compresslevel=1)
                    headers["Content-Encoding"] = "gzip"
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "at": time.monotonic()})
                    count = len(fake.requests)
                if fake.on_request:
                    fake.on_request(count)
                if self.path == "/api/v3/latestbreach":
                    self._send(200, json.dumps(fake.latest).encode(), {"Content-Type": "application/json"})
                    return
                if not self.path.startswith("/range/") or len(self.path) != len("/range/ABCDE"):
                    self._send(404, b"not found")
                    return
                prefix = self.path[-5:].upper()
                fault = fake._next_fault(prefix)
                if fake.delay:
                    time.sleep(fake.delay)
                if fault and fault.startswith("slow:"):
                    time.sleep(float(fault.split(":")[1]))
                    fault = None
                if fault == "500":
                    self._send(500, b"<html>Internal Server Error</html>", {"Content-Type": "text/html"})
                    return
                if fault and fault.startswith("429:"):
                    self._send(429, b"Rate limit exceeded", {"Retry-After": fault.split(":")[1]})
                    return
                if fault == "html":
                    self._send(
                        200,
                        b"<!DOCTYPE html><html><body>Sign in to the Wi-Fi</body></html>",
                        {"Content-Type": "text/html"},
                    )
                    return
                if fault == "json":
                    self._send(200, b'{"error": "maintenance"}', {"Content-Type": "application/json"})
                    return
                if fault == "binary":
                    self._send(200, bytes(range(256)) * 4, {"Content-Type": "application/octet-stream"})
                    return
                pairs = fake.pairs(prefix)
                etag = fake.etag(prefix)
                if self.headers.get("If-None-Match") == etag and fault is None:
                    self._send(304, b"", {"ETag": etag})
                    return
                lines = [f"{suffix}:{count}" for suffix, count in pairs]
                if self.headers.get("Add-Padding", "").lower() == "true":
                    lines.extend(_padding_lines(prefix, fake.padding))
                    lines.sort()
                body = "\r\n".join(lines).encode("ascii")
                if fault == "partial_line":
                    self._send(200, body[: len(body) - 20], {"Content-Type": "text/plain", "ETag": etag})
                    return
                if fault == "cut":
                    # Promise the whole body, send half, close: the client sees a short read.
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(200, body, {"Content-Type": "text/plain", "ETag": etag, "Cache-Control": "public"})

        return Handler


def main() -> None:
    """Serve in its own process (benchmarks): ``python -m tests.support.fake_hibp RANGE_SIZE PADDING VERSION``."""
    import sys

    range_size, padding, version = (int(arg) for arg in sys.argv[1:4])
    fake = FakeHIBP(range_size=range_size, padding=padding)
    fake.version = version
    print(fake.base, flush=True)
    try:
        fake.server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
