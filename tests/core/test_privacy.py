"""Scrubbing free text, redacting settings, and the id-hash key."""

import hashlib
import hmac
import os

from pmjobsd.core.privacy import REDACTED, EntryIdHasher, escape_control, redact_settings, safe_text, scrub_text


def test_urls_keep_scheme_and_host_only():
    text = scrub_text(
        "failed: http://127.0.0.1:8080/hook/T0KEN?x=1 https://user:pw@hooks.example.org/a/b "
        "mailtos://u:p@smtp.example.org ops@example.org"
    )
    assert text == (
        "failed: http://127.0.0.1:8080/<redacted> https://hooks.example.org/<redacted> mailtos://<redacted> <email>"
    )


def test_urllib3_error_format_loses_its_path():
    error = (
        "HTTPSConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded with url: "
        "/services/T000/B000/S3CRET?token=abc (Caused by NewConnectionError)"
    )
    scrubbed = scrub_text(error)
    assert "S3CRET" not in scrubbed and "token=abc" not in scrubbed
    assert "host='hooks.slack.com'" in scrubbed and "url: <redacted>" in scrubbed


def test_settings_secrets_are_redacted_by_key_and_by_shape():
    settings = {
        "alerts": {"targets": ["slack://a/b/c"], "allow_remote": True, "repeat_after": None},
        "definitions": {
            "mine": {
                "cron": "@daily",
                "options": {
                    "pass": "hunter2",
                    "pwd": "p2",
                    "bearer": "tok",
                    "api_key": "k",
                    "private": "x",
                    "endpoint": "https://example.org/x",
                    "owner": "alice@example.org",
                    "limit": 3,
                },
            }
        },
    }
    redacted = redact_settings(settings)
    options = redacted["definitions"]["mine"]["options"]
    assert all(options[key] == REDACTED for key in ("pass", "pwd", "bearer", "api_key", "private", "endpoint", "owner"))
    assert options["limit"] == 3 and redacted["definitions"]["mine"]["cron"] == "@daily"
    assert redacted["alerts"] == {"targets": [REDACTED], "allow_remote": True, "repeat_after": None}


def test_id_hash_key_is_created_private_and_a_short_key_is_replaced(tmp_path):
    key_path = tmp_path / "state" / "id-hash.key"
    first = EntryIdHasher.from_file(key_path)
    assert oct(key_path.stat().st_mode & 0o777) == "0o600" and len(key_path.read_bytes()) == 32
    assert first(5) == EntryIdHasher.from_file(key_path)(5) and len(first(5)) == 16
    key_path.write_bytes(b"")  # emptied: would make every hash guessable
    replaced = EntryIdHasher.from_file(key_path)
    assert len(key_path.read_bytes()) == 32 and replaced(5) != first(5)
    assert not [name for name in os.listdir(key_path.parent) if name.endswith(".tmp")]


def test_credential_shapes_lose_their_values():
    error = (
        "ValueError: apikey=APIKEY-CANARY-5 token: TOKEN-CANARY Authorization: Bearer BEARER-CANARY; "
        "{'password': 'PW-CANARY', 'limit': 3} client_secret=\"SECRET CANARY\" X-Api-Key: KEY-CANARY "
        "Proxy-Authorization: Basic BASIC-CANARY, then bearer LONE-CANARY"
    )
    scrubbed = scrub_text(error)
    assert "CANARY" not in scrubbed, scrubbed
    assert scrubbed.startswith("ValueError: apikey=<redacted> token: <redacted> Authorization: <redacted>;")
    assert "'limit': 3" in scrubbed


def test_words_that_only_look_like_keys_survive():
    text = (
        "KeyError: 'entries' after 3 monkeys=4 port=443 host='hooks.slack.com' "
        "jobs.alerts.webhook_secret: Expected `str`, got `int`"
    )
    assert scrub_text(text) == text


def test_control_characters_are_shown_as_escapes():
    hostile = "member\x1b[2J\rforged\nline\x07bell\x9bc1\u202etxt.exe\tend"
    escaped = escape_control(hostile)
    assert escaped == "member\\x1b[2J\\rforged\\nline\\x07bell\\x9bc1\\u202etxt.exe\\tend"
    assert escaped.isprintable()
    assert safe_text("token=abc \x1b[2J") == "token=<redacted> \\x1b[2J"


def test_id_hash_key_is_strong_and_every_byte_of_it_counts(tmp_path):
    """Length and determinism are not enough: a hash keyed by fewer bytes than the file holds is guessable."""
    key_path = tmp_path / "state" / "id-hash.key"
    hasher = EntryIdHasher.from_file(key_path)
    key = key_path.read_bytes()
    assert len(key) == 32 and len(set(key)) > 8  # random bytes, not a constant or a counter
    other_install = EntryIdHasher.from_file(tmp_path / "other" / "id-hash.key")
    assert all(hasher(n) != other_install(n) for n in range(100))  # each install has its own key
    assert hasher(7) == EntryIdHasher(key)(7)
    for position in range(len(key)):  # flipping any one bit of any byte changes the tags
        flipped = bytearray(key)
        flipped[position] ^= 0x01
        assert EntryIdHasher(bytes(flipped))(7) != hasher(7), f"key byte {position} is ignored"


def test_entry_ids_cannot_be_recovered_by_brute_force(tmp_path):
    """An attacker with the tags of a log bundle tries every small id under every key he can enumerate."""
    hasher = EntryIdHasher.from_file(tmp_path / "id-hash.key")
    ids = range(300)  # a vault's entry ids are small integers (more only costs time: one match is enough)
    tags = {hasher(n) for n in ids}
    assert len(tags) == len(ids)  # no collisions among them either

    messages = [str(n).encode() for n in ids]

    def guesses(key: bytes) -> set[str]:
        return {hmac.digest(key, message, "sha256").hex()[:16] for message in messages}

    assert not tags & {hashlib.sha256(message).hexdigest()[:16] for message in messages}  # not a plain hash
    assert not tags & guesses(b"")  # nor an empty key
    for byte in range(256):  # every one-byte key (HMAC pads a short key with zeros), and every repeated byte
        for key in (bytes([byte]), bytes([byte]) * 32):
            assert not tags & guesses(key), f"ids recovered with the key {key!r}"
