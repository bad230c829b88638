"""HPKE (RFC 9180) single-shot sealing: the one recipe trustserve uses for public-key encryption.

Suite: DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, base mode, from
``pyhpke``. A sealed message is ``enc (32 bytes) || ciphertext``; ``info`` names
the protocol step (a fixed label per use, so a message made for one step
cannot be opened as another) and ``aad`` binds the public context around it.
Keys are raw 32-byte X25519 keys.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, PyHPKEError

from trustserve.errors import BadRequest, CannotOpenSealed

SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
ENC_SIZE = 32
KEY_SIZE = 32


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as ``(private_key, public_key)``, raw 32 bytes each."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key_of(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def check_public_key(public_key: bytes) -> bytes:
    """``public_key`` if it is a usable raw X25519 public key, else BadRequest.

    Usable: 32 bytes and not a point of small order, for which no shared secret exists
    (``cryptography`` refuses the exchange), so sealing to a checked key cannot fail.
    """
    if len(public_key) != KEY_SIZE:
        raise BadRequest(f"public key must be {KEY_SIZE} raw X25519 bytes")
    try:
        SUITE.kem.deserialize_public_key(public_key)
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public_key))
    except (PyHPKEError, ValueError):
        raise BadRequest("public key is not a valid X25519 key") from None
    return public_key


def seal(public_key: bytes, plaintext: bytes, aad: bytes = b"", info: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` to ``public_key``; returns ``enc || ciphertext``."""
    recipient = SUITE.kem.deserialize_public_key(check_public_key(public_key))
    enc, context = SUITE.create_sender_context(recipient, info=info)
    return bytes(enc) + bytes(context.seal(plaintext, aad=aad))


def open(private_key: bytes, sealed: bytes, aad: bytes = b"", info: bytes = b"") -> bytes:
    """Decrypt what ``seal`` made; any failure raises CannotOpenSealed (no detail given)."""
    if len(sealed) < ENC_SIZE + 16 or len(private_key) != KEY_SIZE:
        raise CannotOpenSealed()
    try:
        key = KEMKey.from_pyca_cryptography_key(X25519PrivateKey.from_private_bytes(private_key))
        view = memoryview(sealed)
        context = SUITE.create_recipient_context(bytes(view[:ENC_SIZE]), key, info=info)
        return bytes(context.open(view[ENC_SIZE:], aad=aad))  # type: ignore[arg-type]
    except (PyHPKEError, ValueError):
        raise CannotOpenSealed() from None


def seal_exporting(
    public_key: bytes, plaintext: bytes, aad: bytes, info: bytes, exporter: bytes, length: int
) -> tuple[bytes, bytes]:
    """``seal``, plus a secret exported from the same context (RFC 9180, section 5.3).

    Returns ``(enc || ciphertext, secret)``: the recipient derives the same secret with
    ``open_exporting``, so it can key a bulk cipher for data too large to pass through
    HPKE's own single-shot API cheaply.
    """
    recipient = SUITE.kem.deserialize_public_key(check_public_key(public_key))
    enc, context = SUITE.create_sender_context(recipient, info=info)
    sealed = bytes(enc) + bytes(context.seal(plaintext, aad=aad))
    return sealed, bytes(context.export(exporter, length))


def open_exporting(
    private_key: bytes, sealed: bytes, aad: bytes, info: bytes, exporter: bytes, length: int
) -> tuple[bytes, bytes]:
    """The plaintext of ``seal_exporting`` and the same exported secret; CannotOpenSealed else."""
    if len(sealed) < ENC_SIZE + 16 or len(private_key) != KEY_SIZE:
        raise CannotOpenSealed()
    try:
        key = KEMKey.from_pyca_cryptography_key(X25519PrivateKey.from_private_bytes(private_key))
        context = SUITE.create_recipient_context(sealed[:ENC_SIZE], key, info=info)
        plaintext = bytes(context.open(sealed[ENC_SIZE:], aad=aad))
        return plaintext, bytes(context.export(exporter, length))
    except (PyHPKEError, ValueError):
        raise CannotOpenSealed() from None
