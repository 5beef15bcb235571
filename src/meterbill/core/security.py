"""Credentials: generation, hashing, constant-time checks, encryption, signed tokens.

API keys and secrets are high-entropy random strings, so a single SHA-256 is
a sound verifier for them (no password stretching needed) and keeps the m3ter
token endpoint, which the SDK calls before every request, cheap. Credentials we
must replay to other systems (webhook passwords, connector API keys) are
encrypted with a key derived from the instance secret instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


def generate_secret(prefix: str = "", nbytes: int = 24) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(candidate: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(candidate), stored_hash)


def load_instance_secret(secret_key: str | None, key_file: str) -> bytes:
    if secret_key:
        return secret_key.encode()
    path = Path(key_file)
    if path.exists():
        return path.read_bytes().strip()
    key = secrets.token_urlsafe(48).encode()
    # O_EXCL: when two processes start together, exactly one writes the key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class Vault:
    """Symmetric encryption and token signing with keys derived from the instance secret."""

    def __init__(self, instance_secret: bytes) -> None:
        self._signing_key = hmac.new(instance_secret, b"meterbill/token-signing", hashlib.sha256).digest()
        enc_key = hmac.new(instance_secret, b"meterbill/encryption", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(enc_key))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("stored credential cannot be decrypted with this instance secret") from exc

    def sign_token(self, claims: dict[str, object], ttl_seconds: int) -> str:
        body = dict(claims, exp=int(time.time()) + ttl_seconds)
        payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=")
        signature = base64.urlsafe_b64encode(self._sign(payload)).rstrip(b"=")
        return (payload + b"." + signature).decode()

    def verify_token(self, token: str) -> dict[str, object] | None:
        """The token's claims, or None when it is forged, malformed or expired."""
        try:
            payload, signature = token.encode().split(b".")
            given = base64.urlsafe_b64decode(signature + b"=" * (-len(signature) % 4))
            if not hmac.compare_digest(given, self._sign(payload)):
                return None
            claims = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        except (ValueError, UnicodeError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            return None
        return claims

    def _sign(self, payload: bytes) -> bytes:
        # The one-shot digest in C: `hmac.new` builds its object in Python, a tenth of a metering request.
        return hmac.digest(self._signing_key, payload, "sha256")


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str


def parse_basic_auth(header: str | None) -> BasicCredentials | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep:
        return None
    return BasicCredentials(username, password)
