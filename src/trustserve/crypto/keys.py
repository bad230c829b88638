"""Serving key pairs (HPKE, with key ids and rotation), the broker key, and their signed list.

``ServingKeySet`` is what the KMS releases as the ``"serving"`` key (JSON bytes:
every key still accepted, current first, with private halves) and what a
worker uses to find the key a sealed request names. The public list, signed by
the KMS identity (Ed25519), is what clients fetch in the attestation bundle.

Each serving key is also an Oblivious HTTP key configuration (RFC 9458 section 3):
``ohttp_key_id`` is one byte, the KMS's serving-key rotation counter mod 256 (so the
current and the previous key never share one), and the public list carries the
encoded config (``ohttp_key_config``) beside the key, signed with it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustserve.crypto import hpke, ohttp
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, Expired, UnknownKeyId, UnknownOhttpKey

BROKER_KEY_SIZE = 32


def new_key_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def new_broker_key() -> bytes:
    """A random AES-256 key for standard-mode broker payloads."""
    return AESGCM.generate_key(bit_length=256)


@dataclass(frozen=True)
class ServingKey:
    key_id: str
    public_key: bytes
    not_after: float
    private_key: bytes | None = None
    ohttp_key_id: int = 0

    @classmethod
    def generate(cls, not_after: float, ohttp_key_id: int = 0) -> ServingKey:
        private, public = hpke.generate_keypair()
        return cls(new_key_id("srv"), public, not_after, private, ohttp_key_id % 256)

    @property
    def ohttp_config(self) -> ohttp.KeyConfig:
        return ohttp.KeyConfig(self.ohttp_key_id, self.public_key)

    def public_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "suite": hpke.SUITE_NAME,
            "public_key": b64(self.public_key),
            "not_after": self.not_after,
            "ohttp_key_id": self.ohttp_key_id,
            "ohttp_key_config": b64(self.ohttp_config.encode()),
        }

    def __repr__(self) -> str:
        return f"ServingKey({self.key_id!r}, not_after={self.not_after})"


@dataclass(frozen=True)
class ServingKeySet:
    """Accepted serving keys, current first."""

    keys: tuple[ServingKey, ...]

    @property
    def current(self) -> ServingKey:
        return self.keys[0]

    def find(self, key_id: str, now: float) -> ServingKey:
        """The key called ``key_id``; UnknownKeyId (naming the current one) or Expired."""
        for key in self.keys:
            if key.key_id == key_id:
                if now > key.not_after:
                    raise Expired(f"serving key {key_id} expired; current is {self.current.key_id}")
                return key
        raise UnknownKeyId(f"unknown serving key id {key_id!r}; current is {self.current.key_id}")

    def find_ohttp(self, ohttp_key_id: int, now: float) -> ServingKey:
        """The key whose OHTTP key config id is ``ohttp_key_id``; as ``find``."""
        for key in self.keys:
            if key.ohttp_key_id == ohttp_key_id:
                return self.find(key.key_id, now)
        raise UnknownOhttpKey(
            f"unknown OHTTP key config id {ohttp_key_id}; current is "
            f"{self.current.ohttp_key_id}: fetch the key configs again"
        )

    def to_bytes(self) -> bytes:
        """JSON with the private halves (secret: only ever sent sealed)."""
        items = [{**k.public_json(), "private_key": b64(k.private_key or b"")} for k in self.keys]
        return json.dumps({"keys": items}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ServingKeySet:
        try:
            raw = json.loads(data)
            keys = tuple(
                ServingKey(
                    str(k["key_id"]),
                    unb64(k["public_key"], "public_key"),
                    float(k["not_after"]),
                    unb64(k["private_key"], "private_key") or None,
                    _ohttp_id(k.get("ohttp_key_id", 0)),
                )
                for k in raw["keys"]
            )
        except (BadRequest, ValueError, KeyError, TypeError):
            raise BadRequest("serving key set is malformed") from None
        if not keys:
            raise BadRequest("serving key set is empty")
        return cls(keys)


def _ohttp_id(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 255:
        raise ValueError("ohttp_key_id must be 0..255")
    return value


def sign_serving_keys(
    identity: Ed25519PrivateKey, keys: ServingKeySet, issued_at: float
) -> dict[str, str]:
    """The public serving keys as canonical JSON, signed: ``{"payload", "signature"}`` base64."""
    body = {"issued_at": issued_at, "keys": [k.public_json() for k in keys.keys]}
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {"payload": b64(payload), "signature": b64(identity.sign(payload))}


def verify_serving_keys(identity_public_key: bytes, signed: Any) -> dict[str, Any]:
    """The signed payload (``issued_at``, ``keys``) if the identity signed it; else BadRequest."""
    try:
        payload = unb64(signed["payload"], "payload")
        signature = unb64(signed["signature"], "signature")
        Ed25519PublicKey.from_public_bytes(identity_public_key).verify(signature, payload)
        body = json.loads(payload)
    except InvalidSignature:
        raise BadRequest("serving keys are not signed by the KMS identity") from None
    except (BadRequest, ValueError, KeyError, TypeError):
        raise BadRequest("signed serving keys are malformed") from None
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise BadRequest("signed serving keys are malformed")
    return body
