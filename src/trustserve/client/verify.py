"""What a client checks before it seals anything: the attestation bundle, against its own policy."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from trustserve.attestation import Claims, Policy, VerifierSources
from trustserve.errors import AttestationRefused
from trustserve.kms.bundle import verify_bundle


@dataclass(frozen=True)
class ClientPolicy:
    """``kms``: which KMS evidence to accept. ``worker_measurements``: if set, the KMS release
    policy may admit only workers with these measurement sets (and no simulated or debug TEE
    unless ``allow_simulated_workers``). ``sources``: where sgx/tdx collateral for the KMS
    evidence comes from (the client's collateral directory / PCCS)."""

    kms: Policy
    worker_measurements: list[dict[str, Any]] | None = None
    allow_simulated_workers: bool = False
    sources: VerifierSources = field(default_factory=VerifierSources)


@dataclass(frozen=True)
class ServingTarget:
    """A verified serving key: what requests are sealed to."""

    key_id: str
    public_key: bytes
    not_after: float
    kms_claims: Claims
    release_policy: dict[str, Any] = field(repr=False)


def check_release_policy(release: dict[str, Any], policy: ClientPolicy) -> None:
    if policy.worker_measurements is None:
        return
    if release.get("allow_simulated") and not policy.allow_simulated_workers:
        raise AttestationRefused("release_policy", "the KMS would release keys to simulated TEEs")
    if release.get("allow_debug"):
        raise AttestationRefused("release_policy", "the KMS would release keys to debug TEEs")
    for admitted in release.get("measurements", []):
        if admitted not in policy.worker_measurements:
            raise AttestationRefused(
                "release_policy", f"the KMS admits workers this client does not accept: {admitted}"
            )


def verify(bundle: Any, policy: ClientPolicy, now: float | None = None) -> ServingTarget:
    """The current serving key if the bundle is trusted; else AttestationRefused/BadRequest."""
    now = time.time() if now is None else now
    claims, keys, release = verify_bundle(bundle, policy.kms, now, policy.sources)
    check_release_policy(release, policy)
    usable = [k for k in keys if float(k["not_after"]) > now]
    if not usable:
        raise AttestationRefused("serving_keys", "every serving key in the bundle has expired")
    key = usable[0]
    return ServingTarget(
        str(key["key_id"]),
        base64.b64decode(key["public_key"]),
        float(key["not_after"]),
        claims,
        release,
    )
