"""A KMS log's name and key, derived from the KMS identity key a client has already verified.

The origin (a checkpoint's first line) is ``trustserve-kms/<first 16 hex digits of
SHA-256(identity public key)>``; the log's verifier key is that identity key under that name.
So a client that checked the KMS's evidence (which binds the identity key) needs no other
configuration to check the log's checkpoints.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustserve.transparency.note import ED25519, Verifier

PREFIX = "trustserve-kms/"


def log_origin(identity_public_key: bytes) -> str:
    return PREFIX + hashlib.sha256(identity_public_key).hexdigest()[:16]


def log_verifier(identity_public_key: bytes) -> Verifier:
    """The verifier key of the log of the KMS with this (raw Ed25519) identity key."""
    public = Ed25519PublicKey.from_public_bytes(identity_public_key)
    return Verifier(log_origin(identity_public_key), ED25519, public)
