"""The KMS's half of key release: released keys sealed to the requester and signed.

The protocol, and the requester's half, is ``trustserve.keyrelease.protocol``.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustserve.crypto import hpke
from trustserve.encoding import b64
from trustserve.keyrelease.protocol import DEFAULT_LEASE, RELEASE_INFO, signed_bytes


def seal_keys(
    identity: Ed25519PrivateKey,
    public_key: bytes,
    nonce: bytes,
    keys: dict[str, bytes],
    issued_at: float,
    lease: float = DEFAULT_LEASE,
) -> dict[str, Any]:
    """The KMS's answer: ``keys`` and their lease sealed to ``public_key``, signed with its
    identity key (so neither the keys nor the lease can be changed on the way)."""
    body = {
        "keys": {k: b64(v) for k, v in keys.items()},
        "issued_at": issued_at,
        "lease_until": issued_at + lease,
    }
    sealed = hpke.seal(public_key, json.dumps(body).encode(), aad=nonce, info=RELEASE_INFO)
    signature = identity.sign(signed_bytes(nonce, public_key, sealed))
    return {"key_ids": list(keys), "sealed": b64(sealed), "signature": b64(signature)}
