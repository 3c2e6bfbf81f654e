"""The control socket: how `status` and `run-now` talk to a running daemon.

A Unix stream socket (0600, in a 0700 folder) speaking one JSON object per
line each way.  The accept loop blocks in ``accept()`` — no polling — and
each connection gets a short-lived thread, so a `run-now --wait` never
holds up a `status`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pmjobsd.observe.joblog import EventLogger
from pmjobsd.system.files import ensure_private_dir

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 64 * 1024


class ControlError(Exception):
    """The daemon could not be asked, or did not answer in time."""


class NoDaemon(ControlError):
    """Nothing listens on the socket: the request never reached a daemon."""


@contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits AF_UNIX's ~104-byte limit.

    Deep homes (and test folders) make ``<data dir>/jobs/control.sock`` longer
    than that.  On Linux the folder is then reached through an open descriptor,
    ``/proc/self/fd/N/control.sock``, which bind() and connect() resolve alike.
    """
    if len(os.fsencode(path)) < 100 or not os.path.isdir("/proc/self/fd"):
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    """Serve ``handler(request) -> response`` on ``path`` until :meth:`close`."""

    def __init__(self, path: Path, handler: Handler, log: EventLogger | None = None):
        self.path = path
        self.handler = handler
        self.log = log or EventLogger("control")
        ensure_private_dir(path.parent)
        if path.exists() or path.is_symlink():
            path.unlink()  # we hold the instance lock: any socket here is stale
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            with unix_address(path) as address:
                self._sock.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._sock.listen(16)
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="pmjobsd-control", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="pmjobsd-control-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = json.loads(_read_line(conn))
                if not isinstance(request, dict):
                    raise ValueError("expected a JSON object")
                response = self.handler(request)
            except Exception as exc:
                response = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            try:
                conn.sendall(json.dumps(response, default=str).encode() + b"\n")
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too large")
    return data.split(b"\n", 1)[0]


def ask_daemon(paths: Sequence[Path], message: dict[str, Any], timeout: float | None = 10.0) -> dict[str, Any]:
    """Send ``message`` to the first socket in ``paths`` with a daemon behind it; raise ControlError."""
    for path in paths:
        try:
            return request(path, message, timeout)
        except NoDaemon:
            continue
    raise NoDaemon(f"no daemon answers on {' or '.join(map(str, paths))}")


def request(path: Path, message: dict[str, Any], timeout: float | None = 10.0) -> dict[str, Any]:
    """Send ``message`` to the daemon at ``path``; raise ControlError if none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with unix_address(path) as address:
            sock.connect(address)
        sock.sendall(json.dumps(message).encode() + b"\n")
        line = _read_line(sock)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NoDaemon(f"no daemon answers on {path}") from exc
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc}") from exc
    finally:
        sock.close()
    if not line:
        raise ControlError(f"the daemon closed {path} without an answer")
    answer: dict[str, Any] = json.loads(line)
    return answer
