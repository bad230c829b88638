"""Release challenges (server side): nonces that cost the KMS nothing to hand out.

A nonce is 32 bytes: its expiry (unix milliseconds, 8 bytes big-endian), 8
random bytes, and the first 16 bytes of HMAC-SHA256 over the first 16 under a
key made at random when this KMS process starts. Issuing one stores nothing,
so no flood of ``/v1/challenge`` calls, from one address or many, can take
capacity a worker needs. A nonce is good until its expiry and for one release
whose evidence passed: only such spent nonces are remembered (until they
expire, at most ``limit`` at once), so only attested requesters take any of
that memory. A refused release does not use its nonce up. Like the open-nonce
table before it, the key lives in this process's memory: a nonce is good at
the KMS process that issued it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

from trustserve.keyrelease.protocol import CHALLENGE_TTL, NONCE_SIZE

_DOMAIN = b"trustserve-kms-challenge-v1\0"
_HEAD = 16  # expiry and random part
UNKNOWN = "unknown or already used"


class Challenges:
    def __init__(self, ttl: float = CHALLENGE_TTL, limit: int = 100_000) -> None:
        self.ttl = ttl
        self._limit = limit
        self._key = os.urandom(32)
        self._spent: dict[bytes, float] = {}  # in expiry order: one ttl for all
        self._lock = threading.Lock()

    def issue(self, now: float) -> tuple[bytes, float]:
        expires_ms = int((now + self.ttl) * 1000)
        head = expires_ms.to_bytes(8, "big") + os.urandom(_HEAD - 8)
        return head + self._mac(head), expires_ms / 1000

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + head, hashlib.sha256).digest()[: NONCE_SIZE - _HEAD]

    def _expiry(self, nonce: bytes) -> float | None:
        if len(nonce) != NONCE_SIZE:
            return None
        head, tag = nonce[:_HEAD], nonce[_HEAD:]
        if not hmac.compare_digest(tag, self._mac(head)):
            return None
        return int.from_bytes(head[:8], "big") / 1000

    def check(self, nonce: bytes, now: float) -> str | None:
        """None if ``nonce`` was issued here, is fresh and unspent; else why not."""
        expires = self._expiry(nonce)
        if expires is None:
            return UNKNOWN
        if now > expires:
            return "expired"
        with self._lock:
            return UNKNOWN if nonce in self._spent else None

    def spend(self, nonce: bytes, now: float) -> str | None:
        """Use ``nonce`` up (after its release's evidence passed); None, or why not."""
        why = self.check(nonce, now)
        if why is not None:
            return why
        with self._lock:
            while self._spent and next(iter(self._spent.values())) < now:
                del self._spent[next(iter(self._spent))]
            if nonce in self._spent:
                return UNKNOWN
            if len(self._spent) >= self._limit:
                return "too many releases at once: retry"
            self._spent[nonce] = self._expiry(nonce) or now
        return None
