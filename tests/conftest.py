"""Fixtures: a temporary app home and a real `pmjobsd run` process on it (tests/support/daemon.py)."""

from __future__ import annotations

import pytest

from tests.support.daemon import AppHome, DaemonProcess


@pytest.fixture
def home(tmp_path) -> AppHome:
    return AppHome(tmp_path / "home")


@pytest.fixture
def daemon_factory(home):
    started: list[DaemonProcess] = []

    def start(*extra: str, ready: bool = True) -> DaemonProcess:
        process = DaemonProcess(home, *extra)
        started.append(process)
        return process.wait_ready() if ready else process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free 127.0.0.1 port (tests/support/redis_server.py)."""
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()
