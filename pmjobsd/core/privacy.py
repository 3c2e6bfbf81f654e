"""Privacy rules (docs/architecture.md, "Privacy"): entry-id hashing and scrubbing of free text.

Free text (exception messages, summaries) can carry URLs with tokens or
credentials — ``requests`` puts the URL in its errors — so every such string
passes :func:`scrub_text` before it reaches a log line, status or alert.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Any

from pmjobsd.system.files import ensure_private_dir, open_private

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://[^\s'\"<>]+")
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
REDACTED = "<redacted>"
# Settings keys whose values are secrets (or URLs that carry them).
_SECRET_KEY = re.compile(
    r"(secret|token|pass|pwd|bearer|api|private|key|auth|credential|cookie|webhook|url|target|smtp|dsn)", re.I
)
# urllib3/requests errors name the URL in pieces: "...(host='hooks.example.org', port=443): Max retries
# exceeded with url: /services/T000/SECRET?token=abc (Caused by ...)".
_URL_PATH_IN_ERROR = re.compile(r"(\burl: )/\S+")


def _scrub_url(match: re.Match) -> str:
    """Keep a URL's scheme and host: paths, queries and user info carry webhook tokens and credentials."""
    scheme = match.group(1).lower()
    authority = match.group(0).split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    host = authority.rsplit("@", 1)[-1]
    if scheme in ("http", "https", "ws", "wss"):
        return f"{scheme}://{host}/<redacted>"
    return f"{scheme}://<redacted>"


def scrub_text(text: str) -> str:
    """Return ``text`` with URLs reduced to scheme and host and e-mail addresses masked."""
    if not text:
        return text
    text = _URL.sub(_scrub_url, text)
    text = _URL_PATH_IN_ERROR.sub(r"\1<redacted>", text)
    return EMAIL.sub("<email>", text)


def redact_settings(value: Any, key: str = "") -> Any:
    """A copy of a settings object with every secret-bearing value replaced by ``"<redacted>"``.

    A value is secret when its key names a secret (token, password, url,
    targets, ...) or when it is a string holding a URL or an e-mail address.
    Booleans, numbers and ``null`` under such keys stay: they carry no secret
    and tell support whether a feature is on.
    """
    if isinstance(value, dict):
        return {k: redact_settings(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_settings(item, key) for item in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key) or "://" in value or EMAIL.search(value):
            return REDACTED
    return value


def mask_email(address: str) -> str:
    """``alice@example.org`` -> ``a***@example.org``."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "<email>"


class EntryIdHasher:
    """HMAC-SHA256 of an entry id with a random per-install key, first 16 hex digits.

    A plain hash of a small integer id is reversed by trying every id; the
    secret key (kept 0600 in the state folder) makes that impossible while the
    same id still gives the same tag, so log lines can be correlated.
    """

    def __init__(self, key: bytes):
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> EntryIdHasher:
        """Load the key at ``path``, creating it (0600, atomically) on first use."""
        try:
            key = path.read_bytes()
            if len(key) >= 32:
                return cls(key)
            short = True  # truncated or emptied: a short key makes every hash guessable
        except FileNotFoundError:
            short = False
        ensure_private_dir(path.parent)
        key = secrets.token_bytes(32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # the name is guessable: no links
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            if short:
                os.replace(tmp, path)
            else:
                # link() fails if another process created the key first: use theirs.
                os.link(tmp, path)
        except FileExistsError:
            key = path.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
        if len(key) < 32:
            raise ValueError(f"{path}: id-hash key shorter than 32 bytes")
        return cls(key)

    def __call__(self, entry_id: object) -> str:
        return hmac.new(self._key, str(entry_id).encode(), hashlib.sha256).hexdigest()[:16]
