"""Checks of ``jobs.coordination``: the engine answers, TLS to a remote one, no duplicate member, a local state folder.

No lines at all when coordination is off.  Messages show the engine's address
as ``display_url`` does (never a password) and only names from Redis.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from pmjobsd.app.paths import network_filesystem
from pmjobsd.coord.group import pid_alive
from pmjobsd.core.privacy import escape_control
from pmjobsd.diagnostics.doctor.env import Check, DoctorEnv, fail, ok, shell_quote, warn


def check_coordination(env: DoctorEnv) -> list[Check]:
    """The coordination engine, TLS, the member name and the state folder (nothing when coordination is off)."""
    settings = env.loaded.settings.coordination
    if settings is None:
        return []
    from pmjobsd.coord import engine, keys
    from pmjobsd.coord.group import error_text

    shown = engine.display_url(settings.url)
    member = settings.member_name()
    checks = [_tls(settings.url, shown), _state_folder(env)]
    try:
        client = engine.connect(settings.url, member=f"{member}-doctor", timeout=env.timeout)
        try:
            version = client.info("server").get("redis_version", "?")
            fields = client.hgetall(keys.member(settings.group, member))
        finally:
            client.close()
    except Exception as exc:  # connection, timeout, TLS and authentication errors
        policy = settings.when_engine_down
        checks.insert(
            0,
            fail(
                "coordination.engine",
                f"{shown} does not answer: {error_text(exc)}; vault jobs follow when_engine_down={policy}",
                "start redis-server (or check jobs.coordination.url, its password and TLS), then: pmjobsd doctor",
            ),
        )
        return checks
    checks.insert(0, ok("coordination.engine", f"{shown} answers (Redis {escape_control(str(version))})"))
    checks.insert(1, _member(env, settings.group, member, fields))
    return checks


def _tls(url: str, shown: str) -> Check:
    from pmjobsd.coord.engine import is_loopback

    if is_loopback(url):
        return ok("coordination.tls", f"{shown} is on this machine")
    if urlsplit(url).scheme == "rediss":
        return ok("coordination.tls", f"{shown} is reached over TLS")
    return warn(
        "coordination.tls",
        f"{shown} is on another machine without TLS: its password and the group's traffic cross the network in clear",
        "enable TLS on the Redis server (tls-port) and use rediss:// in jobs.coordination.url",
    )


def _member(env: DoctorEnv, group: str, member: str, fields: dict) -> Check:
    """Another live daemon beating under our member name is a FAIL, whether ours runs or not."""
    document, _pid = env.daemon()
    reported = ((document or {}).get("coordination") or {}).get("duplicate_member")
    other = None
    if reported:
        other = str(reported)
    elif fields and not fields.get("stopped"):
        host, pid = str(fields.get("host", ""))[:100], str(fields.get("pid", ""))
        ours = (document or {}).get("daemon", {}).get("pid")
        if fields.get("duplicate"):
            other = f"daemons on {fields['duplicate']} and {host} both beat"
        elif host != socket.gethostname()[:100]:
            other = f"a daemon on {host} (pid {pid}) beats"
        elif pid.isdigit() and int(pid) != ours and pid_alive(int(pid)):
            other = f"another daemon on this machine (pid {pid}) beats"
    if other is None:
        return ok("coordination.member", f"member {member} of group {group}: no other daemon uses the name")
    return fail(
        "coordination.member",
        escape_control(f"duplicate member name {member} in group {group}: {other} under it"),
        f"give each machine its own jobs.coordination.member in {shell_quote(env.loaded.source)}",
    )


def _state_folder(env: DoctorEnv) -> Check:
    state = env.paths.state_dir
    kind = network_filesystem(state)  # the same rule that refuses such a folder at start-up
    if kind is not None:
        return fail(
            "coordination.state_folder",
            f"{state} is on a network file system ({kind}): the run history (SQLite) and the lock need a local disk",
            "leave the state folder at its default ($XDG_STATE_HOME/pmjobsd/<member>/) on a local disk",
        )
    return ok("coordination.state_folder", f"{state} is on a local file system")
