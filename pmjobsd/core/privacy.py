"""Privacy rules (docs/architecture.md, "Privacy"): entry-id hashing, scrubbing and escaping of free text.

Free text (exception messages, summaries) can carry URLs with tokens or
credentials — ``requests`` puts the URL in its errors, an HTTP client its
``Authorization`` header, a config error its ``api_key=...`` — so every such
string passes :func:`scrub_text` before it reaches a log line, status or alert.
Text for a terminal or an alert also passes :func:`escape_control`: a backup
member name or an exception message may carry ESC, CR or LF, which would
rewrite the terminal or forge lines.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pmjobsd.system.files import ensure_private_dir, open_private

# The patterns below EMAIL are compiled at their first use (re keeps them), not when the module is
# imported: together they cost ~3 ms of every start, and a start scrubs nothing.
_URL = r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://[^\s'\"<>]+"
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
REDACTED = "<redacted>"
# Settings keys whose values are secrets (or URLs that carry them).
_SECRET_KEY = r"(?i)(secret|token|pass|pwd|bearer|api|private|key|auth|credential|cookie|webhook|url|target|smtp|dsn)"
# urllib3/requests errors name the URL in pieces: "...(host='hooks.example.org', port=443): Max retries
# exceeded with url: /services/T000/SECRET?token=abc (Caused by ...)".
_URL_PATH_IN_ERROR = r"(\burl: )/\S+"
# "Authorization: Bearer abc", "Proxy-Authorization: Basic dXNlcjpwdw==", "'authorization': 'token abc'".
_AUTH_HEADER = (
    r"""(?i)\b((?:proxy-)?authorization)(["']?\s*[:=]\s*)["']?(?:(?:bearer|basic|digest|token|negotiate)\s+)?"""
    r"""[^\s,;&)}\]'"]+["']?"""
)
# "apikey=abc", "token: abc", "'password': 'x'", "client_secret=\"y\"", "X-Api-Key: z" -- a key that ends in a
# secret's name (not "KeyError" or "monkeys"), then = or :, then a quoted or bare value.  A dotted settings
# path ("jobs.alerts.webhook_secret: Expected `str`, got `int`") names a key, not a credential: it is left alone.
_SECRET_PAIR = (
    r"""(?i)(?<![\w.-])([\w-]*?(?:secret|token|password|passwd|passphrase|pwd|pass|apikey|api[_-]key|key|auth|"""
    r"""credentials?|cookie|session[_-]?id|signature))(?![\w.-])(["']?\s*[:=]\s*)"""
    r"""(?:"[^"]*"|'[^']*'|(?!<redacted>)["']?[^\s,;&)}\]'"]+)"""
)
# A bare bearer credential, wherever it appears.
_BEARER = r"(?i)\b(bearer\s+)(?!<redacted>)[A-Za-z0-9._~+/=-]+"
# C0 controls, DEL, C1 controls, and the bidirectional overrides that make text read differently than it is.
_CONTROL = "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"


def _scrub_url(match: re.Match) -> str:
    """Keep a URL's scheme and host: paths, queries and user info carry webhook tokens and credentials."""
    scheme = match.group(1).lower()
    authority = match.group(0).split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    host = authority.rsplit("@", 1)[-1]
    if scheme in ("http", "https", "ws", "wss"):
        return f"{scheme}://{host}/<redacted>"
    return f"{scheme}://<redacted>"


def scrub_text(text: str) -> str:
    """Return ``text`` with URLs reduced to scheme and host, e-mail addresses masked and the values of
    credentials (``Authorization:`` headers, ``Bearer`` tokens, ``apikey=``/``token:``/``password=`` pairs)
    replaced by ``<redacted>``."""
    if not text:
        return text
    text = re.sub(_URL, _scrub_url, text)
    text = re.sub(_URL_PATH_IN_ERROR, r"\1<redacted>", text)
    text = re.sub(_AUTH_HEADER, r"\1\2<redacted>", text)
    text = re.sub(_SECRET_PAIR, r"\1\2<redacted>", text)
    text = re.sub(_BEARER, r"\1<redacted>", text)
    return EMAIL.sub("<email>", text)


_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(match: re.Match) -> str:
    char = match.group(0)
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_control(text: str) -> str:
    """``text`` with every control character shown as a visible escape (``\\x1b``, ``\\r``, ``\\n``,
    ``\\x9b``, ``\\u202e``): one line, safe to print on a terminal or to show in an alert."""
    return re.sub(_CONTROL, _escape_char, text) if text else text


def safe_text(text: str) -> str:
    """:func:`scrub_text`, then :func:`escape_control`: free text as a terminal or an alert may show it."""
    return escape_control(scrub_text(text))


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
        if re.search(_SECRET_KEY, key) or "://" in value or EMAIL.search(value):
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
        key = os.urandom(32)  # what secrets.token_bytes is
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
        import hmac  # loads OpenSSL: only once a job hashes an entry id

        return hmac.new(self._key, str(entry_id).encode(), "sha256").hexdigest()[:16]
