"""SHA-256 and HMAC-SHA256 for small inputs, without loading OpenSSL.

``hashlib`` and ``hmac`` load OpenSSL's libcrypto at import: ~3.6 MB resident, for the
life of the daemon.  What the daemon hashes is small (the settings file's fingerprint,
the tag of its socket folder, one entry id at a time), so CPython's own SHA-256 serves;
the digests are the same bytes.  Hashing big files (backups) keeps using ``hashlib``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _builtin_sha256() -> Callable[..., Any]:
    for module in ("_sha256", "_sha2"):  # CPython up to 3.11, and from 3.12 on
        try:
            constructor: Callable[..., Any] = importlib.import_module(module).sha256
            return constructor
        except (ImportError, AttributeError):
            continue
    from hashlib import sha256  # another interpreter: its own

    return sha256


sha256 = _builtin_sha256()
_BLOCK = 64  # SHA-256's block size in bytes
_INNER = bytes(x ^ 0x36 for x in range(256))
_OUTER = bytes(x ^ 0x5C for x in range(256))


def sha256_hex(data: bytes) -> str:
    """``hashlib.sha256(data).hexdigest()``."""
    digest: str = sha256(data).hexdigest()
    return digest


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """``hmac.new(key, message, hashlib.sha256).digest()`` (RFC 2104)."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner: bytes = sha256(key.translate(_INNER) + message).digest()
    outer: bytes = sha256(key.translate(_OUTER) + inner).digest()
    return outer
