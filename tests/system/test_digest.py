"""The OpenSSL-free SHA-256 and HMAC-SHA256 give hashlib's and hmac's bytes."""

import hashlib
import hmac
import os

import pytest

from pmjobsd.system.digest import hmac_sha256, sha256_hex


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 1000, 100_000])
def test_sha256_is_hashlibs(size):
    data = os.urandom(size)
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("key_size", [0, 1, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("size", [0, 7, 64, 5000])
def test_hmac_sha256_is_hmacs(key_size, size):
    key, message = os.urandom(key_size), os.urandom(size)
    assert hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()
