"""sd_notify: real datagrams from a real process, through systemd-python and the socket fallback."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import uuid

import pytest

from pmjobsd.system import sdnotify
from pmjobsd.system.sdnotify import Notifier

HAVE_SYSTEMD_PYTHON = sdnotify.systemd_daemon() is not None
BACKENDS = [
    pytest.param(False, id="socket-fallback"),
    pytest.param(
        True,
        id="systemd-python",
        marks=pytest.mark.skipif(not HAVE_SYSTEMD_PYTHON, reason="systemd-python is not installed"),
    ),
]

SENDER = """
import sys
from pmjobsd.system.sdnotify import Notifier
notifier = Notifier(use_systemd={use_systemd})
assert notifier.enabled, notifier.backend
print(notifier.backend)
assert notifier.ready("3 jobs scheduled")
assert notifier.status("next: log_rotation\\nat 03:30")
assert notifier.watchdog()
assert notifier.reloading()
assert notifier.stopping()
"""


def _listener(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    # Ask the kernel for the sender's credentials, as systemd does to attribute messages.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(10)
    return sock


def _receive(sock, count):
    messages = []
    for _ in range(count):
        data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("3i", payload[:12])
        messages.append((data.decode(), pid))
    return messages


@pytest.mark.parametrize("use_systemd", BACKENDS)
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_process_sends_the_protocol_messages(tmp_path, use_systemd, abstract):
    if abstract:
        name = f"pmjobsd-test-{uuid.uuid4().hex}"
        sock, env_value = _listener(b"\0" + name.encode()), "@" + name
    else:
        path = tmp_path / "notify.sock"
        sock, env_value = _listener(str(path)), str(path)
    with sock:
        env = {**os.environ, "NOTIFY_SOCKET": env_value}
        process = subprocess.Popen(
            [sys.executable, "-c", SENDER.format(use_systemd=use_systemd)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        messages = _receive(sock, 5)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.strip() == ("systemd-python" if use_systemd else "socket")
    texts = [text for text, _pid in messages]
    assert texts[0] == "READY=1\nSTATUS=3 jobs scheduled"
    assert texts[1] == "STATUS=next: log_rotation at 03:30"  # one line, never a second assignment
    assert texts[2] == "WATCHDOG=1"
    reloading = dict(line.split("=", 1) for line in texts[3].split("\n"))
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert texts[4] == "STOPPING=1"
    assert {pid for _text, pid in messages} == {process.pid}


def test_monotonic_usec_is_the_monotonic_clock():
    # Python's monotonic clock is CLOCK_MONOTONIC on Linux: readings must be ordered.
    before = time.monotonic_ns() // 1000
    value = sdnotify.monotonic_usec()
    assert before <= value <= time.monotonic_ns() // 1000


def test_without_notify_socket_everything_is_a_no_op():
    notifier = Notifier({}, use_systemd=False)
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.watchdog() is False and notifier.stopping() is False
    assert notifier.watchdog_interval() is None


def test_vanished_socket_does_not_break_the_daemon(tmp_path):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}, use_systemd=False)
    assert notifier.ready() is False


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({"WATCHDOG_USEC": "300000000"}, 300.0),
        ({"WATCHDOG_USEC": "300000000", "WATCHDOG_PID": str(os.getpid())}, 300.0),
        ({"WATCHDOG_USEC": "300000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ, expected):
    assert sdnotify.watchdog_interval(environ) == expected
