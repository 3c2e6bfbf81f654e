"""The doctor's coordination checks that need no daemon: TLS, and nothing when coordination is off."""

from __future__ import annotations

from pmjobsd.core.context import Status
from pmjobsd.diagnostics import doctor
from pmjobsd.diagnostics.doctor.checks_coordination import _tls
from tests.support.diagnostics_fixtures import environment, seed_home


def test_a_remote_engine_without_tls_is_a_warning_with_the_fix():
    assert _tls("redis://127.0.0.1:6379/0", "x").status is Status.OK
    assert _tls("rediss://nas.local:6380/0", "x").status is Status.OK
    check = _tls("redis://u:pw@nas.local:6379/0", "redis://u:<redacted>@nas.local:6379/0")
    assert check.status is Status.WARN and "rediss://" in check.hint and "pw@" not in check.message


def test_without_coordination_the_doctor_says_nothing_about_it(home, monkeypatch):
    environment(home, monkeypatch)
    env = seed_home(home)
    assert env.loaded.settings.coordination is None
    assert doctor.check_coordination(env) == []
