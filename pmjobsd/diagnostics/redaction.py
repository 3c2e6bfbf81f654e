"""Redaction for the support bundle: vault terms, entry ids, e-mail addresses, secret settings.

The app logs websites and usernames in clear text ("Added new password for
github.com ..."), so :class:`VaultRedactor` learns every website and username
the vault holds (plain-text columns, read read-only) and replaces each
occurrence by its entry's ``entry_id_hash`` tag (``<website:0123456789abcdef>``).
All terms are found in one pass with an Aho-Corasick automaton (pyahocorasick),
so the cost does not grow with the number of entries.  A term matches only on
letter/digit boundaries (the username ``al`` must not eat every "al"),
case-insensitively; overlapping matches resolve to the leftmost, then longest.

Terms only cover what the vault holds *now*: a deleted or renamed entry's old
website stays in the app log.  So every known app log phrase that carries a
website (or a browser origin) has that slot redacted whatever it holds: a
current vault term becomes its entry's tag, anything else
``<website:not-in-vault:HASH>`` (HMAC of the folded text with the install's
key, so lines about the same site still correlate).

The settings in the bundle go through :func:`pmjobsd.core.privacy.redact_settings`, which replaces every
secret-bearing value of settings.json by ``"<redacted>"``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import ahocorasick

from pmjobsd.app.vault import read_vault
from pmjobsd.core.privacy import EMAIL, mask_email, scrub_text
from pmjobsd.system.files import PRIVATE_DIR_MODE

# The app's own phrases around entry ids: "(ID: 5)", "password ID 5", "entry 5".
_ENTRY_ID = re.compile(r"\b(ID:? |entry )(\d+)\b")
# "2026-11-28 09:00:00,123 - INFO - " — the app's logging.Formatter prefix stays as it is.
_APP_LOG_PREFIX = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d+)? - [A-Z]+ - )")
# The phrases of secure-password-manager 1.11.0 that log a website or an origin
# (apps/app.py, services/browser_bridge.py, utils/approval_manager.py), matched
# against a whole message.  Slots are greedy: a slot that happens to contain the
# phrase's own separator is over-redacted, never leaked.
_WEBSITE_PHRASES = tuple(
    re.compile(pattern)
    for pattern in (
        r"Added new password for (?P<slot>.+) in category .*",
        r"Deleted password for (?P<slot>.+) \(ID: \d+\)",
        r"Updated password for (?P<slot>.+) \(ID: \d+\)",
        r"Failed to decrypt entry for site (?P<slot>.+): .*",
        r"Remembered approval for (?P<slot>.+): (?:True|False)",
        r"Revoked approval for (?P<slot>.+)",
        r"Auto-approved credential access for (?P<slot>.+) \(remembered\)",
        r"Approval requested for (?P<slot>.+) from .*",
        r"Approval (?:approved|denied|timeout) for (?P<slot>.+)",
    )
)


def _fold(text: str) -> str:
    """Lower-case ``text`` without changing its length (indexes must map back)."""
    folded = text.lower()
    if len(folded) == len(text):
        return folded
    return "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _url_host(value: str) -> str | None:
    if "://" not in value:
        return None
    try:
        return urlsplit(value).hostname
    except ValueError:
        return None


class VaultRedactor:
    """Replace known vault terms, entry ids and e-mail addresses in free text.

    ``terms`` maps a website or username to its tag; ``hash_id`` turns an
    entry id into its ``entry_id_hash``.
    """

    def __init__(self, terms: dict[str, str], hash_id: Callable[[object], str]):
        self.hash_id = hash_id
        self.term_count = 0
        self._automaton = ahocorasick.Automaton()
        for term, tag in terms.items():
            key = _fold(term.strip())
            if key and self._automaton.get(key, None) is None:
                self._automaton.add_word(key, (len(key), tag))
                self.term_count += 1
        self._empty = self.term_count == 0
        if not self._empty:
            self._automaton.make_automaton()
        self.replacements = 0

    @classmethod
    def from_vault(
        cls, vault_path: Path, hash_id: Callable[[object], str], *, scratch_dir: Path, lock_timeout: float = 10.0
    ) -> VaultRedactor:
        """Learn every website and username in the vault at ``vault_path``; raise VaultError.

        ``scratch_dir`` (pmjobsd's state folder; created 0700 when absent) holds
        the private copy of the vault and its -wal when one is needed (in a 0700
        mkdtemp folder), never the system temp folder.
        """

        def read(conn: sqlite3.Connection) -> list[tuple]:
            return conn.execute("SELECT id, website, username FROM passwords").fetchall()

        scratch_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        rows = read_vault(vault_path, read, lock_timeout=lock_timeout, scratch_dir=scratch_dir).value
        terms: dict[str, str] = {}
        for entry_id, website, username in rows:
            tag = hash_id(entry_id)
            for kind, value in (("website", website), ("username", username)):
                if not isinstance(value, str) or not value.strip():
                    continue
                terms.setdefault(value, f"<{kind}:{tag}>")
                host = _url_host(value)  # "https://bank.example/login" is logged as "bank.example" too
                if host:
                    terms.setdefault(host, f"<{kind}:{tag}>")
        return cls(terms, hash_id)

    def _replace_terms(self, text: str) -> str:
        if self._empty or not text:
            return text
        folded = _fold(text)
        matches = []
        for end, (length, tag) in self._automaton.iter(folded):
            start = end - length + 1
            before_ok = start == 0 or not (_is_word_char(text[start - 1]) and _is_word_char(text[start]))
            after_ok = end + 1 == len(text) or not (_is_word_char(text[end + 1]) and _is_word_char(text[end]))
            if before_ok and after_ok:
                matches.append((start, -(end + 1), tag))
        if not matches:
            return text
        matches.sort()  # leftmost first, then longest
        out, position = [], 0
        for start, negative_end, tag in matches:
            if start < position:
                continue
            out.append(text[position:start])
            out.append(tag)
            position = -negative_end
            self.replacements += 1
        out.append(text[position:])
        return "".join(out)

    def redact(self, text: str) -> str:
        """Vault terms to tags, entry ids to hashes, e-mail addresses masked, URLs scrubbed."""
        text = self._replace_terms(text)
        text = _ENTRY_ID.sub(lambda m: f"{m.group(1)}<entry:{self.hash_id(int(m.group(2)))}>", text)
        text = EMAIL.sub(lambda m: mask_email(m.group(0)), text)
        return scrub_text(text)

    def _website_slot(self, value: str) -> str:
        """The tag for a website slot of an app log phrase, whatever it holds."""
        self.replacements += 1
        key = _fold(value.strip())
        known = self._automaton.get(key, None) if key else None
        if known is not None:
            tag: str = known[1]  # the (length, tag) pair added in __init__; ahocorasick has no types
            return tag
        return f"<website:not-in-vault:{self.hash_id('website:' + key)}>"

    def _redact_app_message(self, message: str) -> str:
        body = message.rstrip("\r\n")
        ending = message[len(body) :]
        for phrase in _WEBSITE_PHRASES:
            match = phrase.fullmatch(body)
            if match:
                start, end = match.span("slot")
                return (
                    self.redact(body[:start]) + self._website_slot(body[start:end]) + self.redact(body[end:]) + ending
                )
        return self.redact(message)

    def redact_app_log(self, text: str) -> str:
        """Redact each line of the app's log, keeping its ``asctime - LEVEL - `` prefix as it is.

        Besides :meth:`redact`, the website slot of each known app phrase is
        always replaced, so websites the vault no longer holds do not leak.
        """
        lines = []
        for line in text.splitlines(keepends=True):
            match = _APP_LOG_PREFIX.match(line)
            prefix = match.group(1) if match else ""
            lines.append(prefix + self._redact_app_message(line[len(prefix) :]))
        return "".join(lines)
