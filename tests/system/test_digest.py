"""The OpenSSL-free SHA-256 gives hashlib's bytes."""

import hashlib
import os

import pytest

from pmjobsd.system.digest import sha256_hex


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 1000, 100_000])
def test_sha256_is_hashlibs(size):
    data = os.urandom(size)
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
