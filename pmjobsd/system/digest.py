"""SHA-256 of small inputs without loading OpenSSL.

``hashlib`` loads OpenSSL's libcrypto at import: ~3.6 MB resident, for the life of the
daemon.  What every start hashes is small (the settings file's fingerprint, the tag of its
socket folder), so CPython's own SHA-256 serves; the digests are the same bytes.  Keyed
hashes (HMAC) and big files (backups) use ``hmac``/``hashlib`` where they are needed:
no cryptography is written here.
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


def sha256_hex(data: bytes) -> str:
    """``hashlib.sha256(data).hexdigest()``."""
    digest: str = sha256(data).hexdigest()
    return digest
