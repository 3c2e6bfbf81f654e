"""End to end: the control socket against impostors, other users, floods and a second daemon.

Everything runs for real: `python3 -m pmjobsd run`, uid 65534 through ``setpriv``, real
AF_UNIX sockets, a real RLIMIT_NOFILE.  Folders that another uid must reach are made under
/tmp (the checkout and pytest's tmp_path may sit under 0700 folders).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmjobsd.core import control
from tests.support.daemon import AppHome, DaemonProcess, wait_for

TICK = {"cron": "@yearly", "callable": "tests.support.sample_jobs:ok", "catch_up": False}
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"]

# uid 65534 pretends to be the daemon: it answers every request with "pid 1, all OK".
IMPOSTOR = r"""
import json, os, socket, sys
path = sys.argv[1]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(8)
print("ready", flush=True)
doc = {"generated_at": "2026-01-01T00:00:00.000+00:00", "status": "OK", "jobs": [],
       "daemon": {"running": True, "pid": 1, "version": "9.9", "started_at": None, "abandoned_threads": 0,
                  "heartbeat_age_s": 0.1, "host": "impostor"},
       "settings": {"path": "x", "valid": True, "issues": []}}
while True:
    conn, _ = server.accept()
    conn.recv(65536)
    conn.sendall(json.dumps({"ok": True, "status": doc, "pid": 1}).encode() + b"\n")
    conn.close()
"""

# uid 65534 connects to the daemon's socket and prints whatever comes back.
PEER = r"""
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect(sys.argv[1])
try:
    sock.sendall(json.dumps({"cmd": "status"}).encode() + b"\n")
except BrokenPipeError:  # the daemon may answer and close before reading a byte
    pass
data = b""
while True:
    try:
        chunk = sock.recv(65536)
    except (ConnectionResetError, socket.timeout):
        break
    if not chunk:
        break
    data += chunk
print(data.decode())
"""


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder under /tmp that uid 65534 can reach (the caller sets its mode)."""
    folder = Path(tempfile.mkdtemp(prefix="pmjobsd-ctl-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def socket_path(home: AppHome) -> Path:
    """Where the running daemon bound its control socket (it says so in daemon.ready)."""
    return Path(home.events("daemon.ready")[-1]["control_socket"])


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect_idle(path: Path, count: int) -> list[socket.socket]:
    """``count`` connections that never send a byte (connects that the daemon refuses are dropped)."""
    idle = []
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)  # deep test folders exceed AF_UNIX's limit
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            try:
                sock.connect(f"/proc/self/fd/{folder}/{path.name}")
            except OSError:
                sock.close()
                continue
            idle.append(sock)
    finally:
        os.close(folder)
    return idle


def test_client_refuses_an_impostor_socket_folder(home, daemon_factory, shared_tmp):
    """XDG_RUNTIME_DIR is world-writable (like /tmp); uid 65534 owns pmjobsd/ there and swaps the socket."""
    shared_tmp.chmod(0o1777)
    home.runtime_dir = shared_tmp
    folder = shared_tmp / "pmjobsd"
    subprocess.run([*NOBODY, f"import os; os.mkdir({str(folder)!r}); os.chmod({str(folder)!r}, 0o777)"], check=True)
    home.write_settings({"definitions": {"tick": TICK}})
    daemon = daemon_factory()

    # The impostor takes the name in its folder that clients look for first.
    env = home.env()
    first = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pmjobsd.app.paths import AppPaths; print(AppPaths.resolve().control_socket_candidates[0])",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(first).parent == folder
    impostor = subprocess.Popen([*NOBODY, IMPOSTOR, first], stdout=subprocess.PIPE, text=True)
    try:
        assert impostor.stdout is not None and impostor.stdout.readline().strip() == "ready"
        result = home.cli("status", "--json")
        document = json.loads(result.stdout)
        assert document["daemon"]["pid"] == daemon.pid, "the impostor answered"
        assert result.returncode == 0
        assert f"refusing the control socket folder {folder}" in result.stderr
        assert "owned by uid 65534" in result.stderr
        # The daemon refused that folder too, said so, and serves from its state folder.
        (refused,) = home.events("control.socket_dir_refused")
        assert refused["folder"] == str(folder) and "uid 65534" in refused["reason"]
        assert socket_path(home) == home.data_dir / "jobs" / "control.sock"
    finally:
        impostor.kill()
        impostor.wait(10)


def test_daemon_refuses_a_connection_from_another_uid(home, daemon_factory, shared_tmp):
    """Even with the socket made reachable (0666 in a 0711 folder), uid 65534 gets no status."""
    shared_tmp.chmod(0o711)
    home.runtime_dir = shared_tmp
    home.write_settings({"definitions": {"tick": TICK}})
    daemon = daemon_factory()
    path = socket_path(home)
    assert path.parent == shared_tmp / "pmjobsd"
    path.parent.chmod(0o711)
    path.chmod(0o666)

    peer = subprocess.run([*NOBODY, PEER, str(path)], capture_output=True, text=True, timeout=30)
    assert peer.returncode == 0, peer.stderr
    assert '"status"' not in peer.stdout and str(daemon.pid) not in peer.stdout
    answer = json.loads(peer.stdout)
    assert answer["ok"] is False and "uid 65534" in answer["error"]
    wait_for(lambda: home.events("control.peer_refused", uid=65534), message="control.peer_refused")
    # Its owner is still served.
    code, document = home.status()
    assert code == 0 and document["daemon"]["pid"] == daemon.pid


def test_idle_connections_cost_no_threads_and_time_out(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK}})
    daemon = daemon_factory()
    before = threads_of(daemon.pid)
    idle = connect_idle(socket_path(home), 300)
    try:
        assert len(idle) >= 250
        started = time.monotonic()
        code, document = home.status()
        took = time.monotonic() - started
        assert code == 0 and document["daemon"]["pid"] == daemon.pid
        assert took < 10, f"status took {took:.1f}s behind 300 idle connections"
        threads = threads_of(daemon.pid)
        assert threads <= before + 20, f"{threads} threads (was {before}) with 300 idle connections"
        assert fds_of(daemon.pid) < 150
        # Idle connections are closed by the daemon: every one reads EOF (or a reset) before long.
        deadline = time.monotonic() + 20
        for sock in idle:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in idle:
            sock.close()


def test_accept_loop_survives_fd_exhaustion(home, tmp_path):
    """RLIMIT_NOFILE 64: a flood of idle connections, then a job holding every descriptor (EMFILE)."""
    home.write_settings(
        {
            "definitions": {
                "tick": TICK,
                "hog": {**TICK, "callable": "tests.support.control_jobs:hold_fds", "options": {"seconds": 8}},
            }
        }
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen(
        [sys.executable, "-m", "pmjobsd", "run", "--no-console"],
        env=home.env(),
        stderr=(tmp_path / "daemon.stderr").open("w"),
        preexec_fn=limit,
    )
    try:
        wait_for(lambda: home.events("daemon.ready") or proc.poll() is not None, message="daemon.ready")
        assert proc.poll() is None
        path = socket_path(home)

        idle = connect_idle(path, 100)
        try:
            code, document = home.status()
            assert code == 0 and document["daemon"]["pid"] == proc.pid, "status during the flood"
        finally:
            for sock in idle:
                sock.close()

        started = home.cli("run-now", "hog")
        assert started.returncode == 0, started.stderr
        wait_for(lambda: home.events("job.started", job="hog"), message="hog started")
        time.sleep(0.5)  # it now holds every free descriptor
        refused = connect_idle(path, 10)
        wait_for(lambda: home.events("control.accept_failed", errno="EMFILE"), message="an EMFILE in accept()")
        for sock in refused:
            sock.close()
        wait_for(lambda: home.events("job.succeeded", job="hog"), message="hog released its descriptors")

        # The control socket answers again; a tick that failed for want of descriptors meanwhile may still
        # be waiting for its retry (WARN), so the verdict is OK once that retry ran.
        code, document = wait_for(
            lambda: (lambda answer: answer if answer[0] == 0 else None)(home.status()), message="status OK after EMFILE"
        )
        assert document["daemon"]["pid"] == proc.pid, "status after EMFILE"
        result = home.cli("run-now", "tick", "--wait")
        assert result.returncode == 0, result.stderr
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_hundred_concurrent_status_calls_all_answer(home, daemon_factory):
    home.write_settings({"definitions": {"tick": TICK}})
    daemon = daemon_factory()
    path = socket_path(home)
    barrier = threading.Barrier(100)
    answers: list[object] = []

    def ask() -> None:
        barrier.wait()
        try:
            answers.append(control.ask_daemon([path], {"cmd": "status"})["status"]["daemon"]["pid"])
        except control.ControlError as exc:
            answers.append(exc)

    workers = [threading.Thread(target=ask) for _ in range(100)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    failures = [answer for answer in answers if answer != daemon.pid]
    assert len(answers) == 100 and not failures, f"{len(failures)} false failures: {failures[:3]}"


def test_two_daemons_sharing_a_runtime_dir_each_answer_for_themselves(home, daemon_factory, tmp_path):
    other = AppHome(tmp_path / "other")
    other.runtime_dir = home.runtime_dir
    for each in (home, other):
        each.write_settings({"definitions": {"tick": TICK}})
    first = daemon_factory()
    second_process = DaemonProcess(other).wait_ready()
    try:
        assert socket_path(home) != socket_path(other)
        assert socket_path(home).parent == socket_path(other).parent == home.runtime_dir / "pmjobsd"
        for each, daemon in ((home, first), (other, second_process), (home, first)):
            code, document = each.status()
            assert code == 0 and document["daemon"]["pid"] == daemon.pid
    finally:
        second_process.stop()
    # The first daemon's socket survived the second one's start and stop.
    code, document = home.status()
    assert code == 0 and document["daemon"]["pid"] == first.pid
