"""The control socket in-process: a real ControlServer on a real AF_UNIX socket, real folders."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from pmjobsd.app.paths import AppPaths
from pmjobsd.core import control


@pytest.fixture
def server(tmp_path):
    served = []

    def start(**options) -> control.ControlServer:
        path = tmp_path / "run" / "pmjobsd" / "control-x.sock"
        srv = control.ControlServer(
            [path, tmp_path / "state" / "control.sock"],
            lambda request: {"ok": True, "echo": request, "pid": os.getpid()},
            **options,
        )
        served.append(srv)
        return srv

    yield start
    for srv in served:
        srv.close()


def test_answers_and_binds_a_private_socket(server):
    srv = server()
    assert control.ask_daemon([srv.path], {"cmd": "ping"}) == {"ok": True, "echo": {"cmd": "ping"}, "pid": os.getpid()}
    assert srv.path.stat().st_mode & 0o777 == 0o600
    assert srv.path.parent.stat().st_mode & 0o777 == 0o700


def test_client_refuses_a_daemon_of_another_uid(server):
    """SO_PEERCRED on the client side: folder and socket belong to uid 65534, the process behind is root's."""
    srv = server()
    os.chown(srv.path.parent, 65534, 65534)
    os.chown(srv.path, 65534, 65534, follow_symlinks=False)
    with pytest.raises(control.UntrustedSocket, match=r"runs as uid 0, expected uid 65534"):
        control.request(srv.path, {"cmd": "ping"}, trusted=frozenset({65534}))


def test_client_refuses_a_group_writable_folder_and_a_symlinked_one(server, tmp_path):
    srv = server()
    srv.path.parent.chmod(0o770)
    with pytest.raises(control.UntrustedSocket, match=r"mode 0770 lets others replace the socket"):
        control.request(srv.path, {"cmd": "ping"})
    srv.path.parent.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(srv.path.parent)
    with pytest.raises(control.UntrustedSocket, match="not a folder"):
        control.request(link / srv.path.name, {"cmd": "ping"})


def test_ask_daemon_warns_about_a_refused_candidate_and_uses_the_next(server, tmp_path):
    srv = server()
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o777)
    foreign.chmod(0o777)
    warnings: list[str] = []
    answer = control.ask_daemon([foreign / "control.sock", srv.path], {"cmd": "ping"}, warn=warnings.append)
    assert answer["ok"] is True
    assert warnings == [
        f"refusing the control socket folder {foreign}: mode 0777 lets others replace the socket (expected 0700)"
    ]


def test_daemon_falls_back_when_its_runtime_folder_is_not_its_own(tmp_path):
    runtime = tmp_path / "run" / "pmjobsd"
    runtime.mkdir(parents=True)
    os.chown(runtime, 65534, 65534)
    srv = control.ControlServer(
        [runtime / "control-x.sock", tmp_path / "state" / "control.sock"], lambda r: {"ok": True}
    )
    try:
        assert srv.path == tmp_path / "state" / "control.sock"
        assert not (runtime / "control-x.sock").exists()
        assert control.ask_daemon([runtime / "control-x.sock", srv.path], {"cmd": "ping"}) == {"ok": True}
    finally:
        srv.close()
    assert not srv.path.exists()


def test_idle_connections_are_closed_after_the_timeout(server):
    srv = server(idle_timeout=0.3)
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.settimeout(5)
    idle.connect(str(srv.path))
    started = time.monotonic()
    assert idle.recv(1) == b""
    assert 0.2 < time.monotonic() - started < 3
    idle.close()


def test_at_the_cap_the_oldest_idle_connection_makes_room(server):
    srv = server(max_connections=4)
    idle = []
    for _ in range(4):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(srv.path))
        idle.append(sock)
    time.sleep(0.2)
    assert control.request(srv.path, {"cmd": "status"})["ok"] is True
    idle[0].settimeout(2)
    assert idle[0].recv(1) == b""  # the oldest was dropped for the newcomer
    for sock in idle:
        sock.close()


def test_a_busy_answer_is_retried_then_reported(tmp_path):
    """Every worker seat held by a request in progress: the client retries `busy`, then says so."""
    release = threading.Event()

    def slow(request):
        release.wait(10)
        return {"ok": True}

    srv = control.ControlServer(tmp_path / "s" / "control.sock", slow, max_workers=1)
    holder = threading.Thread(target=lambda: control.request(srv.path, {"cmd": "run-now"}))
    holder.start()
    try:
        time.sleep(0.2)
        with pytest.raises(control.ControlError, match="busy"):
            control.request(srv.path, {"cmd": "status"}, retry=0.3)
    finally:
        release.set()
        holder.join(10)
        srv.close()


def test_runtime_socket_name_is_per_state_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    one = AppPaths.resolve(data_dir=tmp_path / "one", config_dir=tmp_path, cache_dir=tmp_path)
    two = AppPaths.resolve(data_dir=tmp_path / "two", config_dir=tmp_path, cache_dir=tmp_path)
    again = AppPaths.resolve(data_dir=tmp_path / "x" / ".." / "one", config_dir=tmp_path, cache_dir=tmp_path)
    assert one.control_socket_path.parent == two.control_socket_path.parent == Path(tmp_path) / "pmjobsd"
    assert one.control_socket_path != two.control_socket_path
    assert again.control_socket_path == one.control_socket_path
    assert one.control_socket_candidates == (one.control_socket_path, one.state_dir / "control.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert one.control_socket_candidates == (one.state_dir / "control.sock",)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_an_idle_control_socket_never_wakes(tmp_path):
    """Nothing pending, nothing to accept: the selector thread sleeps until there is work (no 1 s tick)."""
    srv = control.ControlServer(tmp_path / "s" / "control.sock", lambda request: {"ok": True})
    try:
        assert control.request(srv.path, {"cmd": "status"})["ok"]  # served, then idle
        time.sleep(0.3)
        status = Path(f"/proc/self/task/{srv._thread.native_id}/status")

        def switches() -> int:
            line = next(x for x in status.read_text().splitlines() if x.startswith("voluntary_ctxt_switches"))
            return int(line.split()[1])

        before = switches()
        time.sleep(3.5)
        assert switches() - before <= 1  # a 1 s select() timeout wakes it 3 times here
    finally:
        srv.close()
