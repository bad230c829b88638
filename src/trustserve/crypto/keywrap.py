"""The root key (KEK) and key wrapping under it.

A wrapped key is ``nonce (12 random bytes) || AES-256-GCM ciphertext``; the
associated data names what the key is for and its key id, so a wrapped key
moved to another entry (or another purpose) does not unwrap.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustserve.crypto import hpke
from trustserve.errors import ConfigError

ROOT_KEY_SIZE = 32
_NONCE = 12
_DOMAIN = b"trustserve-kms-wrap-v1\0"


class RootKey:
    """The KMS key-encryption key. It only ever leaves this object wrapped."""

    __slots__ = ("_aead", "_raw")

    def __init__(self, key: bytes) -> None:
        if len(key) != ROOT_KEY_SIZE:
            raise ConfigError(f"root key must be {ROOT_KEY_SIZE} bytes")
        self._aead = AESGCM(key)
        self._raw = key

    def seal_to(self, recipient: bytes, aad: bytes, info: bytes) -> bytes:
        """The key HPKE-sealed to ``recipient`` (an attested replica joining this KMS):
        the only way it leaves this object other than wrapped by the operator secret."""
        return hpke.seal(recipient, self._raw, aad=aad, info=info)

    @classmethod
    def generate(cls) -> tuple[RootKey, bytes]:
        """A new root key, and its raw bytes (for the KeyStore to wrap once)."""
        raw = AESGCM.generate_key(bit_length=256)
        return cls(raw), raw

    def __repr__(self) -> str:
        return "RootKey(<secret>)"

    def wrap(self, key: bytes, purpose: str, key_id: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, key, _aad(purpose, key_id))

    def unwrap(self, wrapped: bytes, purpose: str, key_id: str) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _aad(purpose, key_id))
        except (InvalidTag, ValueError):
            raise ConfigError(
                f"{purpose} key {key_id!r} does not unwrap under the root key "
                "(KMS state damaged or from another KMS)"
            ) from None


def _aad(purpose: str, key_id: str) -> bytes:
    return _DOMAIN + purpose.encode() + b"\0" + key_id.encode()
