"""The attestation bundle: what a client checks before it seals anything to the serving key.

``{"version": 1, "identity_public_key": b64 (Ed25519, raw), "evidence": {...},
"serving_keys": {"payload", "signature"}, "release_policy": {...}}``

* ``evidence`` is the KMS's own evidence; its 64-byte report data is
  ``SHA-512("trustserve-kms-bundle-v1\\0" || identity public key ||
  SHA-256(canonical JSON of release_policy))``, so it binds the identity key
  and the policy that decides which workers get the serving key.
* ``serving_keys`` is the canonical JSON ``{"issued_at", "keys": [{key_id, suite,
  public_key, not_after}]}`` (current first), signed by the identity key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from trustserve.attestation import Claims, Evidence, Policy, VerifierSources, verify_evidence
from trustserve.crypto.keys import verify_serving_keys
from trustserve.encoding import b64
from trustserve.errors import BadRequest

_DOMAIN = b"trustserve-kms-bundle-v1\0"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def bundle_report_data(identity_public_key: bytes, release_policy: dict[str, Any]) -> bytes:
    digest = hashlib.sha256(canonical(release_policy)).digest()
    return hashlib.sha512(_DOMAIN + identity_public_key + digest).digest()


def make_bundle(
    identity_public_key: bytes,
    evidence: Evidence,
    signed_serving_keys: dict[str, str],
    release_policy: dict[str, Any],
) -> dict[str, Any]:
    return {
        "version": 1,
        "identity_public_key": b64(identity_public_key),
        "evidence": evidence.to_json(),
        "serving_keys": signed_serving_keys,
        "release_policy": release_policy,
    }


def verify_bundle(
    bundle: Any, policy: Policy, now: float, sources: VerifierSources | None = None
) -> tuple[Claims, list[dict[str, Any]], dict[str, Any]]:
    """Check a bundle against the client's ``policy``.

    Returns the KMS claims, the serving keys (current first, as signed) and the
    KMS release policy (for the caller to inspect). ``sources``: the client's own
    collateral configuration for sgx/tdx KMS evidence. Raises AttestationRefused
    or BadRequest saying why the bundle is not to be trusted.
    """
    if not isinstance(bundle, dict) or bundle.get("version") != 1:
        raise BadRequest("attestation bundle: unknown format")
    release_policy = bundle.get("release_policy")
    if not isinstance(release_policy, dict):
        raise BadRequest("attestation bundle: release_policy missing")
    try:
        identity = base64.b64decode(bundle["identity_public_key"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise BadRequest("attestation bundle: identity_public_key malformed") from None
    expected = bundle_report_data(identity, release_policy)
    evidence = Evidence.from_json(bundle.get("evidence"))
    claims = verify_evidence(evidence, expected, policy, now, sources or VerifierSources())
    body = verify_serving_keys(identity, bundle.get("serving_keys"))
    return claims, list(body["keys"]), release_policy
