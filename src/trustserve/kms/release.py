"""Key release protocol pieces: challenges, the request, and how keys travel back.

1. ``POST /v1/challenge`` -> ``{"nonce": b64 (32 random bytes), "expires_at": unix time}``;
   a nonce is good once, for ``CHALLENGE_TTL`` seconds.
2. The requester makes an ephemeral X25519 key pair and evidence over
   ``report_data = SHA-512(nonce || public_key)`` (32 + 32 bytes in, exactly
   64 bytes out: the TEE report-data size).
3. ``POST /v1/release`` with ``{"nonce", "public_key", "evidence", "key_ids"}``
   (``key_ids``: model key ids, ``"serving"``, ``"broker"``).
4. The answer is ``{"key_ids": [...], "sealed": b64}``: HPKE-sealed (info
   ``RELEASE_INFO``, aad = the nonce) to the ephemeral key, the plaintext being
   JSON ``{key_id: b64(key bytes)}``. ``"serving"`` is a ``ServingKeySet`` as
   JSON bytes; ``"broker"`` is the 32-byte AES key; a model key id gives its
   Tink keyset bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from typing import Any

from trustserve.attestation.base import Evidence, EvidenceProvider
from trustserve.crypto import hpke
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, CannotOpenSealed, Forbidden, TooManyRequests

CHALLENGE_TTL = 60.0
NONCE_SIZE = 32
MAX_KEYS = 64
PER_CLIENT = 64  # outstanding challenges per client address
RELEASE_INFO = b"trustserve-kms-release-v1"
PROVISION_INFO = b"trustserve-kms-provision-v1"  # model owners' data keys (management API)
SERVING = "serving"
BROKER = "broker"


def release_report_data(nonce: bytes, public_key: bytes) -> bytes:
    """The 64 bytes the requester's evidence must carry: SHA-512(nonce || public key)."""
    return hashlib.sha512(nonce + public_key).digest()


class Challenges:
    """Single-use nonces with a time to live, kept in this process's memory.

    At most ``per_client`` outstanding (issued, unused, unexpired) nonces per
    client address and ``limit`` in all; past either bound ``issue`` refuses
    with 429 rather than evicting, so no flood can push out a nonce a
    legitimate requester is about to use.
    """

    def __init__(
        self, ttl: float = CHALLENGE_TTL, limit: int = 100_000, per_client: int = PER_CLIENT
    ) -> None:
        self.ttl = ttl
        self._limit = limit
        self._per_client = per_client
        self._open: dict[bytes, tuple[float, str]] = {}
        self._by_client: dict[str, int] = {}
        self._lock = threading.Lock()

    def issue(self, now: float, client: str = "") -> tuple[bytes, float]:
        nonce = os.urandom(NONCE_SIZE)
        with self._lock:
            self._prune(now)
            wait = max(1, math.ceil(self.ttl))
            if self._by_client.get(client, 0) >= self._per_client:
                raise TooManyRequests(
                    f"{self._per_client} challenges are already open for this address: "
                    "use or let them expire first",
                    retry_after=wait,
                )
            if len(self._open) >= self._limit:
                raise TooManyRequests("too many challenges are open: retry later", wait)
            self._open[nonce] = (now + self.ttl, client)
            self._by_client[client] = self._by_client.get(client, 0) + 1
        return nonce, now + self.ttl

    def consume(self, nonce: bytes, now: float) -> str | None:
        """None if ``nonce`` was issued, unused and fresh (it is used up now); else why not."""
        with self._lock:
            entry = self._open.pop(nonce, None)
            if entry is not None:
                self._release(entry[1])
        if entry is None:
            return "unknown or already used"
        if now > entry[0]:
            return "expired"
        return None

    def _release(self, client: str) -> None:
        left = self._by_client[client] - 1
        if left:
            self._by_client[client] = left
        else:
            del self._by_client[client]

    def _prune(self, now: float) -> None:
        # issued in order with one ttl: the oldest come first, stop at the first still open
        while self._open:
            nonce, (expires, client) = next(iter(self._open.items()))
            if expires >= now:
                return
            del self._open[nonce]
            self._release(client)


@dataclass(frozen=True)
class ReleaseRequest:
    nonce: bytes
    public_key: bytes
    evidence: Evidence
    key_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "nonce": b64(self.nonce),
            "public_key": b64(self.public_key),
            "evidence": self.evidence.to_json(),
            "key_ids": list(self.key_ids),
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
        return cls(nonce, public_key, Evidence.from_json(raw.get("evidence")), tuple(key_ids))


def make_request(
    nonce: bytes, provider: EvidenceProvider, key_ids: list[str]
) -> tuple[bytes, ReleaseRequest]:
    """The requester's side of step 2-3: an ephemeral private key and the request to send."""
    private, public = hpke.generate_keypair()
    evidence = provider.make(release_report_data(nonce, public))
    return private, ReleaseRequest(nonce, public, evidence, tuple(key_ids))


def seal_keys(public_key: bytes, nonce: bytes, keys: dict[str, bytes]) -> dict[str, Any]:
    plaintext = json.dumps({k: b64(v) for k, v in keys.items()}).encode()
    sealed = hpke.seal(public_key, plaintext, aad=nonce, info=RELEASE_INFO)
    return {"key_ids": list(keys), "sealed": b64(sealed)}


def open_keys(private_key: bytes, nonce: bytes, response: Any) -> dict[str, bytes]:
    """The released keys from a release response; Forbidden if it cannot be opened."""
    try:
        sealed = unb64(response["sealed"], "sealed")
        plaintext = hpke.open(private_key, sealed, aad=nonce, info=RELEASE_INFO)
        raw = json.loads(plaintext)
        return {str(k): base64.b64decode(v, validate=True) for k, v in raw.items()}
    except (CannotOpenSealed, BadRequest, KeyError, TypeError, ValueError, AttributeError):
        raise Forbidden("key release answer cannot be opened") from None
