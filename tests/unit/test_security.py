"""Credentials: hashing, encryption and signed tokens, without a server."""

from __future__ import annotations

import base64
import time

import pytest

from meterbill.core.security import Vault, hash_secret, parse_basic_auth, verify_secret


def test_hash_verifies_only_the_exact_secret():
    stored = hash_secret("ms_secret")
    assert verify_secret("ms_secret", stored)
    assert not verify_secret("ms_secreT", stored)
    assert not verify_secret("", stored)
    assert stored != "ms_secret" and len(stored) == 64


def test_encryption_round_trips_and_differs_per_instance_secret():
    vault = Vault(b"one")
    sealed = vault.encrypt("test_key")
    assert "test_key" not in sealed
    assert vault.decrypt(sealed) == "test_key"
    with pytest.raises(ValueError):
        Vault(b"two").decrypt(sealed)


def test_tokens_carry_claims_and_refuse_forgery_and_expiry(monkeypatch):
    vault = Vault(b"instance")
    token = vault.sign_token({"org": "o1"}, ttl_seconds=60)
    assert vault.verify_token(token)["org"] == "o1"
    assert Vault(b"other").verify_token(token) is None
    _payload, signature = token.split(".")
    forged_payload = base64.urlsafe_b64encode(b'{"org":"o2","exp":9999999999}').rstrip(b"=").decode()
    assert vault.verify_token(f"{forged_payload}.{signature}") is None
    assert vault.verify_token("garbage") is None
    assert vault.verify_token("a.b.c") is None
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)
    assert vault.verify_token(token) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic " + base64.b64encode(b"key:").decode(), ("key", "")),
        ("basic " + base64.b64encode(b"k:s:x").decode(), ("k", "s:x")),
        ("Basic " + base64.b64encode(b"nocolon").decode(), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        (None, None),
    ],
)
def test_basic_auth_parsing(header, expected):
    parsed = parse_basic_auth(header)
    assert (parsed.username, parsed.password) == expected if expected else parsed is None
