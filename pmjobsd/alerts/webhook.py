"""Generic JSON webhook sink: POST the alert's fields as JSON, signed with HMAC-SHA256.

Target URLs ``json://host[:port]/path`` (plain HTTP) and ``jsons://...``
(HTTPS) come here instead of to apprise, so the receiver gets pmjobsd's own
payload and a signature it can check::

    X-Pmjobsd-Signature: sha256=<hex HMAC-SHA256 of the raw body, key alerts.webhook_secret>

Without a configured secret the request is sent unsigned.

A loopback target is sent directly, never through ``HTTP(S)_PROXY``: it counts
as local (no ``allow_remote`` needed), so it must not leave the machine.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit, urlunsplit

from pmjobsd.alerts.base import DeliveryError, Message

SIGNATURE_HEADER = "X-Pmjobsd-Signature"
SCHEMES = {"json": "http", "jsons": "https"}
# Answers that say "try later" rather than "this will never work".
_TRANSIENT_STATUS = {408, 425, 429}


def sign(body: bytes, secret: str) -> str:
    """The header value for ``body``: ``sha256=`` and the hex HMAC-SHA256 digest."""
    import hashlib  # OpenSSL: loaded by the first signed delivery, not by the daemon's start
    import hmac

    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def http_url(target: str) -> str:
    """``json://h:p/x`` -> ``http://h:p/x``; raise ValueError for another scheme."""
    parts = urlsplit(target)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ValueError("expected json://host/path or jsons://host/path")
    return urlunsplit((SCHEMES[parts.scheme], *parts[1:]))


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is localhost or a loopback address."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JsonWebhookSink:
    """POSTs ``message.fields`` plus title and text as one JSON object."""

    kind = "webhook"

    def __init__(self, target: str, secret: str | None = None, timeout: float = 10.0, remote: bool = True):
        self._url = http_url(target)
        self._loopback = is_loopback_url(self._url)
        self._secret = secret
        self._timeout = timeout
        self.remote = remote

    def payload(self, message: Message) -> bytes:
        data = {"kind": message.kind, **message.fields, "title": message.title, "text": message.body}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def send(self, message: Message) -> None:
        import requests  # on the sink's thread at the first alert, not when the daemon starts

        body = self.payload(message)
        headers = {"Content-Type": "application/json", "User-Agent": "pmjobsd"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        try:
            with requests.Session() as session:
                # trust_env=False: no proxy from the environment (nor .netrc) for a loopback target.
                session.trust_env = not self._loopback
                response = session.post(
                    self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
                )
        except requests.Timeout:
            raise DeliveryError("timeout") from None
        except requests.ConnectionError:
            # The exception text names the URL (and its token): keep the class only.
            raise DeliveryError("connection failed") from None
        except requests.RequestException as exc:
            raise DeliveryError(type(exc).__name__) from None
        if 200 <= response.status_code < 300:
            return
        permanent = 400 <= response.status_code < 500 and response.status_code not in _TRANSIENT_STATUS
        raise DeliveryError(f"HTTP {response.status_code}", permanent=permanent)
