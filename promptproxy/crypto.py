"""Secrets at rest: Fernet (AES-128-CBC + HMAC) under keys derived from PROMPTPROXY_ENCRYPTION_KEY."""
from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1:"


class SecretError(RuntimeError):
    """A stored secret could not be decrypted (wrong key or tampered ciphertext)."""


def _fernet(material: str) -> Fernet:
    """Derive a Fernet key from any secret string with HKDF, domain-separated from SECRET_KEY uses."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"promptproxy secrets v1").derive(
        material.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


class Box:
    """Encrypts with the first key, decrypts with any (old keys listed for rotation)."""

    def __init__(self, key: str, old_keys: tuple[str, ...] = ()):
        self._current = _fernet(key)
        self._multi = MultiFernet([self._current, *(_fernet(k) for k in old_keys)])

    def encrypt(self, plaintext: str) -> str:
        """Return versioned ciphertext for a secret."""
        return PREFIX + self._multi.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Return the plaintext, or raise SecretError without revealing anything."""
        if not token.startswith(PREFIX):
            raise SecretError("stored secret has an unknown format")
        try:
            return self._multi.decrypt(token[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretError(
                "stored secret cannot be decrypted: wrong PROMPTPROXY_ENCRYPTION_KEY or tampered data"
            ) from None

    def is_current(self, token: str) -> bool:
        """True if the token decrypts under the current key (rotation can skip it)."""
        try:
            self._current.decrypt(token[len(PREFIX):].encode())
        except InvalidToken:
            return False
        return token.startswith(PREFIX)

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the current key."""
        if not token.startswith(PREFIX):
            raise SecretError("stored secret has an unknown format")
        try:
            return PREFIX + self._multi.rotate(token[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretError("stored secret cannot be decrypted with any configured key") from None


def hash_key(raw: str) -> str:
    """SHA-256 of a client key; keys carry 256 random bits, so no slow hash or salt is needed."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def hint(secret: str) -> str:
    """A display hint for a secret: its first three and last four characters."""
    return f"{secret[:3]}…{secret[-4:]}" if len(secret) >= 12 else "…"
