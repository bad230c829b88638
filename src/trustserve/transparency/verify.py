"""What a client checks of the KMS's transparency log before it seals anything.

Given the KMS identity key (the bundle's evidence already bound it), the bundle's
``transparency`` field ``{"checkpoint": signed note, "entries": [{index, entry, proof}]}``, the
client's witness policy and its checkpoint store, each rule refuses by name
(``AttestationRefused``):

* ``transparency.checkpoint``: the field or the checkpoint is missing or malformed, is of
  another log than this identity's, or has no valid signature by the identity key;
* ``transparency.cosignatures``: fewer than the quorum of the client's witnesses cosigned it;
* ``transparency.rollback``: it is smaller than the largest checkpoint stored for this log;
* ``transparency.consistency``: the proof (fetched through ``consistency``) from the stored
  checkpoint to this one fails, or cannot be had: the log forked, or was rewritten;
* ``transparency.inclusion``: an entry's inclusion proof fails, or the bundle's release
  policy, a serving key or a model is not the one logged (the latest such entry given).

Only when every rule passed is the checkpoint stored (and only if it is larger): a refused
view never becomes what the next one is compared with.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trustserve.crypto import merkle
from trustserve.errors import AttestationRefused, TransparencyRefused
from trustserve.transparency import note
from trustserve.transparency.entries import encode, policy_digest
from trustserve.transparency.log import log_verifier
from trustserve.transparency.note import Checkpoint, Note
from trustserve.transparency.store import CheckpointStore
from trustserve.transparency.witness_policy import WitnessPolicy

MAX_ENTRIES = 4096
ConsistencyProof = Callable[[int, int], Sequence[bytes]]


@dataclass(frozen=True)
class Relied:
    """What the client relies on from the bundle: each must be a logged entry."""

    release_policy: dict[str, Any]
    serving_keys: Sequence[dict[str, Any]] = ()
    models: Sequence[dict[str, Any]] = field(default_factory=tuple)


def _refuse(rule: str, detail: str) -> AttestationRefused:
    return AttestationRefused(f"transparency.{rule}", detail)


def verify_transparency(
    identity_public_key: bytes,
    given: Any,
    policy: WitnessPolicy,
    store: CheckpointStore,
    consistency: ConsistencyProof,
    relied: Relied,
) -> Checkpoint:
    """The bundle's checkpoint, once every rule above passed (and stored if larger)."""
    signed, checkpoint, text = _checkpoint(identity_public_key, given)
    _cosignatures(signed, policy)
    stored = store.latest(checkpoint.origin)
    if stored is not None:
        _extends(stored, checkpoint, consistency)
    logged = _included(given, checkpoint)
    _relied_on(logged, relied)
    store.save(text)
    return checkpoint


def _checkpoint(identity: bytes, given: Any) -> tuple[Note, Checkpoint, str]:
    if not isinstance(given, dict) or not isinstance(given.get("checkpoint"), str):
        raise _refuse(
            "checkpoint", "the bundle carries no transparency checkpoint (a KMS without a log?)"
        )
    text: str = given["checkpoint"]
    verifier = log_verifier(identity)
    try:
        signed = note.parse(text)
        checkpoint = Checkpoint.from_text(signed.text)
    except TransparencyRefused as exc:
        raise _refuse("checkpoint", f"malformed checkpoint: {exc}") from None
    if checkpoint.origin != verifier.name:
        raise _refuse(
            "checkpoint",
            f"the checkpoint is of log {checkpoint.origin[:80]!r}, not this KMS's {verifier.name}",
        )
    try:
        ok = note.verified_by(signed, [verifier])
    except TransparencyRefused as exc:
        raise _refuse("checkpoint", str(exc)) from None
    if not ok:
        raise _refuse("checkpoint", "the checkpoint is not signed by the KMS identity key")
    return signed, checkpoint, text


def _cosignatures(signed: Note, policy: WitnessPolicy) -> None:
    good, bad = policy.cosigners(signed)
    if len(good) < policy.quorum:
        also = f"; a bad cosignature by {', '.join(bad)}" if bad else ""
        raise _refuse(
            "cosignatures",
            f"{len(good)} of the client's witnesses cosigned the checkpoint "
            f"({', '.join(good) or 'none'}), {policy.quorum} are required{also}: a view "
            "the witnesses did not see (a split view?)",
        )


def _extends(stored: Checkpoint, new: Checkpoint, consistency: ConsistencyProof) -> None:
    if new.size < stored.size:
        raise _refuse(
            "rollback",
            f"the log's checkpoint has size {new.size}; this client already verified size "
            f"{stored.size} of it (the KMS state was rolled back?)",
        )
    if new.size == stored.size:
        if new.root != stored.root:
            raise _refuse(
                "consistency",
                f"two different roots for size {new.size}: the log forked",
            )
        return
    if stored.size == 0:
        return
    try:
        proof = list(consistency(stored.size, new.size))
    except Exception as exc:  # any failure to get a proof fails closed
        raise _refuse(
            "consistency",
            f"no consistency proof from size {stored.size} to {new.size} could be had: {exc}",
        ) from None
    try:
        merkle.verify_consistency(stored.size, new.size, stored.root, new.root, proof)
    except TransparencyRefused as exc:
        raise _refuse(
            "consistency", f"from the stored size {stored.size} to {new.size}: {exc}"
        ) from None


def _included(given: dict[str, Any], checkpoint: Checkpoint) -> list[tuple[int, dict[str, Any]]]:
    """The entries of the field, each proven to be in the checkpoint's tree."""
    raw = given.get("entries")
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise _refuse("inclusion", f"the entries must be a list of at most {MAX_ENTRIES}")
    logged = []
    for item in raw:
        index, entry, proof = _entry(item)
        try:
            leaf = merkle.leaf_hash(encode(entry))
            merkle.verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root)
        except TransparencyRefused as exc:
            raise _refuse("inclusion", f"entry {index}: {exc}") from None
        logged.append((index, entry))
    return logged


def _entry(item: Any) -> tuple[int, dict[str, Any], list[bytes]]:
    if not isinstance(item, dict):
        raise _refuse("inclusion", "an entry is not {index, entry, proof}")
    index, entry, proof = item.get("index"), item.get("entry"), item.get("proof")
    if not isinstance(index, int) or isinstance(index, bool) or not isinstance(entry, dict):
        raise _refuse("inclusion", "an entry has no integer index or no entry object")
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        raise _refuse("inclusion", f"entry {index}: the proof is not a list of base64 hashes")
    try:
        steps = [base64.b64decode(p, validate=True) for p in proof]
    except binascii.Error:
        raise _refuse("inclusion", f"entry {index}: a proof step is not base64") from None
    return index, entry, steps


def _latest(logged: list[tuple[int, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [e for _, e in sorted(logged, key=lambda p: -p[0]) if e.get("kind") == kind]


def _relied_on(logged: list[tuple[int, dict[str, Any]]], relied: Relied) -> None:
    policies = _latest(logged, "release-policy")
    digest = policy_digest(relied.release_policy)
    if not policies:
        raise _refuse("inclusion", "the bundle proves no release-policy entry of the log")
    latest = policies[0]
    if latest.get("sha256") != digest or latest.get("policy") != relied.release_policy:
        raise _refuse(
            "inclusion",
            f"the bundle's release policy (sha256 {digest[:16]}...) is not the latest logged "
            f"one ({str(latest.get('sha256'))[:16]}...): a policy shown to this client only?",
        )
    keys = {(e.get("key_id"), e.get("public_key")) for e in _latest(logged, "serving-key")}
    for key in relied.serving_keys:
        if (key.get("key_id"), key.get("public_key")) not in keys:
            raise _refuse(
                "inclusion", f"serving key {str(key.get('key_id'))[:40]} is not in the log"
            )
    models = {  # oldest first, so the latest entry of each model version wins
        (e.get("name"), e.get("version")): e.get("digest")
        for e in reversed(_latest(logged, "model-key"))
    }
    for model in relied.models:
        wanted = (model.get("name"), model.get("version"))
        if wanted not in models or models[wanted] != model.get("digest"):
            raise _refuse(
                "inclusion",
                f"model {wanted[0]!s:.40} version {wanted[1]!s:.20} with digest "
                f"{model.get('digest')} is not in the log",
            )


def proof_needed(given: Any, store: CheckpointStore) -> tuple[int, int] | None:
    """The (old, new) sizes whose consistency proof ``verify_transparency`` will ask for, for
    a caller that must fetch it first (an async client); None if it will ask for none. Read
    from the unverified field: ``verify_transparency`` then checks everything."""
    try:
        checkpoint = Checkpoint.from_text(note.parse(given["checkpoint"]).text)
        stored = store.latest(checkpoint.origin)
    except (TypeError, KeyError, TransparencyRefused):
        return None
    if stored is None or not 0 < stored.size < checkpoint.size:
        return None
    return stored.size, checkpoint.size
