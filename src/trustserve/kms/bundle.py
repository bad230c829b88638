"""The KMS's half of the attestation bundle: the model list and the bundle itself.

The format, and how a client verifies it, is ``trustserve.keyrelease.bundle``.
"""

from __future__ import annotations

from typing import Any

from trustserve.attestation import Evidence
from trustserve.crypto import merkle
from trustserve.encoding import b64
from trustserve.keyrelease.bundle import FORMAT, encode_nonce
from trustserve.transparency import log as tlog
from trustserve.transparency.log import LogView
from trustserve.transparency.note import Signer


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
    transparency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    bundle = {
        "version": FORMAT,
        "identity_public_key": b64(identity_public_key),
        "evidence": evidence.to_json(),
        "serving_keys": signed_serving_keys,
        "release_policy": release_policy,
        "models": models or [],
        "nonce": None if nonce is None else encode_nonce(nonce),
    }
    if transparency is not None:
        bundle["transparency"] = transparency
    return bundle


def transparency_field(
    view: LogView, signer: Signer, policy_sha256: str, serving_key_ids: list[str]
) -> dict[str, Any]:
    """The bundle's ``transparency``: the checkpoint with its cosignatures, and inclusion
    proofs (against it) of the entries a client relies on: the release policy in force,
    each serving key of the bundle and the newest entry of every model key."""
    state = {"log": {"entries": view.entries}}
    wanted: list[int] = []
    found = tlog.latest(state, "release-policy", sha256=policy_sha256)
    if found is not None:
        wanted.append(found[0])
    for key_id in serving_key_ids:
        found = tlog.latest(state, "serving-key", key_id=key_id)
        if found is not None:
            wanted.append(found[0])
    newest: dict[str, int] = {}
    for i, e in enumerate(view.entries):
        if e.get("kind") == "model-key":
            newest[str(e.get("key_id"))] = i
    wanted.extend(newest.values())
    leaves = view.leaves()
    rows = [
        {
            "index": i,
            "entry": view.entries[i],
            "proof": tlog.b64_proof(merkle.inclusion_proof(leaves, i)),
        }
        for i in sorted(set(wanted))
    ]
    return {"checkpoint": view.signed_with_cosignatures(signer), "entries": rows}
