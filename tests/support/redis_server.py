"""A real ``redis-server`` on a free loopback port, for the coordination tests.

Each server has its own folder and no persistence (``--save ""``): a restart
loses every key, as a Redis without persistence does after a crash.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.alert_fixtures import free_port, make_self_signed

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def make_certificate(folder: Path) -> Path:
    """A throw-away self-signed certificate for 127.0.0.1 (``cert.pem``, ``key.pem``); the cert is its own CA."""
    make_self_signed(folder / "cert.pem", folder / "key.pem")
    return folder / "cert.pem"


class RedisServer:
    """One server process; ``url`` stays the same across :meth:`restart`.

    With ``tls`` (a folder for a throw-away certificate) it listens for TLS only and ``url``
    is ``rediss://`` with the certificate as CA; ``extra`` adds server options (passwords, ACL users).
    """

    def __init__(self, folder: Path, port: int | None = None, *, tls: Path | None = None, extra: tuple = ()):
        if not Path(REDIS_SERVER).exists():
            pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does)")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = tuple(extra)
        self.cert = make_certificate(tls) if tls is not None else None
        if self.cert is None:
            self.url = f"redis://127.0.0.1:{self.port}/0"
        else:
            self.url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
            conn: socket.socket = raw
            if self.cert is not None:
                conn = ssl.create_default_context(cafile=str(self.cert)).wrap_socket(raw, server_hostname="127.0.0.1")
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))

    def start(self) -> RedisServer:
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.cert is None:
            args += ["--port", str(self.port)]
        else:
            key = self.cert.with_name("key.pem")
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.cert)]
            args += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no"]
        args += ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log"), "--daemonize", "no"]
        args += list(self.extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                if self._answers():
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        pytest.fail(f"redis-server on port {self.port} did not answer PING within 10 s")

    def client(self, url: str | None = None):
        import redis

        return redis.Redis.from_url(url or self.url, decode_responses=True, socket_timeout=5)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a hung or partitioned server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> RedisServer:
        """Kill and start again on the same port: every key is gone."""
        self.stop()
        return self.start()

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""
