"""Oblivious HTTP (RFC 9458): key configurations and the encapsulation of requests and responses.

A gateway publishes key configurations (section 3.1): ``key_id (1) | kem_id (2) |
public key (Npk) | length (2) | (kdf_id (2) | aead_id (2))...``; a list of them is the
``application/ohttp-keys`` body, each prefixed by its 2-byte length (section 3.2).

An encapsulated request (section 4.3, ``message/ohttp-req``) is
``hdr = key_id (1) | kem_id (2) | kdf_id (2) | aead_id (2)``, then the HPKE ``enc``,
then the HPKE-sealed Binary HTTP request; the HPKE ``info`` is
``"message/bhttp request" | 0x00 | hdr`` and the aad is empty. The encapsulated
response (section 4.4, ``message/ohttp-res``) is ``response_nonce | ct``: both sides
export ``secret = Export("message/bhttp response", max(Nn, Nk))`` from the request's
HPKE context, ``prk = Extract(salt = enc | response_nonce, secret)``, and the AEAD key
and nonce are ``Expand(prk, "key", Nk)`` and ``Expand(prk, "nonce", Nn)``. The gateway
draws ``response_nonce`` fresh for every response.

trustserve offers one suite, that of ``crypto/hpke.py``: DHKEM(X25519, HKDF-SHA256) /
HKDF-SHA256 / AES-256-GCM. HPKE comes from ``pyhpke``, HKDF and AES-GCM from
``cryptography``. The private ``_encapsulate`` / ``_decapsulate`` /
``ServerContext._seal`` take the AEAD and the ephemeral key or response nonce as
parameters only so the RFC's published test vector (Appendix A, AES-128-GCM, fixed
keys) can be checked; the public functions always use the one suite and fresh
randomness.

Who may see what: the frontend reads ``request_key_id`` (the header only) to route;
only a holder of the serving private key decapsulates. Any failure to decapsulate or
to open is ``CannotOpenSealed``; a header that names another key or suite says so
(those are public), a failed AEAD says nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyPair, PyHPKEError

from trustserve.crypto import hpke
from trustserve.errors import BadRequest, CannotOpenSealed

REQUEST_TYPE = "message/ohttp-req"
RESPONSE_TYPE = "message/ohttp-res"
KEYS_TYPE = "application/ohttp-keys"

KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM = 0x0001
AEAD_AES_256_GCM = 0x0002

HEADER_SIZE = 7
ENC_SIZE = hpke.ENC_SIZE
TAG_SIZE = 16
MIN_REQUEST_SIZE = HEADER_SIZE + ENC_SIZE + TAG_SIZE

_REQUEST_LABEL = b"message/bhttp request"
_RESPONSE_LABEL = b"message/bhttp response"
_NONCE_SIZE = 12  # Nn of both AES-GCM variants
_KEY_SIZES = {AEAD_AES_128_GCM: 16, AEAD_AES_256_GCM: 32}  # Nk
_SUITES = {
    AEAD_AES_128_GCM: CipherSuite.new(
        KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM
    ),
    AEAD_AES_256_GCM: hpke.SUITE,
}


@dataclass(frozen=True)
class KeyConfig:
    """One gateway key: its 1-byte id and raw X25519 public key, offered with trustserve's suite."""

    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 255:
            raise BadRequest(f"OHTTP key id {self.key_id} is not in 0..255")
        if len(self.public_key) != hpke.KEY_SIZE:
            raise BadRequest(f"OHTTP public key must be {hpke.KEY_SIZE} raw X25519 bytes")

    def encode(self) -> bytes:
        """RFC 9458 section 3.1, offering HKDF-SHA256 with AES-256-GCM."""
        return (
            self.key_id.to_bytes(1, "big")
            + KEM_X25519_HKDF_SHA256.to_bytes(2, "big")
            + self.public_key
            + (4).to_bytes(2, "big")
            + KDF_HKDF_SHA256.to_bytes(2, "big")
            + AEAD_AES_256_GCM.to_bytes(2, "big")
        )

    @classmethod
    def decode(cls, data: bytes) -> KeyConfig:
        """The key config that is all of ``data``.

        BadRequest unless it is X25519 and offers HKDF-SHA256 with AES-256-GCM.
        """
        key_id, kem_id, public_key, algorithms = _parse_key_config(data)
        if kem_id != KEM_X25519_HKDF_SHA256:
            raise BadRequest(
                f"OHTTP key config {key_id} uses KEM 0x{kem_id:04x}, not X25519 (0x0020)"
            )
        if (KDF_HKDF_SHA256, AEAD_AES_256_GCM) not in algorithms:
            raise BadRequest(
                f"OHTTP key config {key_id} does not offer HKDF-SHA256 with AES-256-GCM"
            )
        return cls(key_id, hpke.check_public_key(public_key))


def _parse_key_config(data: bytes) -> tuple[int, int, bytes, list[tuple[int, int]]]:
    """``(key_id, kem_id, public_key, [(kdf_id, aead_id)])``; the KEM must be X25519."""
    if len(data) < 3:
        raise BadRequest(f"OHTTP key config is {len(data)} bytes, too short for a key id and KEM")
    key_id, kem_id = data[0], int.from_bytes(data[1:3], "big")
    if kem_id != KEM_X25519_HKDF_SHA256:
        raise BadRequest(f"OHTTP key config {key_id} uses KEM 0x{kem_id:04x}, not X25519 (0x0020)")
    end_of_key = 3 + hpke.KEY_SIZE
    if len(data) < end_of_key + 2:
        raise BadRequest(
            f"OHTTP key config {key_id} ends inside its public key or algorithms length"
        )
    length = int.from_bytes(data[end_of_key : end_of_key + 2], "big")
    if length < 4 or length % 4:
        raise BadRequest(
            f"OHTTP key config {key_id} has an algorithms length of {length}, not a multiple of 4"
        )
    if len(data) != end_of_key + 2 + length:
        raise BadRequest(
            f"OHTTP key config {key_id} says {length} bytes of algorithms"
            f" but has {len(data) - end_of_key - 2}"
        )
    start = end_of_key + 2
    algorithms = [
        (int.from_bytes(data[i : i + 2], "big"), int.from_bytes(data[i + 2 : i + 4], "big"))
        for i in range(start, start + length, 4)
    ]
    return key_id, kem_id, bytes(data[3:end_of_key]), algorithms


def encode_key_configs(configs: Sequence[KeyConfig]) -> bytes:
    """The ``application/ohttp-keys`` body (RFC 9458 section 3.2)."""
    out = bytearray()
    for config in configs:
        encoded = config.encode()
        out += len(encoded).to_bytes(2, "big") + encoded
    return bytes(out)


def decode_key_configs(data: bytes) -> list[KeyConfig]:
    """The usable configs of an ``application/ohttp-keys`` body.

    A badly encoded list is refused whole (BadRequest), as section 3.2 asks; a
    well-framed config with another KEM or without our suite is skipped.
    """
    if not data:
        raise BadRequest("OHTTP key configs: the list is empty")
    pos, configs = 0, []
    while pos < len(data):
        if len(data) - pos < 2:
            raise BadRequest("OHTTP key configs: the list ends inside a length prefix")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if length > len(data) - pos:
            raise BadRequest(
                f"OHTTP key configs: a config claims {length} bytes but {len(data) - pos} are left"
            )
        encoded = data[pos : pos + length]
        pos += length
        if len(encoded) >= 3 and int.from_bytes(encoded[1:3], "big") != KEM_X25519_HKDF_SHA256:
            continue  # another KEM: its public key size is unknown here, so skip it whole
        key_id, _, public_key, algorithms = _parse_key_config(encoded)
        if (KDF_HKDF_SHA256, AEAD_AES_256_GCM) in algorithms:
            configs.append(KeyConfig(key_id, hpke.check_public_key(public_key)))
    return configs


def _header(key_id: int, aead_id: int) -> bytes:
    return (
        key_id.to_bytes(1, "big")
        + KEM_X25519_HKDF_SHA256.to_bytes(2, "big")
        + KDF_HKDF_SHA256.to_bytes(2, "big")
        + aead_id.to_bytes(2, "big")
    )


def request_key_id(data: bytes) -> int:
    """The key id of an encapsulated request, read from its header only (for routing)."""
    if len(data) < MIN_REQUEST_SIZE:
        raise BadRequest(
            f"OHTTP request is {len(data)} bytes,"
            f" shorter than the {MIN_REQUEST_SIZE} of an empty one"
        )
    if data[1:HEADER_SIZE] != _header(0, AEAD_AES_256_GCM)[1:]:
        kem, kdf, aead = (int.from_bytes(data[i : i + 2], "big") for i in (1, 3, 5))
        raise BadRequest(
            f"OHTTP request uses KEM 0x{kem:04x} / KDF 0x{kdf:04x} / AEAD 0x{aead:04x}; "
            "this gateway offers X25519 (0x0020) / HKDF-SHA256 (0x0001) / AES-256-GCM (0x0002)"
        )
    return data[0]


def _response_keys(
    secret: bytes, enc: bytes, response_nonce: bytes, aead_id: int
) -> tuple[AESGCM, bytes]:
    prk = HKDF.extract(hashes.SHA256(), enc + response_nonce, secret)
    key = HKDFExpand(hashes.SHA256(), _KEY_SIZES[aead_id], b"key").derive(prk)
    nonce = HKDFExpand(hashes.SHA256(), _NONCE_SIZE, b"nonce").derive(prk)
    return AESGCM(key), nonce


def _response_nonce_size(aead_id: int) -> int:
    return max(_NONCE_SIZE, _KEY_SIZES[aead_id])


@dataclass(frozen=True)
class ClientContext:
    """What a client keeps from encapsulating a request, to open the response."""

    enc: bytes
    _secret: bytes = field(repr=False)
    _aead_id: int = AEAD_AES_256_GCM

    def open_response(self, data: bytes) -> bytes:
        """The Binary HTTP response inside ``data``; CannotOpenSealed on any failure."""
        nonce_size = _response_nonce_size(self._aead_id)
        if len(data) < nonce_size + TAG_SIZE:
            raise CannotOpenSealed("OHTTP response is too short to hold a nonce and a tag")
        aead, nonce = _response_keys(self._secret, self.enc, data[:nonce_size], self._aead_id)
        try:
            return aead.decrypt(nonce, data[nonce_size:], None)
        except InvalidTag:
            raise CannotOpenSealed("cannot open the OHTTP response") from None


@dataclass(frozen=True)
class ServerContext:
    """What the gateway keeps from a request: ``enc`` (the replay nonce) and the response secret."""

    enc: bytes
    _secret: bytes = field(repr=False)
    _aead_id: int = AEAD_AES_256_GCM

    def seal_response(self, response: bytes) -> bytes:
        """The encapsulated response (``message/ohttp-res``) for a Binary HTTP response."""
        return self._seal(response, response_nonce=os.urandom(_response_nonce_size(self._aead_id)))

    def _seal(self, response: bytes, *, response_nonce: bytes) -> bytes:
        """``seal_response`` with a given nonce: for the RFC test vector only."""
        aead, nonce = _response_keys(self._secret, self.enc, response_nonce, self._aead_id)
        return response_nonce + aead.encrypt(nonce, response, None)


def encapsulate_request(config: KeyConfig, request: bytes) -> tuple[bytes, ClientContext]:
    """``message/ohttp-req`` bytes for ``request``, and the context that opens the answer."""
    return _encapsulate(
        config.key_id, hpke.check_public_key(config.public_key), AEAD_AES_256_GCM, request
    )


def _encapsulate(
    key_id: int,
    public_key: bytes,
    aead_id: int,
    request: bytes,
    *,
    ephemeral_private_key: bytes | None = None,
) -> tuple[bytes, ClientContext]:
    """``encapsulate_request`` for either AES-GCM; a fixed ephemeral key: RFC vector only."""
    suite = _SUITES[aead_id]
    header = _header(key_id, aead_id)
    ephemeral = None
    if ephemeral_private_key is not None:
        private = X25519PrivateKey.from_private_bytes(ephemeral_private_key)
        ephemeral = KEMKeyPair(
            KEMKey.from_pyca_cryptography_key(private),
            KEMKey.from_pyca_cryptography_key(private.public_key()),
        )
    recipient = suite.kem.deserialize_public_key(public_key)
    enc, context = suite.create_sender_context(
        recipient, info=_REQUEST_LABEL + b"\x00" + header, eks=ephemeral
    )
    sealed = header + bytes(enc) + bytes(context.seal(request, aad=b""))
    secret = bytes(context.export(_RESPONSE_LABEL, _response_nonce_size(aead_id)))
    return sealed, ClientContext(bytes(enc), secret, aead_id)


def decapsulate_request(
    private_key: bytes, key_id: int, data: bytes
) -> tuple[bytes, ServerContext]:
    """The Binary HTTP request in ``data`` and the context to answer it, or CannotOpenSealed."""
    return _decapsulate(private_key, key_id, data, AEAD_AES_256_GCM)


def _decapsulate(
    private_key: bytes, key_id: int, data: bytes, aead_id: int
) -> tuple[bytes, ServerContext]:
    if len(private_key) != hpke.KEY_SIZE:
        raise CannotOpenSealed()
    if len(data) < MIN_REQUEST_SIZE:
        raise CannotOpenSealed(
            f"OHTTP request is too short ({len(data)} bytes, at least {MIN_REQUEST_SIZE})"
        )
    header = _header(key_id, aead_id)
    if data[0] != key_id:
        raise CannotOpenSealed(f"OHTTP request is for key id {data[0]}, not {key_id}")
    if data[:HEADER_SIZE] != header:
        raise CannotOpenSealed("OHTTP request names a KEM, KDF or AEAD this gateway does not offer")
    suite = _SUITES[aead_id]
    enc = bytes(data[HEADER_SIZE : HEADER_SIZE + ENC_SIZE])
    try:
        key = KEMKey.from_pyca_cryptography_key(X25519PrivateKey.from_private_bytes(private_key))
        context = suite.create_recipient_context(enc, key, info=_REQUEST_LABEL + b"\x00" + header)
        request = bytes(context.open(bytes(data[HEADER_SIZE + ENC_SIZE :]), aad=b""))
        secret = bytes(context.export(_RESPONSE_LABEL, _response_nonce_size(aead_id)))
    except (PyHPKEError, ValueError):
        raise CannotOpenSealed() from None
    return request, ServerContext(enc, secret, aead_id)
