"""Read the app's ``breach_cache.json`` one top-level entry at a time.

The cache of a big vault is tens of MB.  ``json.load`` of it holds the GIL for
seconds (stalling the scheduler and every other job of the daemon) and builds
objects of several times the file's size.  :func:`iter_entries` instead reads
1 MiB chunks and hands each ``"key": value`` of the top-level object to the
standard library's C decoder (``JSONDecoder.raw_decode``) on its own: the GIL
is free between entries and during every read, and only one entry's objects
exist at a time.  Each entry comes with its exact source text, so a merge can
copy the entries it does not change without re-encoding them.

Why not a streaming library: ijson's C backend (yajl2_c) builds a nested value
with a prefix string per level, so a ``[[[[...`` file of 30,000 levels took
more than 2 GB (measured) -- the very kind of file this must survive.  The
stdlib decoder stops at Python's recursion limit with ``RecursionError``.

An entry written exactly as the app's ``json.dump`` writes a range list
(:data:`APP_ENTRY`) is recognised by one C-level regex match and not decoded at
all: the caller knows it is well formed and decodes it only if it needs it.

Anything that is not a JSON object, not valid JSON, not UTF-8 or nested
deeper than the decoder allows raises :class:`CacheCorrupt` naming the file,
the place and what was expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, TextIO

CHUNK = 1 << 20  # characters read at a time; a range entry is ~40 kB
EXPECTED = "expected an object of 5-hex-digit prefixes to [[suffix, count], ...]"
_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()
# ``[["<35 hex>", count], ...]`` with json.dump's separators: the app's range entry.
APP_ENTRY = re.compile(r'\[(?:\["[0-9A-F]{35}", [0-9]+\](?:, \["[0-9A-F]{35}", [0-9]+\])*)?\]')
_TYPE_OF_FIRST = {"[": "list", '"': "string", "t": "boolean", "f": "boolean", "n": "null"}


class CacheCorrupt(ValueError):
    """The cache file is not a JSON object of prefix -> list (message names the file)."""


class Entry(NamedTuple):
    """One ``"key": value`` of the top-level object.

    ``text`` is the value's exact JSON text.  ``app_format``: the text is a range
    list as the app writes it (:data:`APP_ENTRY`) and ``value`` is None, not
    decoded; otherwise ``value`` is the decoded value."""

    key: str
    text: str
    value: object
    app_format: bool

    def decoded(self) -> object:
        return json.loads(self.text) if self.app_format else self.value


class _Reader:
    """A growing window on the file: ``buf[pos:]`` is what has not been parsed yet."""

    def __init__(self, path: Path, handle: TextIO) -> None:
        self.path = path
        self.handle = handle
        self.buf = ""
        self.pos = 0
        self.consumed = 0  # characters dropped before buf[0], for messages
        self.eof = False
        self.want = CHUNK

    def corrupt(self, what: str) -> CacheCorrupt:
        return CacheCorrupt(f"{self.path}: not valid JSON ({what} at character {self.consumed + self.pos}); {EXPECTED}")

    def more(self) -> None:
        """Read the next chunk (dropping what was parsed); set ``eof`` at the end."""
        try:
            data = self.handle.read(self.want)
        except UnicodeDecodeError as exc:
            raise CacheCorrupt(f"{self.path}: not UTF-8 text ({exc.reason}); {EXPECTED}") from None
        if not data:
            self.eof = True
        self.consumed += self.pos
        self.buf = self.buf[self.pos :] + data
        self.pos = 0

    def peek(self) -> str:
        """The next character after whitespace, or "" at the end of the file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos] if self.pos < len(self.buf) else ""
            self.more()

    def app_entry(self) -> str | None:
        """The text of an app-format range list at ``pos`` (consumed), or None."""
        match = APP_ENTRY.match(self.buf, self.pos)
        if match is None or match.end() == len(self.buf):  # cut at the window's end: decode instead
            return None
        self.pos = match.end()
        return match.group()

    def value(self) -> tuple[object, str]:
        """Decode the JSON value at ``pos``; return it and its source text."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise self.corrupt(exc.msg) from None
            except RecursionError:
                raise self.corrupt("nested deeper than the decoder allows") from None
            else:
                # A number at the end of the window may go on in the next chunk.
                if end < len(self.buf) or self.eof:
                    text = self.buf[self.pos : end]
                    self.pos = end
                    self.want = CHUNK
                    return value, text
            # Cut by the window: read more, doubling so that one huge value costs O(n), not O(n^2).
            self.want = min(self.want * 2, 1 << 30)
            self.more()

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise self.corrupt(f"expected {what}")
        self.pos += 1


def iter_entries(path: Path) -> Iterator[Entry]:
    """Yield an :class:`Entry` for each ``"key": value`` of the file's top-level object.

    Raise FileNotFoundError/OSError from opening or reading, CacheCorrupt for
    anything but one JSON object (a key that appears twice is yielded twice:
    the app's ``json.load`` keeps the last).
    """
    with open(path, encoding="utf-8", newline="") as handle:
        reader = _Reader(path, handle)
        first = reader.peek()
        if first != "{":
            if not first:
                raise CacheCorrupt(f"{path}: empty file; {EXPECTED}")
            kind = _TYPE_OF_FIRST.get(first, "number" if first in "-0123456789" else "")
            if kind:
                raise CacheCorrupt(f"{path}: top level is a JSON {kind}; {EXPECTED}")
            raise reader.corrupt("expected '{'")
        reader.pos += 1
        if reader.peek() == "}":
            reader.pos += 1
        else:
            while True:
                if reader.peek() != '"':
                    raise reader.corrupt("expected a quoted key")
                key, _ = reader.value()
                reader.expect(":", "':' after a key")
                reader.peek()
                text = reader.app_entry()
                if text is not None:
                    yield Entry(str(key), text, None, True)
                else:
                    value, text = reader.value()
                    yield Entry(str(key), text, value, False)
                separator = reader.peek()
                reader.pos += 1
                if separator == "}":
                    break
                if separator != ",":
                    reader.pos -= 1
                    raise reader.corrupt("expected ',' or '}' after a value")
        if reader.peek():
            raise reader.corrupt("extra data after the object")


__all__ = ["APP_ENTRY", "CacheCorrupt", "Entry", "iter_entries", "EXPECTED"]
