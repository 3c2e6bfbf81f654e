"""The control socket: how `status` and `run-now` talk to a running daemon.

A Unix stream socket (0600, in a 0700 folder) speaking one JSON object per line
each way.

Trust: each side talks only to its own kind.  The folder of the socket must belong
to a trusted uid and be writable by nobody else, on both sides (it is opened once
and reached through that descriptor, so it cannot be swapped between the check and
the use); the daemon checks the uid of every peer (``SO_PEERCRED``, or
``LOCAL_PEERCRED`` on macOS) and the client checks the daemon's before it sends
anything.  Trusted are the daemon's own uid and root: root can read every file of
the user anyway, so refusing it protects nothing and lets root's monitoring ask a
user's daemon; a client running as root trusts the owner of the state folder it asks.

Floods: one selector thread accepts and reads requests, so an idle connection costs a
descriptor and no thread; a connection that has not sent its request line within
``idle_timeout`` is closed, and beyond the connection cap (a quarter of
RLIMIT_NOFILE, at most 64) the oldest idle one is dropped for the newcomer.  Complete
requests run on at most ``max_workers`` threads (a cap of their own: waiting `run-now`s never
starve `status`; idle threads end).  ``EMFILE`` in ``accept()`` never
ends the loop: a reserve descriptor is given up to accept and close the waiting
connection, and accepting pauses briefly.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import resource
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmjobsd.system.files import ensure_private_dir

if TYPE_CHECKING:  # the server side's logger; a client needs no jobs.log formatter
    from pmjobsd.observe.joblog import EventLogger

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 64 * 1024
IDLE_TIMEOUT = 5.0  # seconds a connection may take to send its request line
WRITE_TIMEOUT = 10.0  # seconds an answer may take to be taken by the client
# Requests in progress, each on a thread (a `run-now --wait` holds one for its run).  Only the owner (or
# root) gets this far, so this bounds the owner's own waits; it is not shared with the idle cap below,
# so 200 waiting `run-now --wait` calls neither starve `status` nor are turned away.
MAX_WORKERS = 256
WORKER_IDLE_EXIT = 30.0  # seconds an idle worker thread waits for more work before it ends
MAX_CONNECTIONS = 64  # connections that have not sent their request yet (idle ones cost no thread)
BACKLOG = 256
CONNECT_RETRY = 2.0  # seconds a client retries a full backlog (EAGAIN) or a closed connection
REFUSED_RETRY = 0.5  # seconds a client retries ECONNREFUSED (a restarting daemon; usually a stale socket)
ACCEPT_PAUSE = 0.2  # seconds accepting pauses after EMFILE
LOG_EVERY = 60.0  # seconds between two log lines of one kind of refusal


class ControlError(Exception):
    """The daemon could not be asked, or did not answer in time."""


class NoDaemon(ControlError):
    """Nothing listens on the socket: the request never reached a daemon."""


class UntrustedSocket(NoDaemon):
    """The socket, its folder or the process behind it is not trusted: nothing was sent."""


# --- trust --------------------------------------------------------------------------------


def trusted_uids(state_dir: Path | None = None) -> frozenset[int]:
    """The uids a client trusts as the daemon: its own and root's; as root, also the owner of ``state_dir``."""
    uids = {os.geteuid(), 0}
    if os.geteuid() == 0 and state_dir is not None:
        try:
            uids.add(os.stat(state_dir).st_uid)
        except OSError:
            pass
    return frozenset(uids)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected AF_UNIX socket."""
    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid_t pid; uid_t uid; gid_t gid}
        _pid, uid, _gid = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return int(uid)
    # macOS and the BSDs: LOCAL_PEERCRED at level SOL_LOCAL (0) gives
    # struct xucred {u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]}.
    xucred = struct.Struct("IIh16I")
    raw = sock.getsockopt(0, getattr(socket, "LOCAL_PEERCRED", 1), xucred.size)
    _version, uid = struct.unpack_from("II", raw)
    return int(uid)


def _uids(uids: Iterable[int]) -> str:
    return " or ".join(f"uid {uid}" for uid in sorted(uids))


def _check_folder(folder: Path, info: os.stat_result, trusted: frozenset[int]) -> None:
    refuse = f"refusing the control socket folder {folder}"
    if info.st_uid not in trusted:
        raise UntrustedSocket(
            f"{refuse}: owned by uid {info.st_uid}, expected {_uids(trusted)} (a 0700 folder of the daemon's owner)"
        )
    if info.st_mode & 0o022:
        raise UntrustedSocket(
            f"{refuse}: mode {stat.S_IMODE(info.st_mode):04o} lets others replace the socket (expected 0700)"
        )


@contextmanager
def checked_address(path: Path, trusted: frozenset[int]) -> Iterator[tuple[str, int]]:
    """Check the folder of ``path`` and yield (an address that reaches ``path`` through it, its descriptor).

    On Linux the address is ``/proc/self/fd/N/<name>``: bind() and connect() then use the
    very folder that was checked, and deep folders fit AF_UNIX's ~104-byte limit.
    Raises FileNotFoundError when the folder does not exist, UntrustedSocket when it is
    not trusted.
    """
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UntrustedSocket(
                f"refusing the control socket folder {path.parent}: not a folder (a symlink?)"
            ) from exc
        raise
    try:
        _check_folder(path.parent, os.fstat(fd), trusted)
        if os.path.isdir("/proc/self/fd"):
            yield f"/proc/self/fd/{fd}/{path.name}", fd
        elif len(os.fsencode(path)) < 100:
            yield str(path), fd
        else:
            raise ControlError(f"control socket path {path} is longer than AF_UNIX allows")
    finally:
        os.close(fd)


# --- the server ---------------------------------------------------------------------------


def connection_cap() -> int:
    """Open connections allowed at once: a quarter of RLIMIT_NOFILE, at most MAX_CONNECTIONS."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft // 4))


@dataclass
class _Pending:
    """A connection whose request line has not arrived yet."""

    deadline: float
    data: bytes = b""


@dataclass
class _Throttle:
    """Log one kind of event at most once per ``every`` seconds, with how many were left out."""

    every: float = LOG_EVERY
    last: float = field(default=-1e18)
    suppressed: int = 0

    def due(self) -> int | None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.suppressed += 1
            return None
        left_out, self.last, self.suppressed = self.suppressed, now, 0
        return left_out


class _Workers:
    """At most ``limit`` daemon threads taking jobs from one queue (started as needed; idle ones end)."""

    def __init__(self, limit: int):
        self._limit = limit
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._count = 0
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self._count < self._limit:
                self._count += 1
                threading.Thread(target=self._run, name="pmjobsd-control-worker", daemon=True).start()
            self._queue.put(job)

    def _run(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=WORKER_IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._idle and self._queue.empty():  # nobody counts on this thread: end it
                        self._idle -= 1
                        self._count -= 1
                        return
                continue
            if job is None:
                return
            job()
            with self._lock:
                self._idle += 1

    def stop(self) -> None:
        with self._lock:
            count = self._count
        for _ in range(count):
            self._queue.put(None)


class ControlServer:
    """Serve ``handler(request) -> response`` on the first usable socket of ``candidates`` until :meth:`close`.

    A candidate whose folder is not the daemon's own (or is writable by others) is
    refused with ``control.socket_dir_refused`` and the next one is used; ``path`` is
    where the socket was bound.
    """

    def __init__(
        self,
        candidates: Sequence[Path] | Path,
        handler: Handler,
        log: EventLogger | None = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_workers: int = MAX_WORKERS,
        max_connections: int | None = None,
    ):
        self.handler = handler
        if log is None:
            from pmjobsd.observe.joblog import EventLogger

            log = EventLogger("control")
        self.log = log
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections or connection_cap()
        self.allowed_uids = frozenset({os.geteuid(), 0})
        self._sock, self.path = self._bind([candidates] if isinstance(candidates, Path) else list(candidates))
        self._sock.setblocking(False)
        self._sock.listen(BACKLOG)
        self._closed = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pending: dict[socket.socket, _Pending] = {}  # oldest first
        self._active = 0
        self._active_lock = threading.Lock()
        self.max_workers = max_workers
        self._workers = _Workers(max_workers)
        self._reserve: int | None = self._open_reserve()
        self._throttles = {"peer": _Throttle(), "accept": _Throttle(), "busy": _Throttle(), "error": _Throttle()}
        self._thread = threading.Thread(target=self._loop, name="pmjobsd-control", daemon=True)
        self._thread.start()

    # --- binding ----------------------------------------------------------------------
    def _bind(self, candidates: list[Path]) -> tuple[socket.socket, Path]:
        own = frozenset({os.geteuid()})
        for index, path in enumerate(candidates):
            try:
                ensure_private_dir(path.parent)
                with checked_address(path, own) as (address, folder_fd):
                    try:
                        os.unlink(path.name, dir_fd=folder_fd)  # we hold the instance lock: it is stale
                    except FileNotFoundError:
                        pass
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    old_umask = os.umask(0o177)
                    try:
                        sock.bind(address)
                    except OSError:
                        sock.close()
                        raise
                    finally:
                        os.umask(old_umask)
                    os.chmod(path.name, 0o600, dir_fd=folder_fd)
                    return sock, path
            except (UntrustedSocket, OSError) as exc:  # e.g. a file, or a foreign folder, in its place
                if index == len(candidates) - 1:
                    raise
                reason = str(exc).split(": ", 1)[-1] if isinstance(exc, UntrustedSocket) else str(exc)
                self.log.warning("control.socket_dir_refused", folder=str(path.parent), reason=reason)
        raise ControlError("no control socket candidates")

    @staticmethod
    def _open_reserve() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY)
        except OSError:
            return None

    # --- the selector loop ------------------------------------------------------------
    def _loop(self) -> None:
        selector = self._selector
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        selector.register(self._sock, selectors.EVENT_READ, "accept")
        listening, resume_at = True, 0.0
        while not self._closed:
            try:
                now = time.monotonic()
                self._expire(now)
                if not listening and now >= resume_at:
                    selector.register(self._sock, selectors.EVENT_READ, "accept")
                    listening = True
                # Sleep until a connection's deadline or the end of an accept pause; with neither, until
                # a connection or close() (the wake pipe) comes: an idle daemon never wakes for this.
                wake_at = [p.deadline for p in self._pending.values()][:1] + ([] if listening else [resume_at])
                timeout = max(0.0, min(wake_at) - now) if wake_at else None
                for key, _ in selector.select(timeout):
                    if key.data == "wake":
                        self._drain_wake()
                    elif key.data == "accept":
                        if listening and not self._accept_ready():
                            selector.unregister(self._sock)
                            listening, resume_at = False, time.monotonic() + ACCEPT_PAUSE
                    elif isinstance(key.fileobj, socket.socket):
                        self._read(key.fileobj)
            except Exception as exc:  # the loop must outlive anything one connection can cause
                if self._closed:
                    return
                if self._throttles["error"].due() is not None:
                    self.log.error("control.error", error=f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def _accept_ready(self) -> bool:
        """Accept what waits; False when accepting must pause (descriptors exhausted)."""
        for _ in range(64):
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                if self._closed:
                    return True
                self._accept_failed(exc)
                return False
            self._admit(conn)
        return True

    def _accept_failed(self, exc: OSError) -> None:
        left_out = self._throttles["accept"].due()
        if left_out is not None:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self.log.warning("control.accept_failed", errno=name, error=str(exc), left_out=left_out)
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            return
        self._evict_oldest()
        # Give up the reserve descriptor to take the waiting connection off the backlog: its
        # client learns at once instead of waiting for a timeout.
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
            try:
                conn, _ = self._sock.accept()
                conn.close()
            except OSError:
                pass
            self._reserve = self._open_reserve()

    def _admit(self, conn: socket.socket) -> None:
        try:
            uid = peer_uid(conn)
        except OSError:
            conn.close()
            return
        if uid not in self.allowed_uids:
            self._reply_and_close(conn, f"refused: uid {uid} may not use the control socket of uid {os.geteuid()}")
            left_out = self._throttles["peer"].due()
            if left_out is not None:
                self.log.warning("control.peer_refused", uid=uid, left_out=left_out)
            return
        busy = self._active >= self.max_workers
        if busy or (len(self._pending) >= self.max_connections and not self._evict_oldest()):
            self._reply_and_close(conn, f"busy: {self._active} requests in progress", busy=True)
            left_out = self._throttles["busy"].due()
            if left_out is not None:
                self.log.warning("control.busy", active=self._active, left_out=left_out)
            return
        conn.setblocking(False)
        self._pending[conn] = _Pending(deadline=time.monotonic() + self.idle_timeout)
        self._selector.register(conn, selectors.EVENT_READ, "conn")
        self._read(conn)  # the request is usually there already

    @staticmethod
    def _reply_and_close(conn: socket.socket, error: str, busy: bool = False) -> None:
        """Answer an error without reading the request (``busy``: it was never handled, ask again)."""
        try:
            conn.setblocking(False)
            conn.send(json.dumps({"ok": False, "error": error, "busy": busy}).encode() + b"\n")
        except OSError:
            pass
        conn.close()

    def _read(self, conn: socket.socket) -> None:
        pending = self._pending.get(conn)
        if pending is None:  # dropped earlier in this round
            return
        try:
            chunk = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        pending.data += chunk
        if chunk and b"\n" not in pending.data and len(pending.data) <= MAX_REQUEST:
            return
        if not pending.data:  # closed without a request
            self._drop(conn)
            return
        self._detach(conn)
        with self._active_lock:
            self._active += 1
        data = pending.data
        self._workers.submit(lambda: self._serve(conn, data))

    def _detach(self, conn: socket.socket) -> None:
        del self._pending[conn]
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass

    def _drop(self, conn: socket.socket) -> None:
        self._detach(conn)
        conn.close()

    def _evict_oldest(self) -> bool:
        """Drop the oldest connection that still has not sent its request; False if there is none.

        Each one is read first: a client whose request simply was not read yet is served, not dropped.
        """
        for conn in list(self._pending):
            self._read(conn)
            if conn in self._pending:
                self._drop(conn)
                return True
        return False

    def _expire(self, now: float) -> None:
        for conn in [c for c, p in self._pending.items() if p.deadline <= now]:
            self._drop(conn)

    # --- a request, on a worker thread -------------------------------------------------
    def _serve(self, conn: socket.socket, data: bytes) -> None:
        try:
            with conn:
                conn.settimeout(WRITE_TIMEOUT)
                try:
                    if len(data) > MAX_REQUEST and b"\n" not in data[: MAX_REQUEST + 1]:
                        raise ValueError("request too large")
                    request = json.loads(data.split(b"\n", 1)[0])
                    if not isinstance(request, dict):
                        raise ValueError("expected a JSON object")
                    response = self.handler(request)
                except Exception as exc:
                    response = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                try:
                    conn.sendall(json.dumps(response, default=str).encode() + b"\n")
                except OSError:
                    pass
        finally:
            with self._active_lock:
                self._active -= 1

    def close(self) -> None:
        self._closed = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(5)
        self._sock.close()
        for conn in list(self._pending):
            conn.close()
        self._pending.clear()
        self._selector.close()
        self._workers.stop()
        for fd in (self._wake_r, self._wake_w, self._reserve):
            if fd is not None:
                os.close(fd)
        self._reserve = None
        try:
            with checked_address(self.path, frozenset({os.geteuid()})) as (_address, folder_fd):
                os.unlink(self.path.name, dir_fd=folder_fd)
        except (OSError, ControlError):
            pass


# --- the client ---------------------------------------------------------------------------


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST * 1024:
            raise ValueError("answer too large")
    return data.split(b"\n", 1)[0]


def ask_daemon(
    paths: Sequence[Path],
    message: dict[str, Any],
    timeout: float | None = 10.0,
    *,
    trusted: frozenset[int] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Send ``message`` to the first socket in ``paths`` with a trusted daemon behind it; raise ControlError.

    ``trusted`` defaults to :func:`trusted_uids` of the last candidate's folder (the state
    folder).  A refused candidate is reported through ``warn`` and the next one is tried;
    when none answers and one was refused, UntrustedSocket is raised.
    """
    if trusted is None:
        trusted = trusted_uids(Path(paths[-1]).parent if paths else None)
    refused: list[str] = []
    for path in paths:
        try:
            return request(path, message, timeout, trusted=trusted)
        except UntrustedSocket as exc:
            refused.append(str(exc))
            if warn is not None:
                warn(str(exc))
        except NoDaemon:
            continue
    if refused:
        raise UntrustedSocket("; ".join(refused))
    raise NoDaemon(f"no daemon answers on {' or '.join(map(str, paths))}")


class _Retry(Exception):
    def __init__(self, final: ControlError, window: float):
        super().__init__(str(final))
        self.final, self.window = final, window


def request(
    path: Path,
    message: dict[str, Any],
    timeout: float | None = 10.0,
    *,
    trusted: frozenset[int] | None = None,
    retry: float = CONNECT_RETRY,
) -> dict[str, Any]:
    """Send ``message`` to the daemon at ``path``; raise ControlError if none answers.

    A full backlog (EAGAIN), a refused connection and — for `status` and `ping`, which
    are safe to repeat — a connection closed without an answer are retried with backoff
    for up to ``retry`` seconds (ECONNREFUSED for at most REFUSED_RETRY).
    """
    trusted = trusted if trusted is not None else trusted_uids()
    repeatable = message.get("cmd") in ("status", "ping")
    started, delay = time.monotonic(), 0.01
    while True:
        try:
            return _request_once(path, message, timeout, trusted, repeatable)
        except _Retry as exc:
            if time.monotonic() + delay - started > min(retry, exc.window):
                raise exc.final from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _request_once(
    path: Path, message: dict[str, Any], timeout: float | None, trusted: frozenset[int], repeatable: bool
) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            with checked_address(path, trusted) as (address, folder_fd):
                info = os.stat(path.name, dir_fd=folder_fd, follow_symlinks=False)
                if not stat.S_ISSOCK(info.st_mode) or info.st_uid not in trusted:
                    raise UntrustedSocket(
                        f"refusing the control socket {path}: a {'socket' if stat.S_ISSOCK(info.st_mode) else 'non-socket'}"
                        f" owned by uid {info.st_uid}, expected a socket of {_uids(trusted)}"
                    )
                sock.connect(address)
        except FileNotFoundError as exc:
            raise NoDaemon(f"no daemon answers on {path}") from exc
        except ConnectionRefusedError as exc:
            raise _Retry(NoDaemon(f"no daemon answers on {path}"), REFUSED_RETRY) from exc
        except BlockingIOError as exc:
            raise _Retry(
                ControlError(f"control socket {path}: the daemon accepts no connection (backlog full)"), CONNECT_RETRY
            ) from exc
        except ControlError:
            raise
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc}") from exc
        uid = peer_uid(sock)
        if uid not in trusted:
            raise UntrustedSocket(f"refusing the daemon on {path}: it runs as uid {uid}, expected {_uids(trusted)}")
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            line = _read_line(sock)
        except (ConnectionResetError, BrokenPipeError) as exc:
            # Dropped unread (the daemon sheds the oldest idle connection when at its cap).
            failed = ControlError(f"control socket {path}: {exc}")
            if repeatable:
                raise _Retry(failed, CONNECT_RETRY) from exc
            raise failed from exc
        except (OSError, ValueError) as exc:
            raise ControlError(f"control socket {path}: {exc}") from exc
    finally:
        sock.close()
    if not line:
        closed = ControlError(f"the daemon closed {path} without an answer")
        if repeatable:
            raise _Retry(closed, CONNECT_RETRY)
        raise closed
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ControlError(f"the daemon at {path} answered something other than a JSON object")
    if answer.get("busy") is True:  # refused before it was read: safe to repeat, whatever the command
        raise _Retry(ControlError(f"the daemon at {path} is busy: {answer.get('error')}"), CONNECT_RETRY)
    return answer
