"""The coordination settings and the Redis address rules, against a real redis-server."""

from __future__ import annotations

import json

import pytest

from pmjobsd.coord.engine import connect, display_url, is_loopback
from pmjobsd.core.settings import load_settings


def _load(tmp_path, coordination):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"jobs": {"coordination": coordination}}))
    path.chmod(0o600)
    return load_settings(path, import_jobs=False)


def test_without_the_key_there_is_no_coordination(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{}")
    assert load_settings(path, import_jobs=False).settings.coordination is None


def test_a_loopback_engine_is_accepted_with_its_defaults(tmp_path):
    loaded = _load(tmp_path, {"url": "redis://127.0.0.1:6379/0", "group": "home-vault", "member": "laptop"})
    assert loaded.ok, loaded.issues
    coordination = loaded.settings.coordination
    assert (coordination.lease, coordination.when_engine_down, coordination.member_name()) == (30.0, "skip", "laptop")


@pytest.mark.parametrize(
    ("coordination", "path", "words"),
    [
        ({"url": "redis://nas.local:6379/0", "group": "g"}, "jobs.coordination", "allow_remote"),
        ({"url": "http://127.0.0.1/", "group": "g"}, "jobs.coordination.url", "rediss://"),
        ({"url": "redis://127.0.0.1:99999/0", "group": "g"}, "jobs.coordination.url", "not a readable URL"),
        ({"url": "redis://127.0.0.1/0", "group": "a b"}, "jobs.coordination.group", "matching regex"),
        ({"url": "redis://127.0.0.1/0", "group": "g", "lease": "0.5s"}, "jobs.coordination.lease", "1"),
        ({"group": "g"}, "jobs.coordination.url", "required"),
    ],
    ids=["remote-without-opt-in", "wrong-scheme", "bad-port", "bad-group", "short-lease", "no-url"],
)
def test_bad_coordination_settings_name_the_key(tmp_path, coordination, path, words):
    loaded = _load(tmp_path, coordination)
    messages = {issue.path: issue.message for issue in loaded.issues}
    assert path in messages, loaded.issues
    assert words in messages[path]


def test_a_remote_engine_is_accepted_with_the_opt_in(tmp_path):
    loaded = _load(tmp_path, {"url": "rediss://u:pw@nas.local:6380/0", "group": "g", "allow_remote": True})
    assert loaded.ok, loaded.issues


def test_the_password_never_reaches_an_error_or_the_display(tmp_path):
    loaded = _load(tmp_path, {"url": "redis://u:canary-pw-77@nas.local:6379/0", "group": "g"})
    assert loaded.issues and "canary-pw-77" not in " ".join(str(issue) for issue in loaded.issues)
    assert display_url("rediss://u:canary-pw-77@nas.local:6380/0?x=1") == "rediss://u:<redacted>@nas.local:6380/0"


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://127.8.0.1:6379/0", True),
        ("redis://[::1]:6379/0", True),
        ("redis://localhost/0", True),
        ("unix:///run/redis.sock", True),
        ("redis://10.0.0.5/0", False),
        ("redis://nas.local/0", False),
    ],
)
def test_loopback_addresses(url, local):
    assert is_loopback(url) is local


def test_a_client_talks_to_a_real_server(redis_server):
    client = connect(redis_server.url, member="laptop", timeout=2)
    assert client.ping() is True
    assert client.client_getname() == "pmjobsd:laptop"


def test_a_paused_server_fails_within_the_timeout(redis_server):
    import redis

    client = connect(redis_server.url, member="laptop", timeout=0.5)
    client.ping()
    redis_server.pause()
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
    finally:
        redis_server.resume()


def test_vault_jobs_and_device_jobs_by_default(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"jobs": {"definitions": {"user": {"cron": "* * * * *", "callable": "m:f"}}}}))
    jobs = load_settings(path, import_jobs=False).jobs
    scopes = {name: (job.definition.scope, job.definition.on_holder_lost) for name, job in jobs.items()}
    assert scopes == {
        "breach_cache_refresh": ("vault", "retry"),
        "backup_integrity_check": ("vault", "retry"),
        "expiring_password_digest": ("vault", "retry"),
        "log_rotation": ("device", "skip"),
        "log_purge": ("device", "skip"),
        "browser_bridge_health": ("device", "skip"),
        "user": ("device", "skip"),
    }
