"""The entries of the KMS transparency log (the leaves) and their one encoding.

An entry is a JSON object with ``kind`` and ``time`` (unix seconds) and the fields of its
kind (docs/transparency.md); its leaf bytes are its canonical JSON (``encode``), hashed as an
RFC 9162 leaf by ``trustserve.crypto.merkle``. Entries carry public facts only: never a key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

KINDS = (
    "release-policy",
    "kms-trust-policy",
    "serving-key",
    "model-key",
    "replica-joined",
    "recovery",
    "release-declared",
    "audit-head",
)


def encode(entry: dict[str, Any]) -> bytes:
    """The leaf bytes of ``entry``: sorted keys, no spaces, ASCII only."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def policy_digest(policy: dict[str, Any]) -> str:
    """Hex SHA-256 of a policy's canonical JSON (the bytes the bundle's policy digest uses)."""
    canonical = json.dumps(policy, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def _entry(kind: str, now: float, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "time": int(now), **fields}


def release_policy(policy: dict[str, Any], now: float) -> dict[str, Any]:
    return _entry("release-policy", now, sha256=policy_digest(policy), policy=policy)


def kms_trust_policy(policy: dict[str, Any], now: float) -> dict[str, Any]:
    return _entry("kms-trust-policy", now, sha256=policy_digest(policy), policy=policy)


def serving_key(
    key_id: str, public_key: str, not_after: float, rotation: int, now: float
) -> dict[str, Any]:
    """``public_key`` is base64, as in the state and the bundle."""
    return _entry(
        "serving-key",
        now,
        key_id=key_id,
        public_key=public_key,
        not_after=int(not_after),
        rotation=rotation,
    )


def model_key(
    name: str, version: str, digest: str | None, key_id: str, now: float
) -> dict[str, Any]:
    return _entry("model-key", now, name=name, version=version, digest=digest, key_id=key_id)


def replica_joined(
    evidence_kind: str, measurement: str | None, peer: str, now: float
) -> dict[str, Any]:
    return _entry(
        "replica-joined", now, evidence_kind=evidence_kind, measurement=measurement, peer=peer
    )


def recovery(threshold: int, shares_used: int, now: float) -> dict[str, Any]:
    return _entry("recovery", now, threshold=threshold, shares_used=shares_used)


def release_declared(
    now: float,
    digest: str | None = None,
    measurement: dict[str, Any] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """A release the operator declares: an image ``digest`` (``sha256:<hex>``) and/or a
    ``measurement`` set as a release policy lists it (``{tee, ...}``), with a ``note``."""
    named = (("digest", digest), ("measurement", measurement), ("note", note))
    fields = {k: v for k, v in named if v is not None}
    if digest is None and measurement is None:
        raise ValueError("a declared release names a digest or a measurement")
    return _entry("release-declared", now, **fields)


def audit_head(seq: int, head_hash: str, now: float) -> dict[str, Any]:
    return _entry("audit-head", now, seq=seq, hash=head_hash)
