"""The attestation bundle: what a client checks before it seals anything to the serving key.

``{"version": 2, "identity_public_key": b64 (Ed25519, raw), "evidence": {...},
"serving_keys": {"payload", "signature"}, "release_policy": {...},
"models": [{"name", "version", "digest"}], "nonce": b64url | null,
"transparency": {"checkpoint", "entries"} (optional)}``

* ``evidence`` is the KMS's own evidence; its 64-byte report data is ::

    SHA-512("trustserve-kms-bundle-v2\\0" || identity public key (32 bytes)
            || SHA-256(canonical JSON of release_policy)
            || SHA-256(serving_keys payload, the exact signed bytes)
            || SHA-256(canonical JSON of models)
            || nonce (32 bytes, or nothing))

  and, for a bundle with ``transparency``, ::

    SHA-512("trustserve-kms-bundle-v2+tlog\\0" || the same four parts
            || SHA-256(the checkpoint's text: origin, size and root lines)
            || nonce (32 bytes, or nothing))

  so one piece of evidence binds the identity key, the policy that decides which
  workers get the serving key, the very key list the client will seal to, the
  models whose keys the KMS holds, and (when the client sent one) the client's
  nonce. Every part but the nonce is fixed-length, so the encoding is unambiguous.
* ``serving_keys`` is the canonical JSON ``{"issued_at", "keys": [{key_id, suite,
  public_key, not_after}]}`` (current first), signed by the identity key.
* ``models`` lists, sorted by name and version, every model version whose data key
  the KMS holds; ``digest`` is the archive digest pinned at provisioning
  (``"sha256:<hex>"``) or null for a key provisioned before digests were pinned.
* ``nonce`` echoes the client's ``?nonce=`` (32 random bytes, base64url): the
  evidence was made for that request, so the frontend cannot replay an old bundle.
  Without a nonce the KMS may serve evidence made up to a minute earlier; a client
  then relies on the signed ``issued_at`` (and refuses lists older than its limit).
* ``nonce_batch`` (optional, added by a frontend): ``{"leaf_index", "tree_size",
  "inclusion_path": [b64url]}``. A frontend coalesces the nonces of concurrent
  clients: it asks the KMS for evidence over the RFC 9162 Merkle root (SHA-256)
  of their nonces (``nonce`` is then that root) and gives each client its
  inclusion proof; the client recomputes the root from its own nonce. The root
  commits to the client's fresh nonce, so the evidence was made after it.
* ``transparency`` (docs/transparency.md): the KMS's log checkpoint as a signed note (its
  identity's signature, then the witnesses' cosignatures) and the entries a client relies
  on, each with its inclusion proof against that checkpoint. The evidence binds the
  checkpoint's text (so its root, hence every proven entry), in its own domain: the field
  cannot be removed or swapped for another checkpoint without the evidence failing.
  Cosignatures are not bound: each authenticates itself, and they accrue after the fact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from trustserve.attestation import Claims, Evidence, Policy, VerifierSources, verify_evidence
from trustserve.crypto import merkle
from trustserve.crypto.keys import verify_serving_keys
from trustserve.encoding import unb64
from trustserve.errors import AttestationRefused, BadRequest, TransparencyRefused
from trustserve.transparency import note

FORMAT = 2
NONCE_SIZE = 32
MAX_BATCH = 4096  # client nonces one frontend binds into one piece of evidence
_DOMAIN = b"trustserve-kms-bundle-v2\0"
_TLOG_DOMAIN = b"trustserve-kms-bundle-v2+tlog\0"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def bundle_report_data(
    identity_public_key: bytes,
    release_policy: dict[str, Any],
    serving_keys_payload: bytes,
    models: list[dict[str, Any]],
    nonce: bytes | None = None,
    checkpoint: str | None = None,
) -> bytes:
    """``checkpoint``: the text of the transparency checkpoint the bundle carries (if any)."""
    parts = [
        _DOMAIN if checkpoint is None else _TLOG_DOMAIN,
        identity_public_key,
        hashlib.sha256(canonical(release_policy)).digest(),
        hashlib.sha256(serving_keys_payload).digest(),
        hashlib.sha256(canonical(models)).digest(),
    ]
    if checkpoint is not None:
        parts.append(hashlib.sha256(checkpoint.encode()).digest())
    parts.append(nonce or b"")
    return hashlib.sha512(b"".join(parts)).digest()


def checkpoint_text(transparency: Any) -> str | None:
    """The checkpoint text a bundle's ``transparency`` field carries (None without one)."""
    if transparency is None:
        return None
    if not isinstance(transparency, dict) or not isinstance(transparency.get("checkpoint"), str):
        raise BadRequest("attestation bundle: transparency.checkpoint must be a signed note")
    try:
        return note.parse(transparency["checkpoint"]).text
    except TransparencyRefused as exc:
        raise BadRequest(f"attestation bundle: transparency.checkpoint: {exc}") from None


def encode_nonce(nonce: bytes) -> str:
    return base64.urlsafe_b64encode(nonce).rstrip(b"=").decode()


def parse_nonce(text: str | None) -> bytes | None:
    """A client's ``?nonce=`` (32 bytes, base64url with or without padding); BadRequest if not."""
    if text is None:
        return None
    if len(text) > 64:
        raise BadRequest(f"nonce must be {NONCE_SIZE} bytes, base64url: too long")
    try:
        nonce = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest("nonce is not valid base64url") from None
    if len(nonce) != NONCE_SIZE:
        raise BadRequest(f"nonce must be {NONCE_SIZE} bytes, base64url; got {len(nonce)}")
    return nonce


@dataclass(frozen=True)
class VerifiedBundle:
    """What a bundle says, once its evidence passed the client's KMS policy.

    ``keys`` are the signed serving keys (current first); ``issued_at`` is when the
    KMS signed them; ``nonce`` is the nonce the evidence binds (None if none).
    """

    claims: Claims
    identity_public_key: bytes
    keys: list[dict[str, Any]]
    issued_at: float
    release_policy: dict[str, Any]
    models: list[dict[str, Any]]
    nonce: bytes | None
    transparency: dict[str, Any] | None = None  # bound by the evidence (its checkpoint text)


def verify_bundle(
    bundle: Any,
    policy: Policy,
    now: float,
    sources: VerifierSources | None = None,
    nonce: bytes | None = None,
) -> VerifiedBundle:
    """Check a bundle's evidence against the client's ``policy`` and its bindings.

    ``sources``: the client's own collateral configuration for sgx/tdx KMS evidence.
    With ``nonce`` the evidence must bind exactly that nonce; without, a bundle made
    for some other client's nonce verifies too (it proves nothing fresh). Raises
    AttestationRefused or BadRequest saying why the bundle is not to be trusted.
    The caller still judges the release policy, the models and the key list's age.
    """
    if not isinstance(bundle, dict) or bundle.get("version") != FORMAT:
        raise BadRequest(f"attestation bundle: unknown format (this client reads version {FORMAT})")
    release_policy = bundle.get("release_policy")
    if not isinstance(release_policy, dict):
        raise BadRequest("attestation bundle: release_policy missing")
    models = bundle.get("models")
    if not isinstance(models, list) or not all(_is_model(m) for m in models):
        raise BadRequest("attestation bundle: models must be a list of {name, version, digest}")
    echoed = bundle.get("nonce")
    if echoed is not None and not isinstance(echoed, str):
        raise BadRequest("attestation bundle: nonce must be base64url or null")
    bound = _bound_nonce(echoed, bundle.get("nonce_batch"), nonce)
    identity = unb64(bundle.get("identity_public_key"), "attestation bundle identity_public_key")
    signed: Any = bundle.get("serving_keys")
    if not isinstance(signed, dict):
        raise BadRequest("attestation bundle: serving_keys missing")
    payload = unb64(signed.get("payload"), "serving_keys payload")
    transparency = bundle.get("transparency")
    checkpoint = checkpoint_text(transparency)
    # the evidence first: it says whose identity and which key list this is
    expected = bundle_report_data(identity, release_policy, payload, models, bound, checkpoint)
    evidence = Evidence.from_json(bundle.get("evidence"))
    claims = verify_evidence(evidence, expected, policy, now, sources or VerifierSources())
    body = verify_serving_keys(identity, signed)
    issued_at = body.get("issued_at")
    if isinstance(issued_at, bool) or not isinstance(issued_at, int | float):
        raise BadRequest("signed serving keys carry no issued_at time")
    if not math.isfinite(issued_at):
        raise BadRequest("signed serving keys: issued_at is not a finite number")
    return VerifiedBundle(
        claims,
        identity,
        list(body["keys"]),
        float(issued_at),
        release_policy,
        models,
        bound,
        transparency,
    )


def _bound_nonce(echoed: str | None, batch: Any, nonce: bytes | None) -> bytes | None:
    """What the evidence binds: the client's ``nonce``, or the root of a batch of nonces
    that includes it (``nonce_batch``: its RFC 9162 inclusion proof); without a nonce,
    whatever the bundle names (someone's: no freshness)."""
    if nonce is None:
        return parse_nonce(echoed)
    bound: bytes | None = nonce
    if batch is not None:
        if not isinstance(batch, dict):
            raise BadRequest("attestation bundle: nonce_batch must be an object")
        index, size, path = (batch.get(k) for k in ("leaf_index", "tree_size", "inclusion_path"))
        if not (
            isinstance(index, int)
            and isinstance(size, int)
            and 0 < size <= MAX_BATCH
            and isinstance(path, list)
            and len(path) <= 64
            and all(isinstance(p, str) for p in path)
        ):
            raise BadRequest("attestation bundle: nonce_batch is malformed")
        bound = parse_nonce(echoed)
        hashes = [parse_nonce(p) or b"" for p in path]
        try:
            merkle.verify_inclusion(merkle.leaf_hash(nonce), index, size, hashes, bound or b"")
        except merkle.ProofError:
            bound = None
    if bound is None or echoed != encode_nonce(bound):
        raise AttestationRefused(
            "nonce", "the bundle was not made for this client's nonce (an old bundle replayed?)"
        )
    return bound


def _is_model(m: Any) -> bool:
    return (
        isinstance(m, dict)
        and isinstance(m.get("name"), str)
        and isinstance(m.get("version"), str)
        and (m.get("digest") is None or isinstance(m.get("digest"), str))
    )
