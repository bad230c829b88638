"""The KMS's half of the attestation bundle: the model list and the bundle itself.

The format, and how a client verifies it, is ``trustserve.keyrelease.bundle``.
"""

from __future__ import annotations

from typing import Any

from trustserve.attestation import Evidence
from trustserve.encoding import b64
from trustserve.keyrelease.bundle import FORMAT, encode_nonce


def model_list(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The public model list of a bundle, from the KMS's model-key records."""
    models = [
        {
            "name": str(r["model"]),
            "version": str(r["version"]),
            "digest": r.get("digest") if isinstance(r.get("digest"), str) else None,
        }
        for r in records.values()
    ]
    return sorted(models, key=lambda m: (m["name"], m["version"]))


def make_bundle(
    identity_public_key: bytes,
    evidence: Evidence,
    signed_serving_keys: dict[str, str],
    release_policy: dict[str, Any],
    models: list[dict[str, Any]] | None = None,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    return {
        "version": FORMAT,
        "identity_public_key": b64(identity_public_key),
        "evidence": evidence.to_json(),
        "serving_keys": signed_serving_keys,
        "release_policy": release_policy,
        "models": models or [],
        "nonce": None if nonce is None else encode_nonce(nonce),
    }
