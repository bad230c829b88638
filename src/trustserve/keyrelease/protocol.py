"""Key release protocol pieces: challenges, the request, and how keys travel back.

Who is trusted: the requester (a worker or frontend) trusts only a KMS identity
key it was configured with (pinned, or read from an attestation bundle it
verified itself); the network, the host and its TLS CA file are not trusted.
The KMS trusts only evidence its release policy admits.

1. ``POST /v1/challenge`` -> ``{"nonce": b64 (32 bytes), "expires_at": unix time}``;
   a nonce is good for one release, for ``CHALLENGE_TTL`` seconds
   (``trustserve.kms.challenges``, on the KMS).
2. The requester makes an ephemeral X25519 key pair and evidence over
   ``report_data = SHA-512(nonce || public_key || SHA-256(canonical JSON
   {"archives": ..., "key_ids": ...}))`` (exactly 64 bytes out: the TEE
   report-data size), so the evidence also binds what is asked for.
3. ``POST /v1/release`` with ``{"nonce", "public_key", "evidence", "key_ids",
   "archives"}``; ``key_ids``: model key ids, ``"serving"``, ``"broker"``;
   ``archives``: ``{model key id: "sha256:<hex>"}``, the ``model_digest`` of the
   archive the requester holds, one for every model key id asked for. The KMS
   releases a model key only for the archive digest it recorded when the key
   was provisioned.
4. The answer is ``{"key_ids": [...], "sealed": b64, "signature": b64}``.
   ``sealed`` is HPKE-sealed (info ``RELEASE_INFO``, aad = the nonce) to the
   ephemeral key, the plaintext being JSON ``{"keys": {key_id: b64(key bytes)},
   "issued_at": t, "lease_until": t + lease}`` (``t`` the KMS's clock):
   ``"serving"`` is a ``ServingKeySet`` as JSON bytes; ``"broker"`` the 32-byte
   AES key; a model key id its Tink keyset bytes. The lease (``lease_until -
   issued_at`` seconds, at most ``MAX_LEASE``) is how long the requester may use
   released serving keys without renewing them; a serving key's lease also ends
   at its own ``not_after`` (see ``Released.key_lease``). ``signature`` is the KMS
   identity key's Ed25519 signature over exactly::

       ANSWER_DOMAIN || nonce (32 bytes) || requester public key (32 bytes) || sealed

   with ``ANSWER_DOMAIN = b"trustserve-kms-release-answer-v1\\0"``. Anyone can
   HPKE-seal to the requester's public key, so ``sealed`` alone proves nothing:
   the requester opens it only after the signature verifies under the KMS
   identity it trusts, for its own nonce and its own ephemeral key; an answer
   made for another nonce or key (a replay) fails that check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustserve.archive import Manifest
from trustserve.attestation.base import Evidence, EvidenceProvider
from trustserve.crypto import hpke
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, CannotOpenSealed, Forbidden

CHALLENGE_TTL = 60.0
NONCE_SIZE = 32
MAX_KEYS = 64
RELEASE_INFO = b"trustserve-kms-release-v1"
ANSWER_DOMAIN = b"trustserve-kms-release-answer-v1\0"
MODEL_DIGEST_DOMAIN = "trustserve-model-digest-v1"
PROVISION_INFO = b"trustserve-kms-provision-v1"  # model owners' data keys (management API)
DEFAULT_LEASE = 3600.0  # seconds a released set may be used without renewal
MAX_LEASE = 30 * 86400.0
SERVING = "serving"
BROKER = "broker"
_DIGEST_PREFIX = "sha256:"


def model_digest(manifest: Manifest) -> str:
    """``"sha256:<hex>"`` of the canonical JSON ``{"domain", "manifest", "name", "version"}``.

    The manifest is the archive's public, final metadata (the encrypted
    payload's AEAD binds it); the KMS records this digest with the model key
    and releases that key only to a requester that holds an archive with it.
    """
    body = {
        "domain": MODEL_DIGEST_DOMAIN,
        "manifest": manifest.to_json(),
        "name": manifest.name,
        "version": manifest.version,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return _DIGEST_PREFIX + hashlib.sha256(canonical).hexdigest()


def _check_digest(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith(_DIGEST_PREFIX)
        or len(value) != len(_DIGEST_PREFIX) + 64
        or any(c not in "0123456789abcdef" for c in value[len(_DIGEST_PREFIX) :])
    ):
        raise BadRequest('archive digests must be "sha256:" and 64 lowercase hex digits')
    return value


def release_report_data(
    nonce: bytes,
    public_key: bytes,
    key_ids: tuple[str, ...] = (),
    archives: Mapping[str, str] | None = None,
) -> bytes:
    """The 64 bytes the requester's evidence must carry (see step 2 above)."""
    asked = json.dumps(
        {"archives": dict(archives or {}), "key_ids": list(key_ids)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return hashlib.sha512(nonce + public_key + hashlib.sha256(asked).digest()).digest()


@dataclass(frozen=True)
class ReleaseRequest:
    nonce: bytes
    public_key: bytes
    evidence: Evidence
    key_ids: tuple[str, ...]
    archives: dict[str, str] = field(default_factory=dict)

    @property
    def report_data(self) -> bytes:
        return release_report_data(self.nonce, self.public_key, self.key_ids, self.archives)

    def to_json(self) -> dict[str, Any]:
        return {
            "nonce": b64(self.nonce),
            "public_key": b64(self.public_key),
            "evidence": self.evidence.to_json(),
            "key_ids": list(self.key_ids),
            "archives": dict(self.archives),
        }

    @classmethod
    def from_json(cls, raw: Any) -> ReleaseRequest:
        if not isinstance(raw, dict):
            raise BadRequest("release request must be a JSON object")
        nonce = unb64(raw.get("nonce"), "nonce")
        public_key = hpke.check_public_key(unb64(raw.get("public_key"), "public_key"))
        key_ids = raw.get("key_ids")
        if (
            not isinstance(key_ids, list)
            or not key_ids
            or len(key_ids) > MAX_KEYS
            or not all(isinstance(k, str) and 0 < len(k) <= 200 for k in key_ids)
        ):
            raise BadRequest(f"key_ids must be a list of 1 to {MAX_KEYS} key id strings")
        archives = raw.get("archives", {})
        if not isinstance(archives, dict) or not set(archives) <= set(key_ids):
            raise BadRequest("archives must map asked-for model key ids to archive digests")
        checked = {str(k): _check_digest(v) for k, v in archives.items()}
        evidence = Evidence.from_json(raw.get("evidence"))
        return cls(nonce, public_key, evidence, tuple(key_ids), checked)


def make_request(
    nonce: bytes,
    provider: EvidenceProvider,
    key_ids: list[str],
    archives: Mapping[str, str] | None = None,
) -> tuple[bytes, ReleaseRequest]:
    """The requester's side of step 2-3: an ephemeral private key and the request to send."""
    private, public = hpke.generate_keypair()
    wanted = dict(archives or {})
    evidence = provider.make(release_report_data(nonce, public, tuple(key_ids), wanted))
    return private, ReleaseRequest(nonce, public, evidence, tuple(key_ids), wanted)


def signed_bytes(nonce: bytes, public_key: bytes, sealed: bytes) -> bytes:
    return ANSWER_DOMAIN + nonce + public_key + sealed


class Released(dict[str, bytes]):
    """Released keys by key id, with the lease the KMS stated for them (its clock)."""

    def __init__(self, keys: Mapping[str, bytes], issued_at: float, lease_until: float) -> None:
        super().__init__(keys)
        self.issued_at = issued_at
        self.lease_until = lease_until

    @property
    def lease(self) -> float:
        """Seconds the released set may be used from the moment it was asked for."""
        return self.lease_until - self.issued_at

    def key_lease(self, not_after: float) -> float:
        """Seconds a key that ends at ``not_after`` (KMS time) may be used: the lease or
        less, never past the key's end. Both ends are the KMS's, so the host's wall clock
        plays no part in the difference."""
        return max(0.0, min(self.lease_until, not_after) - self.issued_at)


def open_keys(
    private_key: bytes, nonce: bytes, response: Any, identity_public_key: bytes
) -> Released:
    """The released keys and their lease from a release answer signed by
    ``identity_public_key``.

    Forbidden if the signature is missing or not the trusted KMS's over this
    nonce and this ephemeral key, or if the answer cannot be opened or states
    no usable lease (none, negative or longer than ``MAX_LEASE``).
    """
    public_key = hpke.public_key_of(private_key)
    try:
        sealed = unb64(response["sealed"], "sealed")
        signature = unb64(response["signature"], "signature")
        verifier = Ed25519PublicKey.from_public_bytes(identity_public_key)
        verifier.verify(signature, signed_bytes(nonce, public_key, sealed))
    except InvalidSignature:
        raise Forbidden(
            "key release answer is not signed by the trusted KMS identity "
            "for this request (forged, replayed or for another nonce): refused"
        ) from None
    except (BadRequest, KeyError, TypeError, ValueError):
        raise Forbidden("key release answer is malformed or unsigned: refused") from None
    try:
        plaintext = hpke.open(private_key, sealed, aad=nonce, info=RELEASE_INFO)
        raw = json.loads(plaintext)
        keys = {str(k): base64.b64decode(v, validate=True) for k, v in raw["keys"].items()}
        issued_at, lease_until = float(raw["issued_at"]), float(raw["lease_until"])
    except (CannotOpenSealed, KeyError, TypeError, ValueError, AttributeError):
        raise Forbidden("key release answer cannot be opened") from None
    if not (math.isfinite(issued_at) and 0 <= lease_until - issued_at <= MAX_LEASE):
        raise Forbidden("key release answer states no usable lease: refused")
    return Released(keys, issued_at, lease_until)
