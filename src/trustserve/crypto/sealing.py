"""Sealed inference: what only the client and an attested worker can read.

Request: ``u32 n | head | body`` where ``head`` (``n`` bytes) is
``hpke.seal(serving public key, JSON {issued_at, nonce, response_key,
header_length, kind}, aad=route)`` and ``body`` is ``iv | AES-256-GCM(v2 body)``
under a key exported from the same HPKE context (RFC 9180 secret export), with
the route as associated data too. ``route`` names model, version and key id,
so a sealed request cannot be replayed against another model or key, nor be
routed to another version of the model: the client names the concrete version
it resolved from the attestation bundle's model list, and a worker refuses a
route whose version is not its own (an empty "default" version included).
Response: AES-256-GCM under the client's fresh response key, with the route and
the request nonce as associated data, so a response cannot be swapped between
requests. Its plaintext is ``u32 n | JSON {status, code, header_length} | body``:
the status (an error's machine code) is inside, so a frontend or broker can
neither turn an answer into an error nor change where its JSON header ends.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustserve.crypto import hpke
from trustserve.encoding import b64
from trustserve.errors import CannotOpenSealed

CONTENT_TYPE = "application/trustserve-sealed"
ATTESTATION_PATH = "/v2/trustserve/attestation"  # where a frontend serves the KMS bundle
# where a frontend passes on the KMS's transparency log (untrusted: proofs check themselves)
TRANSPARENCY_CHECKPOINT_PATH = "/v2/transparency/checkpoint"
TRANSPARENCY_CONSISTENCY_PATH = "/v2/transparency/consistency"
KEY_ID_HEADER = "Trustserve-Key-Id"
REQUEST_INFO = b"trustserve sealed request v1"
BODY_EXPORTER = b"trustserve sealed request body key"
_LEN = struct.Struct(">I")
NONCE_SIZE = 16
IV_SIZE = 12


@dataclass(frozen=True)
class Route:
    """What a sealed message is bound to: model, the concrete version, serving key id."""

    model: str
    version: str
    key_id: str

    def aad(self) -> bytes:
        return json.dumps(
            {"v": 1, "model": self.model, "version": self.version, "key_id": self.key_id},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()


@dataclass(frozen=True)
class ResponseKey:
    """What the client keeps to open the answer to one request."""

    key: bytes
    nonce: bytes


@dataclass(frozen=True)
class OpenedRequest:
    """``kind`` is ``v2`` (tensors) or ``torchserve`` (a body as the TorchServe API takes it)."""

    kind: str
    body: bytes
    header_length: int | None
    issued_at: float
    reply: ResponseKey


def seal_request(
    public_key: bytes,
    route: Route,
    body: bytes,
    header_length: int | None,
    now: float | None = None,
    kind: str = "v2",
) -> tuple[bytes, ResponseKey]:
    reply = ResponseKey(AESGCM.generate_key(bit_length=256), os.urandom(NONCE_SIZE))
    head = json.dumps(
        {
            "issued_at": time.time() if now is None else now,
            "nonce": b64(reply.nonce),
            "response_key": b64(reply.key),
            "header_length": header_length,
            "kind": kind,
        }
    ).encode()
    aad = route.aad()
    sealed_head, body_key = hpke.seal_exporting(
        public_key, head, aad, REQUEST_INFO, BODY_EXPORTER, 32
    )
    iv = os.urandom(IV_SIZE)
    sealed_body = AESGCM(body_key).encrypt(iv, body, aad)
    return b"".join([_LEN.pack(len(sealed_head)), sealed_head, iv, sealed_body]), reply


def open_request(private_key: bytes, route: Route, sealed: bytes) -> OpenedRequest:
    """Any failure, including a well-sealed message of the wrong shape, is CannotOpenSealed."""
    if len(sealed) < _LEN.size:
        raise CannotOpenSealed()
    (n,) = _LEN.unpack_from(sealed)
    view = memoryview(sealed)
    head_end = _LEN.size + n
    if len(sealed) < head_end + IV_SIZE + 16:
        raise CannotOpenSealed()
    aad = route.aad()
    inner, body_key = hpke.open_exporting(
        private_key, bytes(view[_LEN.size : head_end]), aad, REQUEST_INFO, BODY_EXPORTER, 32
    )
    try:
        head = json.loads(inner)
        key = base64.b64decode(head["response_key"], validate=True)
        nonce = base64.b64decode(head["nonce"], validate=True)
        issued_at = float(head["issued_at"])
        hl = head.get("header_length")
        header_length = None if hl is None else int(hl)
        kind = str(head.get("kind", "v2"))
        iv = view[head_end : head_end + IV_SIZE]
        body = AESGCM(body_key).decrypt(bytes(iv), view[head_end + IV_SIZE :], aad)
    except (ValueError, KeyError, TypeError, InvalidTag):
        raise CannotOpenSealed() from None
    if len(key) != 32 or len(nonce) != NONCE_SIZE or kind not in ("v2", "torchserve"):
        raise CannotOpenSealed()
    return OpenedRequest(kind, body, header_length, issued_at, ResponseKey(key, nonce))


@dataclass(frozen=True)
class SealedAnswer:
    """An opened answer: the worker's status and error code, and the body (an error's message)."""

    status: int
    code: str | None
    body: bytes
    header_length: int | None


def seal_response(
    reply: ResponseKey,
    route: Route,
    body: bytes,
    header_length: int | None,
    status: int = 200,
    code: str | None = None,
) -> bytes:
    head = json.dumps({"status": status, "code": code, "header_length": header_length}).encode()
    iv = os.urandom(IV_SIZE)
    plain = b"".join([_LEN.pack(len(head)), head, body])
    return iv + AESGCM(reply.key).encrypt(iv, plain, route.aad() + reply.nonce)


def open_response(reply: ResponseKey, route: Route, sealed: bytes) -> SealedAnswer:
    if len(sealed) < IV_SIZE + _LEN.size + 16:
        raise CannotOpenSealed()
    try:
        plain = AESGCM(reply.key).decrypt(
            sealed[:IV_SIZE], sealed[IV_SIZE:], route.aad() + reply.nonce
        )
        (n,) = _LEN.unpack_from(plain)
        head = json.loads(plain[_LEN.size : _LEN.size + n])
        status, code, hl = head["status"], head["code"], head["header_length"]
    except (InvalidTag, ValueError, KeyError, TypeError, struct.error):
        raise CannotOpenSealed() from None
    if type(status) is not int or not (code is None or isinstance(code, str)):
        raise CannotOpenSealed()
    if not (hl is None or type(hl) is int):
        raise CannotOpenSealed()
    return SealedAnswer(status, code, plain[_LEN.size + n :], hl)
