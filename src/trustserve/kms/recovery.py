"""Owner recovery: the root key rebuilt from k of n owner shares, at an attested KMS only.

The recovery file (JSON; ciphertext only, fine on an untrusted disk, every owner
keeps a copy)::

    {"format": 1, "kind": "trustserve-kms-recovery",
     "identity_public_key": b64, "check": b64, "identifier": int, "threshold": k,
     "shares": [{"index": i, "owner_public_key": b64, "sealed": b64}]}

``check`` is the root key's check value and ``identifier`` the SLIP-39 split's
(``trustserve.crypto.shares``); ``sealed`` is share ``i`` HPKE-sealed to its owner.

Recovery, when every KMS and its disk are gone but the encrypted ``state.json``:

1. A fresh KMS (``trustserve kms recover``) makes a recovery key pair in memory and,
   for each owner's fresh nonce, evidence whose report data is ::

       SHA-512("trustserve-kms-recovery-v1\\0" || identity public key (32 bytes)
               || recovery public key (32 bytes) || nonce (32 bytes))

2. The owner (``trustserve kms recover-share``) verifies that evidence against
   its own KMS trust policy with the verifier every KMS client uses
   (``trustserve.attestation.verify_evidence``) *before* it opens its share; a
   refusal sends nothing. Then it re-seals its share to the attested recovery key.
3. The KMS takes shares until ``threshold`` of them combine to a key matching
   ``check``; it then wraps the key under the new operator secret.

Who is trusted: the owners trust only evidence their own policy accepts; the
recovering KMS trusts nobody who posts a share (a share must be a valid mnemonic
of the expected split, and the combination must match the check value).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustserve import files
from trustserve.attestation import (
    Evidence,
    EvidenceProvider,
    Policy,
    VerifierSources,
    verify_evidence,
)
from trustserve.crypto import hpke, shares
from trustserve.encoding import b64, unb64
from trustserve.errors import AttestationRefused, BadRequest, ConfigError, Conflict, Forbidden
from trustserve.keyrelease.bundle import NONCE_SIZE, encode_nonce
from trustserve.keyrelease.client import KmsClient

KIND = "trustserve-kms-recovery"
FORMAT = 1
_REPORT_DOMAIN = b"trustserve-kms-recovery-v1\0"


def recovery_report_data(identity: bytes, recovery_public_key: bytes, nonce: bytes) -> bytes:
    """What the recovering KMS's evidence binds (every part fixed-length)."""
    return hashlib.sha512(_REPORT_DOMAIN + identity + recovery_public_key + nonce).digest()


@dataclass(frozen=True)
class SealedShare:
    index: int
    owner_public_key: bytes
    sealed: bytes


@dataclass(frozen=True)
class RecoveryFile:
    identity: bytes
    check: bytes
    identifier: int
    threshold: int
    shares: tuple[SealedShare, ...]

    @classmethod
    def make(
        cls, root_key: bytes, identity: bytes, owners: list[bytes], threshold: int
    ) -> RecoveryFile:
        """Split ``root_key`` among ``owners`` (raw X25519 public keys), ``threshold`` needed."""
        if len(set(owners)) != len(owners):
            raise ConfigError("an owner key is named twice: each owner must hold one share")
        for owner in owners:
            try:
                hpke.check_public_key(owner)
            except BadRequest as exc:
                raise ConfigError(f"owner key: {exc}") from None
        check = shares.check_value(root_key)
        mnemonics = shares.split(root_key, threshold, len(owners))
        sealed = []
        for owner, mnemonic in zip(owners, mnemonics, strict=True):
            info = shares.describe(mnemonic)
            blob = shares.seal_to_owner(owner, mnemonic, identity, check)
            sealed.append(SealedShare(info.index, owner, blob))
        identifier = shares.describe(mnemonics[0]).identifier
        return cls(identity, check, identifier, threshold, tuple(sealed))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": KIND,
            "identity_public_key": b64(self.identity),
            "check": b64(self.check),
            "identifier": self.identifier,
            "threshold": self.threshold,
            "shares": [
                {
                    "index": s.index,
                    "owner_public_key": b64(s.owner_public_key),
                    "sealed": b64(s.sealed),
                }
                for s in self.shares
            ],
        }

    def write(self, path: Path) -> None:
        files.write_atomic(path, json.dumps(self.to_json(), indent=1).encode())

    @classmethod
    def load(cls, path: Path) -> RecoveryFile:
        try:
            raw = json.loads(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read recovery file {path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"recovery file {path} is not JSON") from None
        try:
            return cls.from_json(raw)
        except (BadRequest, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"recovery file {path} is damaged: {exc}") from None

    @classmethod
    def from_json(cls, raw: Any) -> RecoveryFile:
        if not isinstance(raw, dict) or raw.get("kind") != KIND or raw.get("format") != FORMAT:
            raise BadRequest(f"not a {KIND} file of format {FORMAT}")
        threshold, identifier = raw["threshold"], raw["identifier"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (threshold, identifier)):
            raise BadRequest("threshold and identifier must be integers")
        entries = tuple(
            SealedShare(
                int(s["index"]),
                unb64(s["owner_public_key"], "owner_public_key"),
                unb64(s["sealed"], "sealed"),
            )
            for s in raw["shares"]
        )
        identity = unb64(raw["identity_public_key"], "identity_public_key")
        return cls(identity, unb64(raw["check"], "check"), identifier, threshold, entries)

    def share_of(self, owner_public_key: bytes) -> SealedShare:
        for entry in self.shares:
            if entry.owner_public_key == owner_public_key:
                return entry
        raise ConfigError("this owner key holds no share in the recovery file")


class RecoverySession:
    """The recovering KMS's side: evidence for owners, and the shares they send.

    ``on_recovered`` receives the rebuilt root key (verified against the check value)
    once, from the thread that received the last share needed; if it raises, the
    shares are kept and the session is not recovered.
    """

    def __init__(
        self,
        recovery: RecoveryFile,
        provider: EvidenceProvider,
        on_recovered: Callable[[bytes], None],
    ) -> None:
        self.recovery = recovery
        self.provider = provider
        self._on_recovered = on_recovered
        self._private, self.public_key = hpke.generate_keypair()
        self._mnemonics: dict[int, str] = {}
        self._recovered = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RecoverySession(received={len(self._mnemonics)})"

    def evidence(self, nonce: bytes) -> dict[str, Any]:
        data = recovery_report_data(self.recovery.identity, self.public_key, nonce)
        return {
            "identity_public_key": b64(self.recovery.identity),
            "recovery_public_key": b64(self.public_key),
            "nonce": b64(nonce),
            "evidence": self.provider.make(data).to_json(),
            **self.status(),
        }

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self._status_locked()

    def accept(self, sealed: bytes) -> dict[str, Any]:
        """Take one owner's share (sealed to this session's key). 400 for a share that does
        not open, is not a share of this split, or does not rebuild the key; 409 for one
        received before or after recovery."""
        mnemonic = shares.open_at_kms(self._private, sealed, self.recovery.identity)
        info = shares.describe(mnemonic)
        if info.identifier != self.recovery.identifier:
            raise BadRequest("the share belongs to another split than this recovery file's")
        with self._lock:
            if self._recovered:
                raise Conflict("the root key is recovered already; no more shares are needed")
            if info.index in self._mnemonics:
                raise Conflict(f"share {info.index} was received already (each share counts once)")
            self._mnemonics[info.index] = mnemonic
            if len(self._mnemonics) < self.recovery.threshold:
                return self._status_locked()
            try:
                root_key = shares.combine(list(self._mnemonics.values()), self.recovery.check)
            except BadRequest:
                del self._mnemonics[info.index]
                raise
            self._on_recovered(root_key)  # under the lock: once, and only then "recovered"
            self._recovered = True
            self._mnemonics.clear()
            return self._status_locked()

    def _status_locked(self) -> dict[str, Any]:
        received = len(self._mnemonics)
        return {
            "threshold": self.recovery.threshold,
            "received": received,
            "needed": 0 if self._recovered else self.recovery.threshold - received,
            "recovered": self._recovered,
        }


def send_share(
    client: KmsClient,
    owner_private_key: bytes,
    recovery: RecoveryFile,
    policy: Policy,
    sources: VerifierSources | None = None,
) -> dict[str, Any]:
    """The owner's side: verify the recovering KMS's evidence, then (only then) open this
    owner's share and send it re-sealed to the attested recovery key. Forbidden, with
    nothing sent, when the evidence does not satisfy ``policy``."""
    entry = recovery.share_of(hpke.public_key_of(owner_private_key))
    nonce = os.urandom(NONCE_SIZE)
    answer = client.recovery_evidence(encode_nonce(nonce))
    try:
        if unb64(answer.get("identity_public_key"), "identity_public_key") != recovery.identity:
            raise AttestationRefused(
                "identity", "the KMS recovers another identity than the recovery file's"
            )
        recovery_key = hpke.check_public_key(
            unb64(answer.get("recovery_public_key"), "recovery_public_key")
        )
        expected = recovery_report_data(recovery.identity, recovery_key, nonce)
        evidence = Evidence.from_json(answer.get("evidence"))
        verify_evidence(evidence, expected, policy, time.time(), sources or VerifierSources())
    except (AttestationRefused, BadRequest) as exc:
        raise Forbidden(f"share not sent: the recovering KMS is not attested: {exc}") from None
    mnemonic = shares.open_as_owner(
        owner_private_key, entry.sealed, recovery.identity, recovery.check, entry.index
    )
    return client.send_recovery_share(shares.seal_to_kms(recovery_key, mnemonic, recovery.identity))
