"""The Redis connection: which addresses are accepted, how they are shown, how a client is made.

``redis`` (redis-py) is imported only by :func:`connect`: a daemon without
``jobs.coordination`` never loads it.  Errors never quote a URL, which may
carry a password.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import redis

SCHEMES = ("redis", "rediss", "unix")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def check_url(url: str) -> str:
    """``url`` when it is a Redis address pmjobsd can use; ValueError (without the URL) otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it validates it
    except ValueError as exc:
        raise ValueError(f"not a readable URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("expected redis://host:port/db, rediss://host:port/db (TLS) or unix:///path/to/redis.sock")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("a unix:// address needs the socket's path: unix:///run/redis/redis.sock")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("expected a host: redis://127.0.0.1:6379/0")
    return url


def is_loopback(url: str) -> bool:
    """True for a unix socket or a host on this machine (127.0.0.0/8, ::1, localhost)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return True
    host = (parts.hostname or "").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def display_url(url: str) -> str:
    """``url`` fit for logs and status: the user name kept, the password replaced, no query."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        user = parts.username or ""
        netloc = f"{user}{':<redacted>' if parts.password else ''}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def connect(url: str, *, member: str, timeout: float) -> redis.Redis:
    """A client for ``url`` that answers or fails within ``timeout`` seconds (no retries of its own).

    Retrying is the caller's: a claim that is retried blindly could be won twice.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client: redis.Redis = redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=0,
        retry_on_timeout=False,
        retry=Retry(NoBackoff(), 0),
        client_name=f"pmjobsd:{member}",
        decode_responses=True,
    )
    return client
